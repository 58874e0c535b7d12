"""Shared test fixtures."""

import shutil
from pathlib import Path

import pytest
from workflow import snakemake

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """One complete run of config/tiny.yaml and its report (report.html), shared by every test that
    needs a finished run (minutes on 2 cores). Read it, never change it: use `copy_of_tiny_run`."""
    workdir = tmp_path_factory.mktemp("tiny_workflow")
    snakemake(workdir, "--cores", "2")
    snakemake(workdir, "--cores", "1", "--report", str(workdir / "report.html"))
    return workdir


@pytest.fixture
def copy_of_tiny_run(tiny_run, tmp_path) -> Path:
    """A private copy of the finished tiny run (results, logs and Snakemake's metadata)."""
    copy = tmp_path / "run"
    shutil.copytree(tiny_run, copy, symlinks=True)
    return copy
