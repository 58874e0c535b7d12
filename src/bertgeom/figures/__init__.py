"""Stage: figures. One function per figure id (the catalogue: docs/figures.md), one theme (theme.py).

Each `make_<id>(input, params)` reads the stage tables named in its rule's input and returns a
matplotlib Figure; `run(snakemake)` is the entry point of scripts/figure.py.
"""

from __future__ import annotations

import logging

from bertgeom.figures import attention, classification, cone, data, directionality, distribution
from bertgeom.figures.theme import apply_theme, save
from bertgeom.io import job_log, write_text

FIGURES = {
    **data.FIGURES,
    **classification.FIGURES,
    **cone.FIGURES,
    **distribution.FIGURES,
    **attention.FIGURES,
    **directionality.FIGURES,
}


def note_synthetic(fig, source: str) -> None:
    """Label figures made from synthetic genomes as such (DESIGN.md: labelled everywhere it appears)."""
    if source == "synthetic":
        fig.text(0.995, 0.002, "synthetic data", ha="right", va="bottom", fontsize="x-small", color="0.45")


def run(snakemake) -> None:
    """Draw the figure `snakemake.params.figure` and write output.png and output.pdf."""
    with job_log(snakemake.log[0]) as log:
        logging.getLogger("fontTools").setLevel(logging.WARNING)  # PDF font subsetting chatter
        figure_id = snakemake.params.figure
        if figure_id not in FIGURES:
            raise ValueError(f"params.figure: unknown figure id {figure_id!r}; known: {sorted(FIGURES)}")
        options = snakemake.config["figures"]
        apply_theme(options["context"])
        fig = FIGURES[figure_id](snakemake.input, snakemake.params)
        note_synthetic(fig, snakemake.config["data"]["source"])
        save(fig, snakemake.output.png, snakemake.output.pdf, dpi=options["dpi"])
        log.info("figure %s -> %s, %s", figure_id, snakemake.output.png, snakemake.output.pdf)


def run_metrics_table(snakemake) -> None:
    """The report's metrics table: TSV and a standalone HTML page, from every seed's metrics.json."""
    with job_log(snakemake.log[0]):
        metrics = classification.read_metrics(snakemake.input)
        table = classification.metrics_summary(metrics, list(snakemake.params.seeds), snakemake.params.ci)
        write_text(snakemake.output.tsv, table.to_csv(sep="\t", index=False, float_format="%.6g"))
        write_text(snakemake.output.html, classification.metrics_html(table, snakemake.params.ci))
