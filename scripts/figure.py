"""Snakemake entry point of every figure rule (rules/figures.smk): params.figure names the figure."""

from bertgeom.figures import run

run(snakemake)  # noqa: F821 (injected by Snakemake)
