"""Cluster submission through profiles/slurm, against a real SLURM controller on this machine.

The integration test starts munged, slurmctld and slurmd on 127.0.0.1 (tests/slurm/cluster.py),
runs the default target of config/tiny.yaml with `snakemake --workflow-profile profiles/slurm` in a
temporary working directory, and checks that every non-local job went through sbatch and ran to
completion under SLURM (the controller's own job records and each job's SLURM log), and that the
outputs equal a local run of the same configuration. It runs wherever slurm-wlm and munge are
installed (.ci/run installs them) and needs to start the daemons: root, as in CI.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from slurm import cluster
from slurm.workflow import (
    GPU_RULES,
    PROFILE,
    ROOT,
    controller_jobs,
    differences,
    fit_to_node,
    jobs_from_log,
    local_rules,
    parse_assignments,
    read_profile,
    result_files,
)

SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
CONFIG = ROOT / "config" / "tiny.yaml"
PROFILE_ENV = ("SBATCH_PARTITION", "SBATCH_ACCOUNT", "BERTGEOM_GPU_PARTITION")
MISSING = cluster.missing_binaries()
RUN_TIMEOUT_S = 1200  # both runs together; about 4 minutes on 2 cores, CI has 25 for everything


def test_profile_blocks(monkeypatch):
    """The profile asks for a GPU, CPUs, memory and time for each GPU rule, and takes partition
    and account from the environment; profiles/default has no resource blocks."""
    for name in PROFILE_ENV:
        monkeypatch.delenv(name, raising=False)
    args = read_profile()
    assert args["executor"] == "slurm"
    assert int(args["jobs"]) >= 1
    defaults = parse_assignments(args["default-resources"])[""]
    assert int(defaults["mem_mb"]) > 0 and int(defaults["runtime"]) > 0
    assert "slurm_partition" not in defaults and "slurm_account" not in defaults
    rules = parse_assignments(args["set-resources"])
    assert set(rules) == set(GPU_RULES)
    for rule in GPU_RULES:
        assert rules[rule]["gpu"] == "1", rule
        assert int(rules[rule]["cpus_per_gpu"]) >= 1, rule
        assert int(rules[rule]["mem_mb"]) > 0 and int(rules[rule]["runtime"]) > 0, rule

    monkeypatch.setenv("SBATCH_PARTITION", "all")  # a Python builtin's name: must stay a string
    monkeypatch.setenv("SBATCH_ACCOUNT", "proj-1")
    monkeypatch.setenv("BERTGEOM_GPU_PARTITION", "gpu")
    args = read_profile()
    defaults = parse_assignments(args["default-resources"])[""]
    assert defaults["slurm_partition"] == "'all'" and defaults["slurm_account"] == "'proj-1'"
    for rule, resources in parse_assignments(args["set-resources"]).items():
        assert resources["slurm_partition"] == "'gpu'" and resources["slurm_account"] == "'proj-1'", rule

    default_profile = yaml.safe_load((ROOT / "profiles" / "default" / "profile.yaml").read_text())
    assert not {"default-resources", "set-resources", "resources", "set-threads"} & set(default_profile)


def test_profile_names_real_rules():
    """Every rule the profile sizes, and every LOCAL_RULES entry, is a rule of the workflow."""
    result = subprocess.run(
        [SNAKEMAKE, "--snakefile", str(ROOT / "Snakefile"), "--list-rules", "--configfile", str(CONFIG)],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rules = set(re.findall(r"^(\w+)", result.stdout, re.M))  # a name per line, docstrings indented
    sized = set(parse_assignments(read_profile()["set-resources"]))
    assert sized <= rules, f"profile sizes unknown rules: {sorted(sized - rules)}"
    assert local_rules() <= rules, f"LOCAL_RULES names unknown rules: {sorted(local_rules() - rules)}"


def test_fit_to_node_caps_only_what_the_node_cannot_give():
    entries = ["train:gpu=2", "train:cpus_per_gpu=8", "train:mem_mb=32000", "train:runtime=480",
               "mem_mb=1000", "slurm_partition='gpu'"]
    assert fit_to_node(entries, cpus=2, mem_mb=12000) == [
        "train:gpu=1", "train:cpus_per_gpu=2", "train:mem_mb=12000", "train:runtime=480",
        "mem_mb=1000", "slurm_partition='gpu'",
    ]


SNAKEMAKE_LOG = """\
SLURM run ID: 1234abcd-run
[Thu Nov 26 11:11:26 2026]
localrule download:
    output: results/data/genomes.fasta
    jobid: 2
    reason: Missing output files: results/data/genomes.fasta
[Thu Nov 26 11:11:28 2026]
rule train:
    input: results/tokens/train.parquet
    output: results/models/seed0/model.safetensors
    jobid: 5
    wildcards: seed=0
