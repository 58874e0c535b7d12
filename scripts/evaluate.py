"""Rule evaluate: class probabilities and metrics of one seed's model on the test split."""

import torch

from bertgeom.evaluate import evaluate
from bertgeom.io import file_directory, job_log
from bertgeom.train import MODEL_FILES

smk = snakemake  # noqa: F821 (injected by Snakemake)
with job_log(smk.log[0], outputs=smk.output):
    torch.set_num_threads(smk.threads)
    evaluate(
        model_dir=file_directory({"model": smk.input.model, "config": smk.input.config}, MODEL_FILES),
        test=smk.input.test,
        predictions_out=smk.output.predictions,
        metrics_out=smk.output.metrics,
        classes=smk.params.classes,
        batch_size=smk.params.train_run.eval_batch_size,
        device=smk.params.train_run.device,
    )
