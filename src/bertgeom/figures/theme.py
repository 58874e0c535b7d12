"""The one look of every figure: seaborn theme, colour-blind-safe palettes, atomic PNG + PDF save.

Palettes:
- classes: Okabe & Ito (2008), the 8 colours distinguishable under the common colour-vision
  deficiencies (black last); beyond 8 classes seaborn's "colorblind" palette, then "husl".
- categories such as gates: Paul Tol's "muted" scheme (colour-blind safe), grey for "none".
- seeds / variants / measures: seaborn "colorblind".
- continuous: "viridis" (sequential, perceptually uniform), "RdBu_r" (diverging around 0).
"""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # figure rules run headless

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import seaborn as sns  # noqa: E402

from bertgeom.io import atomic_path, package_versions  # noqa: E402

GREY = "#BBBBBB"
OKABE_ITO = ["#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7", "#000000"]
TOL_MUTED = ["#CC6677", "#332288", "#DDCC77", "#117733", "#88CCEE", "#882255", "#44AA99", "#999933", "#AA4499"]
MARKERS = ["o", "s", "^", "v", "D", "P", "X", "*", "h", "<", ">"]  # a second cue beside colour
SEQUENTIAL = "viridis"
DIVERGING = "RdBu_r"
WIDTH = 7.0  # inches: a full-width figure in a two-column paper layout


def apply_theme(context: str = "paper") -> None:
    """Set the seaborn theme used by every figure (call once per process)."""
    sns.set_theme(
        context=context,
        style="whitegrid",
        palette=sns.color_palette("colorblind"),
        rc={
            "figure.dpi": 100,
            "axes.titlesize": "medium",
            "axes.titleweight": "bold",
            "axes.spines.top": False,
            "axes.spines.right": False,
            "legend.frameon": False,
            "image.cmap": SEQUENTIAL,
            "pdf.fonttype": 42,  # embed TrueType: text stays selectable and editable in the PDF
            "svg.fonttype": "none",
            "savefig.bbox": "tight",
            "figure.constrained_layout.use": True,  # room for colour bars, suptitles, outside legends
        },
    )


def class_palette(classes: list[str]) -> dict[str, str]:
    """class name -> colour, stable in label order."""
    n = len(classes)
    if n <= len(OKABE_ITO):
        colours = OKABE_ITO[:n]
    elif n <= 10:
        colours = sns.color_palette("colorblind", n).as_hex()
    else:
        colours = sns.color_palette("husl", n).as_hex()
    return dict(zip(classes, colours))


def category_palette(categories: list[str], neutral: str | None = None) -> dict[str, str]:
    """category -> colour from Paul Tol's muted scheme (up to 9); `neutral` (e.g. "none") is grey."""
    named = [c for c in categories if c != neutral]
    if len(named) > len(TOL_MUTED):
        raise ValueError(f"category_palette: {len(named)} categories, at most {len(TOL_MUTED)} supported")
    palette = dict(zip(named, TOL_MUTED))
    if neutral is not None:
        palette[neutral] = GREY
    return palette


def seed_palette(seeds) -> dict:
    """seed -> colour (seaborn colorblind)."""
    seeds = list(seeds)
    return dict(zip(seeds, sns.color_palette("colorblind", max(len(seeds), 1)).as_hex()))


def save(fig: plt.Figure, png: str | os.PathLike, pdf: str | os.PathLike, dpi: int = 300) -> None:
    """Write `fig` as PNG (at `dpi`) and PDF, each atomically, then close it.

    Metadata carry no dates so that a rerun with the same inputs writes the same PDF.
    """
    software = f"bertgeom {package_versions().get('bertgeom', '?')}, matplotlib {matplotlib.__version__}"
    for path, fmt, meta in (
        (png, "png", {"Software": software}),
        (pdf, "pdf", {"Creator": software, "CreationDate": None}),
    ):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path, f".{fmt}") as tmp:
            fig.savefig(tmp, format=fmt, dpi=dpi, metadata=meta)
    plt.close(fig)


def legend_outside(ax: plt.Axes, **kwargs) -> None:
    """Move the axes' legend to the right of the data, outside the plotting area."""
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0, **kwargs)


def head_dots(ax: plt.Axes, per_head, label: str) -> None:
    """One dot per head beside its layer, from across-seed rows (a DataFrame: layer, head, mean,
    ci_low, ci_high), with the head's interval over seeds as a whisker (none with one seed)."""
    jitter = (per_head["head"] - per_head["head"].max() / 2) / max(per_head["head"].max(), 1) * 0.3
    x = (per_head["layer"] + jitter).to_numpy()
    spread = per_head[["ci_low", "ci_high"]].notna().all(axis=1).to_numpy()
    if spread.any():
        mean = per_head["mean"].to_numpy()[spread]
        whisker = [mean - per_head["ci_low"].to_numpy()[spread], per_head["ci_high"].to_numpy()[spread] - mean]
        ax.errorbar(x[spread], mean, yerr=whisker, fmt="none", ecolor="#332288", elinewidth=0.5, alpha=0.5, zorder=2)
    ax.scatter(x, per_head["mean"], s=10, color="#88CCEE", edgecolor="#332288", linewidth=0.3, label=label, zorder=3)
