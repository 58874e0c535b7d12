"""The data rules through Snakemake: dry runs for each source, a real tiny run, lint and format."""

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import yaml

from bertgeom.io import read_metadata

BIN = Path(sys.executable).parent


def _snakemake(root, workdir, *args, config=None):
    """Run snakemake on the default config (plus `config` overrides) with `workdir` as working directory."""
    command = [str(BIN / "snakemake"), "-s", str(root / "Snakefile"), "--directory", str(workdir), *args]
    command += ["--configfile", str(root / "config/config.yaml")]
    if config is not None:
        (workdir / "override.yaml").write_text(yaml.safe_dump(config))
        command.append(str(workdir / "override.yaml"))
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def test_dry_run_default_and_fasta_sources(root, tmp_path):
    run = _snakemake(root, tmp_path, "-n")  # the default target: the whole workflow
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    assert "rule download" in run.stdout + run.stderr and "rule extract_spike" in run.stdout + run.stderr
    (tmp_path / "mine.fa").write_text(">x\nACGT\n")
    fasta = {
        "classes": ["Alpha", "Delta"],
        "data": {"source": "fasta", "fasta": {"Alpha": "mine.fa", "Delta": "mine.fa"}},
    }
    run = _snakemake(root, tmp_path, "-n", "-p", "results/data/spike.parquet", config=fasta)
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    assert "mine.fa" in run.stdout + run.stderr  # the user's files are inputs of rule download


def test_tiny_synthetic_run(root, tmp_path):
    # 3 genomes a class: the split fractions must leave one sequence a class in every split
    config = {
        "data": {"seed": 4, "synthetic": {"per_class": 3, "n_runs_mean": 2.0}},
        "tokens": {"test_fraction": 0.33, "val_fraction": 0.5},
    }
    run = _snakemake(root, tmp_path, "--cores", "2", "results/data/spike.parquet", "results/data/qc.tsv", config=config)
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    data = tmp_path / "results/data"
    manifest = pd.read_csv(data / "manifest.tsv", sep="\t", dtype=str, keep_default_na=False)
    qc = pd.read_csv(data / "qc.tsv", sep="\t", dtype=str, keep_default_na=False)
    spikes = pq.read_table(data / "spike.parquet").to_pandas()
    assert len(manifest) == 24 and set(manifest["synthetic"]) == {"true"}
    assert list(qc["seq_id"]) == list(manifest["seq_id"])  # every genome once: counts in = out
    assert list(spikes["seq_id"]) == list(qc.loc[qc["status"] == "pass", "seq_id"])
    assert set(qc.loc[qc["status"] == "reject", "reason"]) <= {"too_many_n", "partial_spike"}
    assert read_metadata(data / "spike.parquet")["config_sha256"]
    for rule in ("download", "extract_spike"):
        assert (tmp_path / f"logs/{rule}/{rule}.log").stat().st_size > 0
        assert (tmp_path / f"results/benchmarks/{rule}/{rule}.tsv").exists()


def test_lint_and_format(root, tmp_path):
    run = subprocess.run(
        [str(BIN / "snakefmt"), "--check", str(root / "rules/data.smk")], capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    run = _snakemake(root, tmp_path, "--lint")
    lints = run.stdout + run.stderr
    assert "data.smk" not in lints and "rule download" not in lints and "rule extract_spike" not in lints, lints
