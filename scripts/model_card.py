"""Rule model_card: README.md of one seed's model directory."""

from pathlib import Path

from bertgeom.handoff import write_model_card
from bertgeom.io import job_log

smk = snakemake  # noqa: F821 (injected by Snakemake)
with job_log(smk.log[0], outputs=smk.output):
    write_model_card(
        training_info=smk.input.training_info,
        metrics=smk.input.metrics,
        out=smk.output[0],
        open_set=smk.input.open_set,
        open_set_summary=smk.input.summary,
        name=str(Path(smk.output[0]).parent),  # results/models/seed{seed}: the card's commands run from the workdir
    )
