"""Snakemake entry point of rule gate_agreement (rules/attention.smk)."""

from bertgeom.io import job_log
from bertgeom.stats.attention import run_agreement

with job_log(snakemake.log[0]):  # noqa: F821 (injected by Snakemake)
    run_agreement(snakemake)  # noqa: F821
