"""Rule extract_spike: spike.parquet and qc.tsv from genomes.fasta."""

from bertgeom.data.spike import extract_spike
from bertgeom.io import job_log

smk = snakemake  # noqa: F821 (injected by Snakemake)
with job_log(smk.log[0], outputs=smk.output):
    extract_spike(
        genomes=smk.input.genomes,
        manifest=smk.input.manifest,
        reference=smk.input.reference,
        spike_out=smk.output.spike,
        qc_out=smk.output.qc,
        classes=smk.params.classes,
        qc=smk.params.qc,
        threads=smk.threads,
    )
