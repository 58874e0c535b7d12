"""Rule open_set: the open-set answers and the calibration of one seed's model, measured."""

import torch

from bertgeom.io import file_directory, job_log
from bertgeom.openset_stage import evaluate_open_set
from bertgeom.train import MODEL_FILES

smk = snakemake  # noqa: F821 (injected by Snakemake)
with job_log(smk.log[0], outputs=smk.output):
    torch.set_num_threads(smk.threads)
    evaluate_open_set(
        model_dir=file_directory({"model": smk.input.model, "config": smk.input.config}, MODEL_FILES),
        open_set_path=smk.input.open_set,
        tensors_path=smk.input.tensors,
        test=smk.input.test,
        evaluation=smk.input.evaluation,
        calibration=smk.input.calibration,
        outputs=dict(smk.output.items()),
        batch_size=smk.params.train_run.eval_batch_size,
        device=smk.params.train_run.device,
    )
