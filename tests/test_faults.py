"""The fault matrix (issue 18): each fault is injected into config/tiny.yaml-sized work and every case
asserts the healed end state after an ordinary rerun (no manual step).

| fault                                             | test                                              |
| ------------------------------------------------- | ------------------------------------------------- |
| SIGKILL of train mid-epoch                        | test_killed_training_heals[killed mid-epoch]      |
| checkpoint JSON / weights cut short               | test_killed_training_heals[JSON cut short / ...]  |
| SIGKILL of dump_activations mid-write             | test_dump_killed_mid_write                        |
| SIGKILL of a job after its work, before recorded  | test_job_killed_after_its_work                    |
| corrupted NCBI cache (batch zip, accession list)  | test_damaged_ncbi_cache_is_fetched_again[...]     |
| disk full (a small tmpfs)                         | test_disk_full_fails_cleanly_then_heals           |
| two concurrent runs                               | test_a_second_run_is_locked_out                   |
| a deleted intermediate                            | test_deleted_intermediate_rebuilds_only_dependents |
| every bad setting (bertgeom.config.check_config)  | test_bad_setting_is_rejected_before_the_first_job |

Elsewhere: zero reruns after re-ordering the config's keys
(tests/test_config_reruns.py::test_reordering_and_reformatting_the_config_reruns_nothing); NCBI 429
storms, 5xx, dropped connections and truncated zips (tests/test_data_ncbi.py).

Faults inside a job are real: tests/fault_injection/sitecustomize.py SIGKILLs (or holds) the job's own
process at a chosen call, in the process Snakemake started. Every case works on a copy of the shared
finished tiny run and reruns only the jobs it needs.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml
from test_config_reruns import edited_config, planned
from test_data_ncbi import CLASS_DEFS, CLASSES, SETTINGS, _fast_client, _lineages
from test_errors_doc import BAD_SETTINGS
from slurm.workflow import same_content
from workflow import TINY, snakemake, snakemake_command

from ncbi_server import FakeNcbi

from bertgeom.data.download import write_genomes
from bertgeom.data.ncbi import ncbi_genomes

INJECTION = Path(__file__).parent / "fault_injection"
SEED0_MODEL = "results/models/seed0/model.safetensors"
SEED0_DUMP = "results/activations/seed0/finetuned"
SEED0_EVAL = ["results/eval/seed0/metrics.json", "results/eval/seed0/predictions.parquet"]
ACTIVATION_FILES = ["summary", "heads", "attention_summary", "tokens", "attention", "class_attention"]
STEPS_PER_EPOCH = 8  # tiny: 62 training sequences in batches of 8


def fault(spec: str, trace: Path, **extra: str) -> dict:
    """The environment that arms tests/fault_injection (spec: module:attribute:n:action)."""
    path = os.pathsep.join(filter(None, [str(INJECTION), os.environ.get("PYTHONPATH")]))
    return {"BERTGEOM_FAULT": spec, "BERTGEOM_FAULT_TRACE": str(trace), "PYTHONPATH": path, **extra}


def calls(trace: Path) -> int:
    """How many calls of the armed function the trace recorded."""
    return len(trace.read_text().splitlines()) if trace.exists() else 0


def assert_nothing_to_do(run: Path, *targets: str, configfile: Path = TINY) -> None:
    result = snakemake(run, "-n", *targets, configfile=configfile)
    assert "Nothing to be done" in result.stdout + result.stderr, result.stdout[-2000:]


def hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def copy_run(source: Path, target: Path) -> Path:
    shutil.copytree(source, target, symlinks=True)
    return target


# --- training: killed mid-epoch, damaged checkpoints ---------------------------------------------


@pytest.fixture(scope="module")
def two_epochs(tiny_run, tmp_path_factory):
    """Seed 0 trained for 2 epochs in a copy of the tiny run (the reference model), then trained again
    and SIGKILLed in the 4th step of epoch 2: (reference bytes, the killed run, its config file)."""
    run = copy_run(tiny_run, tmp_path_factory.mktemp("train") / "run")
    config = edited_config(run, {"train.epochs": 2})
    snakemake(run, "--cores", "1", SEED0_MODEL, configfile=config)
    reference = (run / SEED0_MODEL).read_bytes()
    trace = run.parent / "trace"
    step = STEPS_PER_EPOCH + 4
    spec = f"bertgeom.train:train_step:{step}:kill"
    killed = snakemake(run, "--cores", "1", SEED0_MODEL, "--forcerun", "train", configfile=config, check=False,
                       env=fault(spec, trace))  # fmt: skip
    assert killed.returncode != 0 and "SIGKILL" in killed.stderr, killed.stderr[-3000:]
    assert calls(trace) == step
    checkpoints = run / "results/checkpoints/seed0"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["epoch1.json", "epoch1.safetensors"]
    assert not (run / SEED0_MODEL).exists()  # Snakemake removed the failed job's outputs
    return reference, run, config


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["killed mid-epoch", "JSON cut short", "weights cut short"])
def test_killed_training_heals(two_epochs, damage, tmp_path):
    """The rerun resumes from epoch 1, or, when the checkpoint is damaged, logs its path, discards it
    and trains from the start; either way the model is bit-identical to the uninterrupted one."""
    reference, killed, config = two_epochs
    run = copy_run(killed, tmp_path / "run")
    checkpoints = run / "results/checkpoints/seed0"
    damaged = {"JSON cut short": "epoch1.json", "weights cut short": "epoch1.safetensors"}.get(damage)
    if damaged:
        path = checkpoints / damaged
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    snakemake(run, "--cores", "1", SEED0_MODEL, configfile=config)
    info = json.loads((run / "results/models/seed0/training_info.json").read_text())
    assert info["resumed_from_epoch"] == (0 if damaged else 1)
    assert (run / SEED0_MODEL).read_bytes() == reference
    assert not checkpoints.exists()
    log = (run / "logs/train/seed0.log").read_text()
    if damaged:
        assert f"{Path('results/checkpoints/seed0') / damaged}: " in log and "discarded" in log
    assert_nothing_to_do(run, SEED0_MODEL, configfile=config)


# --- activations dump killed mid-write; a job killed after its work -------------------------------


@pytest.mark.slow
def test_dump_killed_mid_write(tiny_run, copy_of_tiny_run, tmp_path):
    """No partial Parquet is left; the rerun removes the kill's temporaries and writes the same files."""
    run, trace = copy_of_tiny_run, tmp_path / "trace"
    target = f"{SEED0_DUMP}/summary.parquet"
    killed = snakemake(run, "--cores", "1", target, "--forcerun", "dump_activations", check=False,
                       env=fault("bertgeom.io:ParquetStream.write:3:kill", trace))  # fmt: skip
    assert killed.returncode != 0 and calls(trace) == 3, killed.stderr[-3000:]
    folder = run / SEED0_DUMP
    assert hidden(folder), "the kill came mid-write: its temporaries are there"
    assert [p.name for p in folder.iterdir() if not p.name.startswith(".")] == []  # no output, partial or not
    snakemake(run, "--cores", "1", target)
    assert hidden(folder) == []
    assert "removing a temporary left by an interrupted job" in (run / "logs/dump_activations/seed0/finetuned.log").read_text()
    for name in ACTIVATION_FILES:
        path = f"{SEED0_DUMP}/{name}.parquet"
        assert same_content(run / path, tiny_run / path), path  # a rerun on 1 core may round last float bits
    assert_nothing_to_do(run, target)