Job 5 has been submitted with SLURM jobid 17 (log: /w/.snakemake/slurm_logs/rule_train/0/17.log).
"""


def test_jobs_from_log_reads_rules_local_flags_and_slurm_ids():
    run_id, jobs = jobs_from_log(SNAKEMAKE_LOG)
    assert run_id == "1234abcd-run"
    assert (jobs[2].rule, jobs[2].local, jobs[2].slurm_id) == ("download", True, None)
    assert (jobs[5].rule, jobs[5].local, jobs[5].slurm_id) == ("train", False, "17")
    assert jobs[5].slurm_log == Path("/w/.snakemake/slurm_logs/rule_train/0/17.log")
    with pytest.raises(AssertionError, match="submitted twice"):
        jobs_from_log(SNAKEMAKE_LOG + SNAKEMAKE_LOG.splitlines(keepends=True)[-1])
    with pytest.raises(ValueError, match="jobid 5"):  # a job's own log, printed after a failure
        jobs_from_log(SNAKEMAKE_LOG + "localrule evaluate:\n    jobid: 5\n")


def test_differences_see_content_not_timing_or_figures(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for root, loss, rate, weight, png in ((a, 0.5, 100.0, b"w1", b"x"), (b, 0.5, 250.0, b"w1", b"y")):
        (root / "results" / "figures").mkdir(parents=True)
        pq.write_table(pa.table({"seq_id": ["s1", "s2"], "value": [1.0, 2.0]}), root / "results" / "t.parquet")
        (root / "results" / "info.json").write_text(json.dumps({"loss": loss, "wall_s_this_run": rate}))
        (root / "results" / "log.csv").write_text(f"step,loss,tokens_per_s\n1,{loss},{rate}\n")
        (root / "results" / "model.safetensors").write_bytes(weight)
        (root / "results" / "figures" / "f.png").write_bytes(png)
    files = result_files(a)
    assert files == result_files(b) and len(files) == 5
    assert differences(a, b, files) == []  # timing fields and figure bytes differ, nothing else

    pq.write_table(pa.table({"seq_id": ["s1", "s2"], "value": [1.0, 2.5]}), b / "results" / "t.parquet")
    (b / "results" / "info.json").write_text(json.dumps({"loss": 0.6, "wall_s_this_run": 1.0}))
    (b / "results" / "log.csv").write_text("step,loss,tokens_per_s\n1,0.6,1.0\n")
    (b / "results" / "model.safetensors").write_bytes(b"w2")
    assert differences(a, b, files) == [
        "results/info.json", "results/log.csv", "results/model.safetensors", "results/t.parquet",
    ]


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory):
    """A running single-node cluster, stopped (jobs cancelled first) also when a test fails."""
    started = cluster.start(tmp_path_factory.mktemp("slurm"))
    try:
        yield started
    finally:
        cluster.stop(started)


def start_snakemake(workdir: Path, *args: str, env: dict[str, str]) -> subprocess.Popen:
    """Snakemake on config/tiny.yaml in `workdir`, in the background; output to workdir/snakemake.out."""
    workdir.mkdir(parents=True, exist_ok=True)
    command = [
        SNAKEMAKE, "--snakefile", str(ROOT / "Snakefile"), "--directory", str(workdir),
        "--configfile", str(CONFIG), *args,
    ]
    with open(workdir / "snakemake.out", "w") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def stop_process_group(proc: subprocess.Popen) -> None:
    """End a run left behind by a failure: SIGTERM to its process group (Snakemake then cancels
    its SLURM jobs), SIGKILL after 30 s."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def slurm_overrides(node: dict[str, int]) -> list[str]:
    """What the test changes of profiles/slurm: resources capped to the test node (its CPUs, its
    memory shared by as many jobs as CPUs, its one placeholder GPU), squeue for job states (no
    accounting database here), quick first status check, SLURM logs kept, no retries."""
    profile = read_profile()
    cpus, mem_mb = node["CPUs"], node["RealMemory"] // node["CPUs"]
    return [
        "--default-resources", *fit_to_node(profile["default-resources"], cpus, mem_mb),
        "--set-resources", *fit_to_node(profile["set-resources"], cpus, mem_mb),
        "--max-threads", str(cpus),
        "--local-cores", str(cpus),
        "--retries", "0",
        "--slurm-status-command", "squeue",
        "--slurm-init-seconds-before-status-checks", "1",
        "--slurm-keep-successful-logs",
    ]


def slurm_time(minutes: int) -> str:
    """Minutes as SLURM prints a time limit: [D-]HH:MM:SS."""
    days, minutes = divmod(minutes, 24 * 60)
    hours, minutes = divmod(minutes, 60)
    return f"{days}-{hours:02d}:{minutes:02d}:00" if days else f"{hours:02d}:{minutes:02d}:00"


