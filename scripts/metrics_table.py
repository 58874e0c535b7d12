"""Snakemake entry point of rule metrics_table (rules/figures.smk)."""

from bertgeom.figures import run_metrics_table

run_metrics_table(snakemake)  # noqa: F821 (injected by Snakemake)
