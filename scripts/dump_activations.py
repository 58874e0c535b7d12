"""Snakemake entry point of rule dump_activations (rules/activations.smk)."""

from bertgeom import io
from bertgeom.activations import run

with io.job_log(snakemake.log[0]):  # noqa: F821 (defined by Snakemake)
    run(snakemake)  # noqa: F821
