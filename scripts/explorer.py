"""Rule explorer: the self-contained attention and geometry explorer page."""

from bertgeom.explorer_page import write_explorer
from bertgeom.io import job_log

smk = snakemake  # noqa: F821 (injected by Snakemake)
with job_log(smk.log[0], outputs=smk.output):
    # params: seeds, checkpoints, example_seed, top_k (rules/common.smk, explorer_params)
    write_explorer(token_map=smk.input.token_map, variants=smk.input.variants, output=smk.output[0],
                   **dict(smk.params.items()))
