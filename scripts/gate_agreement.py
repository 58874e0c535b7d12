"""Rule gate_agreement: agreement of the gate labels across seeds and against the untrained model."""

from bertgeom.io import job_log
from bertgeom.stats.matching import write_gate_agreement

smk = snakemake  # noqa: F821 (injected by Snakemake)
with job_log(smk.log[0], outputs=smk.output):
    write_gate_agreement(
        paths=list(smk.input.gates),
        matching=smk.input.matching,
        untrained=smk.input.untrained,
        out=smk.output[0],
    )
