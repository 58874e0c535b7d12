"""Helpers of tests/test_slurm.py: the profile as Snakemake reads it, resources fitted to the test
node, the jobs of a Snakemake log, and the comparison of two results/ trees."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from bertgeom.figures.registry import FIGURE_IDS

ROOT = Path(__file__).resolve().parents[2]
PROFILE = ROOT / "profiles" / "slurm" / "profile.yaml"
GPU_RULES = ("pretrain", "train", "evaluate", "dump_activations")


def read_profile(path: Path = PROFILE) -> dict:
    """The profile as Snakemake turns it into command-line arguments (YTE evaluated, blocks as
    lists like ["mem_mb=8000"] or ["train:gpu=1"]); reads the environment as Snakemake would."""
    from snakemake.profiles import ProfileConfigFileParser

    with open(path) as stream:
        return dict(ProfileConfigFileParser().parse(stream))


def parse_assignments(entries: list[str]) -> dict[str, dict[str, str]]:
    """["train:gpu=1", "mem_mb=8000"] -> {"train": {"gpu": "1"}, "": {"mem_mb": "8000"}}."""
    out: dict[str, dict[str, str]] = {}
    for entry in entries:
        key, value = entry.split("=", 1)
        rule, _, name = key.rpartition(":")
        out.setdefault(rule, {})[name] = value
    return out


def fit_to_node(entries: list[str], cpus: int, mem_mb: int) -> list[str]:
    """Resource assignments capped to a node with `cpus` CPUs and `mem_mb` MB (and one GPU), so
    that SLURM can start every job there; everything else is passed through unchanged."""
    caps = {"mem_mb": mem_mb, "cpus_per_gpu": cpus, "cpus_per_task": cpus, "gpu": 1}
    fitted = []
    for entry in entries:
        key, value = entry.split("=", 1)
        name = key.rpartition(":")[2]
        if name in caps and value.isdigit():
            value = str(min(int(value), caps[name]))
        fitted.append(f"{key}={value}")
    return fitted


def local_rules(common: Path = ROOT / "rules" / "common.smk") -> set[str]:
    """LOCAL_RULES of rules/common.smk, figure rules (fig_<id>) from the figure registry."""
    block = re.search(r"^LOCAL_RULES = \[(.*?)\]", common.read_text(), re.M | re.S).group(1)
    names = set(re.findall(r'^\s*"(\w+)",', block, re.M))
    if "FIGURE_IDS" in block:
        names |= {f"fig_{figure_id}" for figure_id in FIGURE_IDS}
    return names


@dataclass
class Job:
    jobid: int
    rule: str
    local: bool
    slurm_id: str | None = None
    slurm_log: Path | None = None


def jobs_from_log(text: str) -> tuple[str | None, dict[int, Job]]:
    """(SLURM run id, {snakemake jobid: Job}) from the output of a Snakemake run."""
    run_id = re.search(r"^SLURM run ID: (\S+)", text, re.M)
    jobs: dict[int, Job] = {}
    for match in re.finditer(r"^(local)?rule (\w+):\n(?:    .*\n)*?    jobid: (\d+)$", text, re.M):
        job = Job(jobid=int(match.group(3)), rule=match.group(2), local=bool(match.group(1)))
        if jobs.setdefault(job.jobid, job) != job:  # e.g. a job's own log shown after a failure
            raise ValueError(f"jobid {job.jobid} stands for {jobs[job.jobid]} and {job}")
    submitted = re.finditer(r"^Job (\d+) has been submitted with SLURM jobid (\d+) \(log: (.+)\)\.$", text, re.M)
    for match in submitted:
        job = jobs[int(match.group(1))]
        if job.slurm_id is not None:
            raise AssertionError(f"job {job.jobid} ({job.rule}) was submitted twice")
        job.slurm_id, job.slurm_log = match.group(2), Path(match.group(3))
    return (run_id.group(1) if run_id else None), jobs


def controller_jobs(scontrol_output: str) -> dict[str, dict[str, str]]:
    """`scontrol show job --oneliner` -> {job id: {field: value}}."""
    records = {}
    for line in scontrol_output.splitlines():
        fields = dict(re.findall(r"(\S+?)=(\S*)", line))
        if "JobId" in fields:
            records[fields["JobId"]] = fields
    return records


# Files that differ between two correct runs, compared by presence only.
VOLATILE_SUFFIXES = (".png", ".pdf", ".html")  # matplotlib output, creation dates, timestamps
VOLATILE_DIRS = ("results/benchmarks/",)  # run times
# Fields of CSV/JSON files that measure time (elapsed_s, tokens_per_s, wall_s_this_run, ...).
TIMING_WORDS = {"s", "seconds", "elapsed", "wall", "time", "duration"}


def is_timing(field: str) -> bool:
    return bool(TIMING_WORDS & set(field.lower().split("_")))


def result_files(workdir: Path) -> set[str]:
    """Paths (relative to workdir) of every file under results/, temporary files excluded."""
    return {
        str(path.relative_to(workdir))
        for path in (workdir / "results").rglob("*")
        if path.is_file() and not path.name.startswith(".")
    }


def _without_timing(obj):
    if isinstance(obj, dict):
        return {k: _without_timing(v) for k, v in obj.items() if not is_timing(k)}
    if isinstance(obj, list):
        return [_without_timing(v) for v in obj]
    return obj


FLOAT_RTOL = 1e-5  # float32 keeps ~7 significant digits


def same_tables(a: pa.Table, b: pa.Table) -> bool:
    """Same schema and rows; floating-point columns equal to float32 rounding (rtol FLOAT_RTOL), NaN
    equal to NaN: a job's reductions on other CPUs or thread counts may round the last bits differently
    (seen once: one near-uniform head's entropy, 0.99999666 vs 0.99999386)."""
    if a.schema != b.schema or a.num_rows != b.num_rows:
        return False
    for name in a.column_names:
        x, y = a[name], b[name]
        if pa.types.is_floating(x.type):
            ok = np.allclose(x.to_numpy(zero_copy_only=False), y.to_numpy(zero_copy_only=False),
                             rtol=FLOAT_RTOL, atol=0, equal_nan=True)  # fmt: skip
        else:
            ok = x.equals(y)
        if not ok:
            return False
    return True


def same_content(a: Path, b: Path) -> bool:
    """Parquet: the tables (same_tables: schema and rows, not the file bytes); CSV and JSON: everything
    but the timing fields; anything else: the bytes."""
    if a.suffix == ".parquet":
        return same_tables(pq.read_table(a), pq.read_table(b))
    if a.suffix == ".json":
        return _without_timing(json.loads(a.read_text())) == _without_timing(json.loads(b.read_text()))
    if a.suffix == ".csv":
        tables = [pd.read_csv(path) for path in (a, b)]
        tables = [t.drop(columns=[c for c in t.columns if is_timing(c)]) for t in tables]
        return tables[0].equals(tables[1])
    return a.read_bytes() == b.read_bytes()


def differences(a: Path, b: Path, files: set[str]) -> list[str]:
    """The files of `files` (relative paths) whose content differs between work dirs a and b;
    volatile files (figures, reports, benchmarks) are skipped."""
    return [
        name
        for name in sorted(files)
        if not (name.startswith(VOLATILE_DIRS) or name.endswith(VOLATILE_SUFFIXES))
        and not same_content(a / name, b / name)
    ]
