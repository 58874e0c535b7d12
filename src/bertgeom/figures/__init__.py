"""Stage: figures. One function per figure id (the catalogue: docs/figures.md), one theme (theme.py).

Each `make_<id>(input, params)` reads the stage tables named in its rule's input and returns a
matplotlib Figure; `draw_figure` is what scripts/figure.py calls.
"""

from __future__ import annotations

import logging
from types import SimpleNamespace

from bertgeom.figures import attention, classification, cone, data, directionality, distribution, openset
from bertgeom.figures.theme import apply_theme, save
from bertgeom.io import write_text

log = logging.getLogger(__name__)

FIGURES = {
    **data.FIGURES,
    **classification.FIGURES,
    **cone.FIGURES,
    **distribution.FIGURES,
    **attention.FIGURES,
    **directionality.FIGURES,
    **openset.FIGURES,
}


def note_synthetic(fig, source: str) -> None:
    """Label figures made from synthetic genomes as such (DESIGN.md: labelled everywhere it appears)."""
    if source == "synthetic":
        fig.text(0.995, 0.002, "synthetic data", ha="right", va="bottom", fontsize="x-small", color="0.45")


def draw_figure(figure_id: str, inputs: dict, options: dict, png: str, pdf: str, dpi: int, context: str, source: str) -> None:
    """Draw the figure `figure_id` from `inputs` ({name: path or paths}) and `options` (the rule's
    figure-specific params) and write png and pdf; `source` (data.source) labels synthetic data."""
    logging.getLogger("fontTools").setLevel(logging.WARNING)  # PDF font subsetting chatter
    if figure_id not in FIGURES:
        raise ValueError(f"params.figure: unknown figure id {figure_id!r}; known: {sorted(FIGURES)}")
    apply_theme(context)
    fig = FIGURES[figure_id](SimpleNamespace(**inputs), SimpleNamespace(**options))
    note_synthetic(fig, source)
    save(fig, png, pdf, dpi=dpi)
    log.info("figure %s -> %s, %s", figure_id, png, pdf)


def write_metrics_table(metrics_paths: list[str], tsv: str, html: str, seeds: list[int], ci: float) -> None:
    """The report's metrics table: TSV and a standalone HTML page, from every seed's metrics.json."""
    metrics = classification.read_metrics(metrics_paths)
    table = classification.metrics_summary(metrics, list(seeds), ci)
    write_text(tsv, table.to_csv(sep="\t", index=False, float_format="%.6g"))
    write_text(html, classification.metrics_html(table, ci))
