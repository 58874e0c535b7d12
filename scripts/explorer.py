"""Rule explorer: the self-contained attention and geometry explorer page."""

from bertgeom.explorer_page import write_explorer
from bertgeom.io import job_log

smk = snakemake  # noqa: F821 (injected by Snakemake)
with job_log(smk.log[0], outputs=smk.output):
    write_explorer(
        token_map=smk.input.token_map,
        output=smk.output[0],
        seeds=smk.params.seeds,
        checkpoints=smk.params.checkpoints,
        example_seed=smk.params.example_seed,
        variants=smk.input.variants,
        top_k=smk.params.top_k,
    )
