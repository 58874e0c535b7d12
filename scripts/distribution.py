"""Snakemake entry point of rule distribution (library: bertgeom.stats.distribution)."""

from bertgeom.io import job_log
from bertgeom.stats.distribution import run

with job_log(snakemake.log[0]):  # noqa: F821 (injected by Snakemake)
    run(snakemake)  # noqa: F821
