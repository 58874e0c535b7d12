"""The README gallery: small copies of the main figures of a run, under docs/img/.

    python -m bertgeom.figures.gallery results/figures docs/img [--explorer results/explorer/index.html]

Each PNG is scaled down to `width` pixels (Lanczos), reduced to a 256-colour palette and written
atomically; the full-resolution
PNG and PDF stay in results/figures/. --explorer adds `explorer.png`: a screenshot of the explorer page
as it opens (headless Debian `chromium` driven by Playwright, network off).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from PIL import Image

from bertgeom.io import atomic_path

GALLERY = [
    "data_qc",
    "training_curves",
    "confusion_matrix",
    "cone_stream",
    "pca_pareto",
    "embedding_tsne",
    "probe_silhouette",
    "gate_grid",
    "k90_violins",
    "attention_gallery",
    "domain_attention",
    "directionality_index",
]


def thumbnail(source: str | os.PathLike, target: str | os.PathLike, width: int = 900) -> tuple[int, int]:
    """Write `source` PNG scaled to at most `width` pixels wide as `target`; returns the new size."""
    with Image.open(source) as image:
        image = image.convert("RGB")
        if image.width > width:
            image = image.resize((width, round(image.height * width / image.width)), Image.Resampling.LANCZOS)
        # 256 colours are plenty for a plot and divide the file size by about 3 (README stays light).
        small = image.quantize(colors=256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
        with atomic_path(target, ".png") as tmp:
            small.save(tmp, format="PNG", optimize=True)
        return image.size


def make_gallery(figures_dir: str | os.PathLike, out_dir: str | os.PathLike, width: int = 900) -> list[Path]:
    """Thumbnails of every GALLERY figure found in `figures_dir`; a missing figure is an error."""
    figures_dir, out_dir = Path(figures_dir), Path(out_dir)
    missing = [f for f in GALLERY if not (figures_dir / f"{f}.png").exists()]
    if missing:
        raise FileNotFoundError(f"{figures_dir}: missing figure(s) {missing} (run the workflow first)")
    written = []
    for figure_id in GALLERY:
        target = out_dir / f"{figure_id}.png"
        thumbnail(figures_dir / f"{figure_id}.png", target, width)
        written.append(target)
    return written


def explorer_screenshot(page: str | os.PathLike, target: str | os.PathLike, width: int = 900,
                        chromium: str = "/usr/bin/chromium") -> tuple[int, int]:
    """A screenshot of the explorer page once its matrix is drawn, as a `width`-pixel thumbnail."""
    from playwright.sync_api import sync_playwright  # a test dependency (requirements.lock), only here

    shot = Path(target).with_suffix(".full.png")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium)
        view = browser.new_context(offline=True, viewport={"width": 1400, "height": 1300}).new_page()
        view.goto(Path(page).resolve().as_uri())
        view.wait_for_function("document.getElementById('matrix').dataset.head !== undefined", timeout=120_000)
        view.screenshot(path=str(shot))
        browser.close()
    try:
        return thumbnail(shot, target, width)
    finally:
        shot.unlink()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("figures_dir", nargs="?", default="results/figures")
    parser.add_argument("out_dir", nargs="?", default="docs/img")
    parser.add_argument("--width", type=int, default=900, help="largest width in pixels (default 900)")
    parser.add_argument("--explorer", help="the explorer page to add as explorer.png (results/explorer/index.html)")
    args = parser.parse_args(argv)
    for path in make_gallery(args.figures_dir, args.out_dir, args.width):
        print(path)
    if args.explorer:
        explorer_screenshot(args.explorer, Path(args.out_dir) / "explorer.png", args.width)
        print(Path(args.out_dir) / "explorer.png")


if __name__ == "__main__":
    main()
