"""Rule match_heads: every seed's heads matched, layer by layer, to the reference seed's."""

from bertgeom.io import job_log
from bertgeom.stats.matching import write_head_matching

smk = snakemake  # noqa: F821 (injected by Snakemake)
with job_log(smk.log[0], outputs=smk.output):
    write_head_matching(paths=list(smk.input), out=smk.output[0], reference_seed=smk.params.reference_seed)