@pytest.mark.slurm
@pytest.mark.skipif(bool(MISSING), reason=f"SLURM not installed (no {', '.join(MISSING)}): apt-get install slurm-wlm munge")
def test_tiny_workflow_on_slurm_equals_local_run(slurm_cluster, tmp_path):
    node, cpus = slurm_cluster.hardware, str(slurm_cluster.hardware["CPUs"])
    env = {k: v for k, v in slurm_cluster.env.items() if k not in PROFILE_ENV}
    env["PATH"] = os.pathsep.join([str(Path(SNAKEMAKE).parent), env["PATH"]])
    env["PYTHONHASHSEED"] = "0"
    on_slurm, local = tmp_path / "slurm", tmp_path / "local"

    # The local run of the same configuration goes alongside: the SLURM run leaves the CPUs idle
    # while its jobs queue, start and wait for the next status check. Each job gets the same
    # threads in both runs (its rule's, capped by the CPUs): float results depend on them.
    started = time.monotonic()
    local_run = start_snakemake(local, "--cores", cpus, env=env)
    slurm_run = start_snakemake(on_slurm, "--workflow-profile", str(PROFILE.parent), *slurm_overrides(node), env=env)
    try:
        slurm_run.wait(timeout=RUN_TIMEOUT_S)
        slurm_s = time.monotonic() - started
        local_run.wait(timeout=max(1.0, RUN_TIMEOUT_S - slurm_s))
        both_s = time.monotonic() - started
    except subprocess.TimeoutExpired:
        jobs = slurm_cluster.run("squeue", "--states=all", "--format=%i %T %r %k").stdout
        pytest.fail(f"no end after {RUN_TIMEOUT_S} s; SLURM jobs:\n{jobs}\n{(on_slurm / 'snakemake.out').read_text()[-4000:]}")
    finally:
        stop_process_group(slurm_run)
        stop_process_group(local_run)
    print(f"SLURM run {slurm_s:.0f} s, with the local run alongside {both_s:.0f} s")
    log = (on_slurm / "snakemake.out").read_text()
    assert slurm_run.returncode == 0, f"SLURM run failed:\n{log[-8000:]}\n{slurm_cluster.logs()}"
    assert local_run.returncode == 0, f"local run failed:\n{(local / 'snakemake.out').read_text()[-8000:]}"

    run_id, jobs = jobs_from_log(log)
    remote = [job for job in jobs.values() if not job.local]
    assert run_id and remote, "no job went to SLURM"
    records = controller_jobs(slurm_cluster.run("scontrol", "show", "job", "--oneliner").stdout)

    # Every non-local job: one sbatch, and the controller ran it to completion as that rule.
    unsubmitted = [job.rule for job in remote if job.slurm_id is None]
    assert not unsubmitted, f"non-local jobs not submitted with sbatch: {unsubmitted}"
    assert {job.slurm_id for job in remote} == set(records), "SLURM ran other jobs than Snakemake submitted"
    for job in remote:
        record = records[job.slurm_id]
        assert record["JobName"] == run_id, record
        assert record["JobState"] == "COMPLETED" and record["ExitCode"] == "0:0", record
        assert record["Comment"] == f"rule_{job.rule}" or record["Comment"].startswith(f"rule_{job.rule}_wildcards_")
        assert f"(Rule: {job.rule})" in job.slurm_log.read_text(), f"{job.slurm_log} shows no run of {job.rule}"

    # The GPU rules reached SLURM with the profile's GPU request, time limit, CPUs and memory
    # (the last two capped to the node).
    sized = parse_assignments(read_profile()["set-resources"])
    fitted = parse_assignments(fit_to_node(read_profile()["set-resources"], node["CPUs"], node["RealMemory"] // node["CPUs"]))
    gpu_jobs = [job for job in remote if job.rule in GPU_RULES]
    assert {job.rule for job in gpu_jobs} == set(GPU_RULES), "the tiny workflow ran no GPU rule on SLURM"
    for job in gpu_jobs:
        record = records[job.slurm_id]
        assert record.get("TresPerJob") == "gres:gpu:1", record
        assert record["TimeLimit"] == slurm_time(int(sized[job.rule]["runtime"])), record
        assert record.get("CpusPerTres") == f"gres:gpu:{fitted[job.rule]['cpus_per_gpu']}", record
        assert record["MinMemoryNode"] == f"{fitted[job.rule]['mem_mb']}M", record

    # Local jobs are exactly the light rules of rules/common.smk (and rule all).
    ran_locally = {job.rule for job in jobs.values() if job.local}
    assert ran_locally <= local_rules() | {"all"}, ran_locally - local_rules()
    assert not ran_locally & {job.rule for job in remote}

    # Both runs wrote the same files, with the same content (figures and benchmarks: presence).
    files = result_files(on_slurm)
    assert result_files(local) == files
    assert not differences(on_slurm, local, files), "outputs differ between the SLURM and the local run"
