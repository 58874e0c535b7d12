"""Rule metrics_table: the report's table of test metrics across seeds (TSV and HTML)."""

from bertgeom.figures.classification import write_metrics_table
from bertgeom.io import job_log

smk = snakemake  # noqa: F821 (injected by Snakemake)
with job_log(smk.log[0], outputs=smk.output):
    write_metrics_table(
        metrics_paths=list(smk.input.metrics),
        tsv=smk.output.tsv,
        html=smk.output.html,
        seeds=smk.params.seeds,
        ci=smk.params.ci,
    )
