"""Rule dump_activations: one seed's model over the splits of config activations.splits."""

import torch

from bertgeom.activations import OUTPUT_FILES, dump
from bertgeom.io import file_directory, job_log
from bertgeom.train import MODEL_FILES

smk = snakemake  # noqa: F821 (injected by Snakemake)
with job_log(smk.log[0], outputs=smk.output):
    torch.set_num_threads(max(1, smk.threads))
    settings = {**smk.params.activations, **vars(smk.params.activations_run)}
    dump(
        model_dir=file_directory({"model": smk.input.model, "config": smk.input.model_config}, MODEL_FILES),
        token_files=dict(zip(settings["splits"], smk.input.tokens, strict=True)),
        outputs={name: smk.output[name] for name in OUTPUT_FILES},
        classes=smk.params.classes,
        settings=settings,
        top_keys=smk.params.top_keys,
        classifier=smk.params.classifier,
    )
