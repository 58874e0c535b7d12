"""Rule cone_index: the cone index and the anisotropy measures beside it, for one seed."""

from bertgeom.io import job_log
from bertgeom.stats.cone import write_cone_index

smk = snakemake  # noqa: F821 (injected by Snakemake)
with job_log(smk.log[0], outputs=smk.output):
    write_cone_index(
        summary=smk.input.summary,
        heads=smk.input.heads,
        attention_summary=smk.input.attention_summary,
        tokens=smk.input.tokens,
        out=smk.output[0],
        classes=smk.params.classes,
        seed=int(smk.wildcards.seed),
        outlier_sigma=smk.params.outlier_sigma,
        batch_rows=smk.params.stats_run.batch_rows,
    )
