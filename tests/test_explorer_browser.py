"""The explorer page of the tiny run in a real headless browser (Debian's chromium driven by
Playwright, network off): no console error, the scripted choices show the chosen head's matrix.

The screenshot is kept as a test artefact: <pytest tmp dir>/test_explorer_page0/explorer.png
(its path is printed; `pytest -s` shows it).
"""

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from bertgeom.checkpoints import CHECKPOINTS
from bertgeom.explorer import POOL, dequantise, pool_matrix, quantise
from bertgeom.explorer_page import write_explorer
from bertgeom.explorer_run import Run, explore

CHROMIUM = Path("/usr/bin/chromium")  # Debian's package (.ci/run installs it); no browser download
MAX_BYTES = 30 * 10**6


@pytest.fixture(scope="module")
def page_path(tiny_run):
    path = tiny_run / "results" / "explorer" / "index.html"
    assert path.exists(), "rule explorer (in rule all) wrote no page"
    return path


def test_page_is_self_contained_and_small(page_path):
    text = page_path.read_text()
    assert len(text.encode()) < MAX_BYTES
    assert 'src="http' not in text and "<link" not in text  # plotly.js and the data are inline
    assert '<script type="application/json" id="explorer-data">' in text


def _page_data(path) -> dict:
    text = Path(path).read_text()
    return json.loads(re.search(r'<script type="application/json" id="explorer-data">(.*?)</script>', text, re.S)[1])


