"""Rule aggregate_seeds: one per-seed stats table -> mean and t interval across seeds."""

from bertgeom.io import job_log
from bertgeom.stats.aggregate import write_aggregate

smk = snakemake  # noqa: F821 (injected by Snakemake)
with job_log(smk.log[0], outputs=smk.output):
    write_aggregate(
        paths=list(smk.input.tables),
        out=smk.output[0],
        name=smk.wildcards.name,
        ci=smk.params.ci,
        matching=smk.input.matching[0] if smk.input.matching else None,
    )
