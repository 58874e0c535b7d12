"""Rule download: genomes.fasta and manifest.tsv from config data.source."""

from bertgeom.data.download import download
from bertgeom.io import job_log

smk = snakemake  # noqa: F821 (injected by Snakemake)
with job_log(smk.log[0], outputs=smk.output):
    download(
        fasta_out=smk.output.fasta,
        manifest_out=smk.output.manifest,
        reference=smk.input.reference,
        variants=smk.input.variants,
        classes=smk.params.classes,
        data=smk.params.data,
        fasta=smk.params.fasta,
        cache_dir=smk.params.cache_dir,
        ncbi_run=vars(smk.params.ncbi_run),
    )
