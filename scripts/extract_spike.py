"""Rule extract_spike: spike.parquet and qc.tsv from genomes.fasta."""

from bertgeom.data.spike import run

run(snakemake)  # noqa: F821 (injected by Snakemake)
