"""Rule gate_counts: heads per gate label, per checkpoint and seed."""

from bertgeom.io import job_log
from bertgeom.stats.gate_counts import write_gate_counts

smk = snakemake  # noqa: F821 (injected by Snakemake)
with job_log(smk.log[0], outputs=smk.output):
    write_gate_counts(
        paths=list(smk.input.gates),
        checkpoints=smk.params.checkpoints,
        seeds=smk.params.seeds,
        out=smk.output[0],
    )
