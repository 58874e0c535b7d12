"""Rule open_set: the open-set answers and the calibration of one seed's model, measured."""

import torch

from bertgeom.io import file_directory, job_log
from bertgeom.openset_stage import open_set_evaluation
from bertgeom.train import MODEL_FILES

smk = snakemake  # noqa: F821 (injected by Snakemake)
with job_log(smk.log[0]):
    torch.set_num_threads(smk.threads)
    open_set_evaluation(
        model_dir=file_directory({"model": smk.input.model, "config": smk.input.config}, MODEL_FILES),
        open_set_path=smk.input.open_set,
        tensors_path=smk.input.tensors,
        test=smk.input.test,
        evaluation=smk.input.evaluation,
        calibration=smk.input.calibration,
        scores_out=smk.output.scores,
        summary_out=smk.output.summary,
        calibration_out=smk.output.calibration,
        batch_size=smk.params.train_run.eval_batch_size,
        device=smk.params.train_run.device,
    )
