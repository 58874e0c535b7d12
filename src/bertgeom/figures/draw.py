"""Draw one registered figure (registry.py) in the theme and write its PNG and PDF."""

from __future__ import annotations

import logging
from types import SimpleNamespace

from bertgeom.figures.registry import drawing_function
from bertgeom.figures.theme import apply_theme, save

log = logging.getLogger(__name__)


def note_synthetic(fig, source: str) -> None:
    """Label figures made from synthetic genomes as such (DESIGN.md: labelled everywhere it appears)."""
    if source == "synthetic":
        fig.text(0.995, 0.002, "synthetic data", ha="right", va="bottom", fontsize="x-small", color="0.45")


def draw_figure(figure_id: str, inputs: dict, options: dict, png: str, pdf: str, dpi: int, context: str, source: str) -> None:
    """Draw the figure `figure_id` from `inputs` ({name: path or paths}) and `options` (the rule's
    figure-specific params) and write png and pdf; `source` (data.source) labels synthetic data."""
    logging.getLogger("fontTools").setLevel(logging.WARNING)  # PDF font subsetting chatter
    draw = drawing_function(figure_id)
    apply_theme(context)
    fig = draw(SimpleNamespace(**inputs), SimpleNamespace(**options))
    note_synthetic(fig, source)
    save(fig, png, pdf, dpi=dpi)
    log.info("figure %s -> %s, %s", figure_id, png, pdf)
