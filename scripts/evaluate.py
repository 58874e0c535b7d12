"""Snakemake entry point of rule evaluate (rules/train.smk)."""

from bertgeom.evaluate import run

run(snakemake)  # noqa: F821 (injected by Snakemake)