def test_full_resolution_where_the_page_says(page_path):
    """Class averages of the example seed at every checkpoint and its sequences at the last analysed
    checkpoint at full resolution (every position); every other matrix pooled by POOL; a sequence is
    stored against its class average whenever both are pooled alike."""
    data = _page_data(page_path)
    assert data["example_seed"] == "0" and data["full_checkpoint"] == "finetuned" and data["pool"] == POOL
    seen = set()
    for checkpoint in CHECKPOINTS:
        for seed, view in data["views"][checkpoint].items():
            factors = {s["id"]: int(s["axis"].split("/")[1]) for s in view["sources"]}
            for source in view["sources"]:
                n, factor = (int(x) for x in source["axis"].split("/"))
                full = seed == "0" and (source["id"].startswith("class:") or checkpoint == "finetuned")
                assert factor == (1 if full else POOL), (checkpoint, seed, source["id"])
                assert len(data["axes"][source["axis"]]["labels"]) == -(-n // factor)
                if source["base"] is not None:
                    assert source["id"].startswith("seq:") and source["base"].startswith("class:")
                    assert factors[source["base"]] == factor
                seen.add((factor, source["base"] is not None))
    assert seen == {(1, False), (1, True), (POOL, False), (POOL, True)}


@pytest.fixture(scope="module")
def page_with_mlm(tiny_run, tmp_path_factory, root):
    """The tiny run's page listing every checkpoint, from a copy of its results without the `mlm`
    checkpoint's tables: `mlm` is not analysed there."""
    path = tmp_path_factory.mktemp("explorer") / "index.html"
    results = path.parent / "results"
    shutil.copytree(tiny_run / "results", results, ignore=shutil.ignore_patterns("mlm", "models", "pretrained"))
    write_explorer(token_map=results / "tokens" / "token_map.parquet", output=path, seeds=[0, 1],
                   checkpoints=CHECKPOINTS, example_seed=0, variants=root / "resources" / "variants.yaml", top_k=5)
    return path


def test_explore_returns_figures_of_the_tiny_run(tiny_run):
    figures = explore(tiny_run / "results", seeds=[0, 1])
    assert ("finetuned", 0, "gate") in figures["head_grid"]
    assert ("mlm", 0, "gate") in figures["head_grid"]  # config/tiny.yaml: init mlm, all three checkpoints
    key = next(k for k in figures["attention"] if k[0] == "finetuned" and k[1] == 0 and k[2].startswith("seq:"))
    matrix = figures["attention"][key]
    n = len(matrix.data[0].x)
    assert len(matrix.data[0].z) == n and matrix.data[0].x[0].endswith("[CLS]")
    assert f"head {key[4]}" in matrix.layout.title.text
    assert len(figures["top_keys"][key]) == 5


def _click_cell(page, div, layer, head):
    """A real mouse click on the centre of one heatmap cell of a Plotly graph."""
    x, y = page.evaluate(
        """([div, layer, head]) => {
            const gd = document.getElementById(div), box = gd.getBoundingClientRect(), full = gd._fullLayout;
            return [box.left + full._size.l + full.xaxis.l2p(head), box.top + full._size.t + full.yaxis.l2p(layer)];
        }""",
        [div, layer, head],
    )
    page.mouse.click(x, y)


def test_choose_checkpoint_seed_sequence_and_head(page_path, page_with_mlm, tiny_run, tmp_path):
    playwright = pytest.importorskip("playwright.sync_api")
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} missing: apt-get install chromium (.ci/run does)")
    errors, requests = [], []
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM))
        context = browser.new_context(offline=True, viewport={"width": 1400, "height": 1000})
        context.route("**/*", lambda route: (requests.append(route.request.url), route.continue_()))
        page = context.new_page()
        page.on("console", lambda m: errors.append(m.text) if m.type in ("error", "warning") else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(page_with_mlm.as_uri())
        page.wait_for_function("document.getElementById('matrix').dataset.head !== undefined")
        page.select_option("#checkpoint", "mlm")  # not analysed: an explained empty state
        assert page.is_visible("#empty") and not page.is_visible("#grid")
        assert "checkpoint mlm" in page.inner_text("#empty")

        page.goto(page_path.as_uri())  # the page of rule explorer
        page.wait_for_function("document.getElementById('matrix').dataset.head !== undefined")
        page.select_option("#checkpoint", "mlm")  # class averages over every sequence: each has a base
        page.select_option("#seed", "1")
        page.wait_for_function("document.getElementById('views').dataset.seed === '1'")
        sequence = page.eval_on_selector("#source", "s => [...s.options].find(o => o.value.startsWith('seq:')).value")
        page.select_option("#source", sequence)
        _click_cell(page, "grid", layer=1, head=1)
        page.wait_for_function("(s) => document.getElementById('matrix').dataset.head === '1' "
                               "&& document.getElementById('matrix').dataset.source === s", arg=sequence)  # fmt: skip
        assert page.get_attribute("#grid", "data-selected") == "1,1"
        shown = page.evaluate("""() => { const gd = document.getElementById('matrix');
            return {title: gd.layout.title.text, rows: gd.data[0].z.length, n: Number(gd.dataset.n),
                    layer: gd.dataset.layer, cells: gd.querySelectorAll('.heatmaplayer image').length}; }""")
        assert shown["title"].startswith("Layer 1, head 1: sequence " + sequence[4:])
        assert "seed 1" in shown["title"] and "checkpoint mlm" in shown["title"]
        assert shown["layer"] == "1" and shown["rows"] == shown["n"] > 10 and shown["cells"] == 1
        assert page.locator("#topkeys tr").count() == 6  # header + 5 keys
        # the page decoded (inflate, add the class average's codes) what Python quantised
        shown_z = np.array(page.evaluate("() => document.getElementById('matrix').data[0].z"))
        data = _page_data(page_path)
        levels = data["levels"]
        assert next(s for s in data["views"]["mlm"]["1"]["sources"] if s["id"] == sequence)["base"]
        run = Run(tiny_run / "results", [0, 1], list(CHECKPOINTS), 0)
        source = run.sources("mlm", 1)[sequence]
        expected = dequantise(quantise(pool_matrix(source.matrices[(1, 1)], POOL), levels), levels)
        assert np.allclose(shown_z, np.log10(expected), atol=1e-9)

        box = page.locator("#matrix .nsewdrag").first.bounding_box()  # hover: query, key, weight
        page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        page.wait_for_selector("#matrix .hovertext")
        hover = page.text_content("#matrix .hovertext")  # SVG: no innerText
        assert "query #" in hover and "key #" in hover and "weight" in hover

        screenshot = tmp_path / "explorer.png"
        page.screenshot(path=str(screenshot), full_page=True)
        print(f"screenshot: {screenshot}")
        browser.close()
    assert screenshot.stat().st_size > 10_000
    assert errors == []
    assert all(url.startswith("file://") for url in requests), requests


def test_gallery_screenshot_of_the_page(page_path, tmp_path):
    pytest.importorskip("playwright.sync_api")
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} missing: apt-get install chromium (.ci/run does)")
    from PIL import Image

    from bertgeom.figures.gallery import explorer_screenshot

    target = tmp_path / "explorer.png"
    width, height = explorer_screenshot(page_path, target, width=600, chromium=str(CHROMIUM))
    with Image.open(target) as image:
        assert image.size == (width, height) and width == 600 and height > 300
        assert len(image.getcolors(256) or []) > 8  # drawn figures, not a blank page
    assert [p.name for p in tmp_path.iterdir()] == ["explorer.png"]  # the full-size shot is removed