@pytest.mark.slow
def test_job_killed_after_its_work(tiny_run, copy_of_tiny_run, tmp_path):
    """evaluate is SIGKILLed once its outputs are complete, before Snakemake records the job: the run
    fails, the rerun redoes the job, and the outputs are those of the finished run."""
    run, trace = copy_of_tiny_run, tmp_path / "trace"
    killed = snakemake(run, "--cores", "1", SEED0_EVAL[0], "--forcerun", "evaluate", check=False,
                       env=fault("bertgeom.evaluate:evaluate:1:exit", trace))  # fmt: skip
    assert killed.returncode != 0 and calls(trace) == 1 and "SIGKILL" in killed.stderr, killed.stderr[-3000:]
    snakemake(run, "--cores", "1", SEED0_EVAL[0])
    for path in SEED0_EVAL:
        assert same_content(run / path, tiny_run / path), path  # a rerun on 1 core may round last float bits
    assert_nothing_to_do(run, SEED0_EVAL[0])


# --- NCBI cache -----------------------------------------------------------------------------------


def _download(server, workdir: Path) -> str:
    """The download job's NCBI part (tiny scale, 14 genomes) into workdir; the FASTA it wrote."""
    records = ncbi_genomes(CLASSES, CLASS_DEFS, SETTINGS, seed=3, cache_dir=workdir / "cache", client=_fast_client(server.url))
    write_genomes(records, workdir / "genomes.fasta", workdir / "manifest.tsv")
    return (workdir / "genomes.fasta").read_text()


