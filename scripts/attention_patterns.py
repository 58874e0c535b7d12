"""Snakemake entry point of rule attention_patterns (rules/attention.smk)."""

from bertgeom.io import job_log
from bertgeom.stats.attention import run

with job_log(snakemake.log[0]):  # noqa: F821 (injected by Snakemake)
    run(snakemake)  # noqa: F821
