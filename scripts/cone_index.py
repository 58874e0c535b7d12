"""Snakemake entry point of rule cone_index (library: bertgeom.stats.cone)."""

from bertgeom.io import job_log
from bertgeom.stats.cone import run

with job_log(snakemake.log[0]):  # noqa: F821 (injected by Snakemake)
    run(snakemake)  # noqa: F821
