"""Snakemake entry point of rule directionality (rules/attention.smk)."""

from bertgeom.io import job_log
from bertgeom.stats.directionality import run

with job_log(snakemake.log[0]):  # noqa: F821 (injected by Snakemake)
    run(snakemake)  # noqa: F821
