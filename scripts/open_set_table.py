"""Rule open_set_table: the report's table of the open set per type of genome across seeds (TSV and HTML)."""

from bertgeom.figures.openset import write_open_set_table
from bertgeom.io import job_log

smk = snakemake  # noqa: F821 (injected by Snakemake)
with job_log(smk.log[0], outputs=smk.output):
    write_open_set_table(
        summaries=list(smk.input.summaries),
        seeds=smk.params.seeds,
        tsv=smk.output.tsv,
        html=smk.output.html,
    )
