"""Rule download: genomes.fasta and manifest.tsv from config data.source."""

from bertgeom.data.download import run

run(snakemake)  # noqa: F821 (injected by Snakemake)
