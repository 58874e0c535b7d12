"""Snakemake entry point of rule train (rules/train.smk)."""

from bertgeom.train import run

run(snakemake)  # noqa: F821 (injected by Snakemake)
