"""Snakemake entry point of rule split_and_tokenize (rules/tokens.smk)."""

from bertgeom.tokens import run

run(snakemake)  # noqa: F821 (injected by Snakemake)
