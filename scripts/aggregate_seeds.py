"""Snakemake entry point of rule aggregate_seeds (library: bertgeom.stats.aggregate)."""

from bertgeom.io import job_log
from bertgeom.stats.aggregate import run

with job_log(snakemake.log[0]):  # noqa: F821 (injected by Snakemake)
    run(snakemake)  # noqa: F821
