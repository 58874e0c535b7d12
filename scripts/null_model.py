"""Rule null_model: an untrained model of the trained models' architecture on the subset sequences."""

from bertgeom.io import job_log
from bertgeom.stats.null_model import write_null_model

smk = snakemake  # noqa: F821 (injected by Snakemake)
with job_log(smk.log[0], outputs=smk.output):
    write_null_model(
        model_config=smk.input.model_config,
        token_files=list(smk.input.tokens),
        outputs=dict(smk.output.items()),
        patterns=smk.params.patterns,
        subset_per_class=smk.params.subset_per_class,
    )
