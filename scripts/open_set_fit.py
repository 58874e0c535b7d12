"""Rule open_set_fit: the open-set threshold and the temperature of one seed's model."""

import torch

from bertgeom.io import file_directory, job_log
from bertgeom.openset_stage import fit_open_set
from bertgeom.train import MODEL_FILES

smk = snakemake  # noqa: F821 (injected by Snakemake)
with job_log(smk.log[0], outputs=smk.output):
    torch.set_num_threads(smk.threads)
    fit_open_set(
        model_dir=file_directory({"model": smk.input.model, "config": smk.input.config}, MODEL_FILES),
        train=smk.input.train,
        val=smk.input.val,
        threshold=smk.input.threshold,
        fresh=smk.input.fresh,
        calibration=smk.input.calibration,
        open_set_out=smk.output.open_set,
        tensors_out=smk.output.tensors,
        max_false_unassigned=smk.params.max_false_unassigned,
        batch_size=smk.params.train_run.eval_batch_size,
        device=smk.params.train_run.device,
    )