@pytest.mark.parametrize("entry", ["batch zip", "accession list"])
def test_damaged_ncbi_cache_is_fetched_again(entry, tmp_path, caplog, monkeypatch):
    """A cached batch zip or accession list cut short (reused unchecked, it failed every rerun): the
    rerun logs its path, fetches exactly that entry again from the server and writes the same genomes."""
    monkeypatch.delenv("NCBI_API_KEY", raising=False)
    lineages = _lineages()
    with FakeNcbi(lineages) as server:
        first = _download(server, tmp_path)
    damaged = sorted((tmp_path / "cache").glob("batch-A-*.zip" if entry == "batch zip" else "accessions-A.json"))[0]
    content = damaged.read_bytes()
    damaged.write_bytes(content[: len(content) // 2])
    with FakeNcbi(lineages) as server:
        assert _download(server, tmp_path) == first
    assert f"{damaged}: " in caplog.text and "discarded" in caplog.text
    reports = {entry["query"]["filter.pangolin_classification"] for entry in server.requests("report")}
    downloads = server.requests("download")
    if entry == "batch zip":
        assert reports == set() and len(downloads) == 1
        with zipfile.ZipFile(damaged) as archive:
            fetched = {line.split()[0][1:] for line in archive.read("ncbi_dataset/data/genomic.fna").decode().splitlines()
                       if line.startswith(">")}  # fmt: skip
        assert set(downloads[0]["accessions"]) == fetched  # the damaged batch, again (its zip has a new date)
    else:
        assert reports == set(CLASS_DEFS[0]["pango_lineages"]) and downloads == []
        assert damaged.read_bytes() == content


# --- disk full ------------------------------------------------------------------------------------

DISK_FULL = """
set -u
mount -t tmpfs -o size=1m tmpfs "$DUMP"
snakemake "$@"; echo "full: $?"
ls -A "$DUMP" | sed 's/^/left: /'
umount "$DUMP" && mount -t tmpfs -o size=64m tmpfs "$DUMP"
snakemake "$@"; echo "freed: $?"
cp -a "$DUMP" "$HEALED"
"""


@pytest.mark.slow
def test_disk_full_fails_cleanly_then_heals(tiny_run, copy_of_tiny_run, tmp_path):
    """The dump's folder on a 1 MiB tmpfs (in a user and mount namespace): the job fails with ENOSPC,
    leaving nothing in the folder; with space again, the same rerun writes the finished run's files."""
    if not shutil.which("unshare") or subprocess.run(["unshare", "-rm", "mount", "-t", "tmpfs", "tmpfs", str(tmp_path)],
                                                     capture_output=True).returncode:  # fmt: skip
        pytest.skip("this machine allows no tmpfs mount in a user namespace (unshare -rm)")
    run = copy_of_tiny_run
    snakemake_args = snakemake_command(run, "--cores", "1", f"{SEED0_DUMP}/summary.parquet")
    env = {**os.environ, "DUMP": str(run / SEED0_DUMP), "HEALED": str(tmp_path / "healed"), "PYTHONHASHSEED": "0",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}  # fmt: skip
    script = ["unshare", "-rm", "bash", "-c", DISK_FULL, "disk-full", *snakemake_args[1:]]
    result = subprocess.run(script, capture_output=True, text=True, env=env, timeout=900)
    lines = result.stdout.splitlines()
    assert "full: 1" in lines and "freed: 0" in lines, result.stdout[-2000:] + result.stderr[-4000:]
    assert not [line for line in lines if line.startswith("left: ")]  # no partial file, no temporary
    assert "No space left on device" in result.stderr
    for name in ACTIVATION_FILES:
        assert same_content(tmp_path / "healed" / f"{name}.parquet", tiny_run / SEED0_DUMP / f"{name}.parquet"), name


# --- two concurrent runs ------------------------------------------------------------------------


@pytest.mark.slow
def test_a_second_run_is_locked_out(tiny_run, copy_of_tiny_run, tmp_path):
    """While one run's job is running, a second run on the same folder fails at once (Snakemake's
    lock) and changes nothing; the first one finishes as if alone."""
    run, trace, release = copy_of_tiny_run, tmp_path / "trace", tmp_path / "release"
    command = snakemake_command(run, "--cores", "1", SEED0_EVAL[0], "--forcerun", "evaluate")
    env = {**os.environ, "PYTHONHASHSEED": "0", **fault("bertgeom.evaluate:evaluate:1:hold", trace,
                                                          BERTGEOM_FAULT_RELEASE=str(release))}  # fmt: skip
    first = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 600
        while not calls(trace) and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert calls(trace) == 1, "the first run's job is running (held)"
        second = snakemake(run, "--cores", "1", SEED0_EVAL[0], "--forcerun", "evaluate", check=False)
        assert second.returncode != 0 and "LockException" in second.stdout + second.stderr
        assert calls(trace) == 1  # the second run started no job
        release.touch()
        output, _ = first.communicate(timeout=600)
        assert first.returncode == 0, output[-3000:]
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
    for path in SEED0_EVAL:
        assert same_content(run / path, tiny_run / path), path  # a rerun on 1 core may round last float bits
    assert_nothing_to_do(run, SEED0_EVAL[0])


# --- a deleted intermediate -----------------------------------------------------------------------


@pytest.mark.slow
def test_deleted_intermediate_rebuilds_only_dependents(tiny_run, copy_of_tiny_run):
    run = copy_of_tiny_run
    deleted = run / "results/stats/all_seeds/finetuned/cone_index.parquet"
    before = {p: p.stat().st_mtime_ns for p in (run / "results").rglob("*") if p.is_file() and p != deleted}
    deleted.unlink()
    assert planned(run) == {
        "aggregate_seeds": 1, "fig_cone_stream": 1, "fig_cone_heads": 1, "fig_cone_checkpoints": 1, "explorer": 1,
    }  # fmt: skip
    snakemake(run, "--cores", "2")
    rebuilt = {p.relative_to(run).as_posix() for p, mtime in before.items() if p.stat().st_mtime_ns != mtime}
    figures = {f"results/figures/{name}.{ext}" for name in ("cone_stream", "cone_heads", "cone_checkpoints")
               for ext in ("png", "pdf")} | {"results/explorer/index.html"}  # fmt: skip
    benchmarks = {p for p in rebuilt if p.startswith("results/benchmarks/")}
    assert rebuilt - benchmarks == figures
    assert deleted.read_bytes() == (tiny_run / deleted.relative_to(run)).read_bytes()
    assert_nothing_to_do(run)


# --- bad settings ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bad_setting_runs(tmp_path_factory) -> dict:
    """`snakemake --cores 1` on every bad setting, each in its own empty folder (4 at a time):
    {name: (folder, result)}."""

    def attempt(name: str):
        folder = tmp_path_factory.mktemp("bad") / "run"
        folder.mkdir()
        setting = BAD_SETTINGS[name]
        setting.prepare(folder)
        config = folder.parent / "config.yaml"  # outside the run folder: anything new in it was the run's
        config.write_text(yaml.safe_dump(setting.config()))
        return folder, snakemake(folder, "--cores", "1", configfile=config, check=False)

    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(zip(BAD_SETTINGS, pool.map(attempt, BAD_SETTINGS)))


@pytest.mark.slow
@pytest.mark.parametrize("name", list(BAD_SETTINGS))
def test_bad_setting_is_rejected_before_the_first_job(name, bad_setting_runs):
    """Rejected when the workflow is parsed, with the message of docs/errors.md: no job ran (nothing
    new in the folder but Snakemake's log of the attempt)."""
    folder, result = bad_setting_runs[name]
    assert result.returncode != 0
    message = BAD_SETTINGS[name].message(folder)
    assert message in result.stderr, result.stderr[-3000:]
    made = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    assert {p for p in made if not p.startswith(".snakemake/log/")} == set(BAD_SETTINGS[name].files)
