"""Resumable state: checksums written with it, damage found on reuse, the damaged entry discarded;
temporaries of killed jobs swept, and only ours."""

import json
import logging
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from bertgeom import io, resumable


def test_checked_json_round_trip_and_damage(tmp_path):
    path = tmp_path / "state.json"
    state = {"epoch": 2, "log": [{"loss": 0.1 + 0.2, "lr": 1e-8}], 3: "int key", "nan": float("nan")}
    resumable.write_json(path, state)
    again = resumable.read_json(path)
    assert again["epoch"] == 2 and again["log"] == state["log"] and again["3"] == "int key"  # as JSON reads back
    text = path.read_text()
    for damaged, problem in [
        (text[: len(text) // 2], "unreadable"),  # cut short
        (text.replace('"epoch": 2', '"epoch": 3'), "does not match"),  # altered, still valid JSON
        (json.dumps({"epoch": 2}), "no content_sha256"),  # written by something else (or an older version)
        ("", "unreadable"),
    ]:
        path.write_text(damaged)
        with pytest.raises(resumable.Damaged, match=f"{path}: .*{problem}"):
            resumable.read_json(path)


def test_checked_file_sidecar(tmp_path):
    path = tmp_path / "batch.zip"
    resumable.write_bytes(path, b"0123456789")
    resumable.check_file(path)
    assert (tmp_path / "batch.zip.sha256").read_text().strip() == io.sha256_file(path)
    path.write_bytes(b"01234")  # cut short
    with pytest.raises(resumable.Damaged, match="differs from"):
        resumable.check_file(path)
    resumable.write_bytes(path, b"0123456789")
    (tmp_path / "batch.zip.sha256").unlink()  # killed between the file and its checksum
    with pytest.raises(resumable.Damaged, match="no checksum file batch.zip.sha256"):
        resumable.check_file(path)
    with pytest.raises(resumable.Damaged, match="missing"):
        resumable.check_file(tmp_path / "absent.zip", "0" * 64)


def test_reuse_discards_what_is_damaged(tmp_path, caplog):
    good, bad = tmp_path / "good.zip", tmp_path / "bad.zip"
    resumable.write_bytes(good, b"intact")
    resumable.write_bytes(bad, b"intact")
    bad.write_bytes(b"flipped")
    caplog.set_level(logging.WARNING)
    assert resumable.intact(good) and not resumable.intact(bad) and not resumable.intact(tmp_path / "none.zip")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good.zip", "good.zip.sha256"]  # bad one gone, sidecar too
    assert f"{bad}: sha256" in caplog.text and "discarded" in caplog.text

    cache = tmp_path / "cache.json"
    resumable.write_json(cache, {"a": 1})
    assert resumable.load_json(cache) == {"a": 1}
    cache.write_text(cache.read_text()[:-5])
    assert resumable.load_json(cache) is None and not cache.exists()
    assert resumable.load_json(cache) is None  # none there: nothing to log


KILLED_WRITER = """
import os, signal, sys
from bertgeom import io
with io.atomic_path(sys.argv[1], ".parquet") as tmp, io.staging_directory(sys.argv[1]) as staging:
    tmp.write_bytes(b"half a table")
    (staging / "model.safetensors").write_bytes(b"half a model")
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_sweep_removes_only_our_temporaries(tmp_path, caplog):
    out = tmp_path / "summary.parquet"
    killed = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(out)])
    assert killed.returncode == -signal.SIGKILL
    ours = {p.name for p in tmp_path.iterdir()}
    assert len(ours) == 2 and not out.exists()  # what the kill left: a temporary file and a staging directory
    theirs = {".summary.parquet.notours", "summary.parquet.abcdefgh.parquet", ".other.parquet.abcdefgh.parquet",
              ".summary.parquet.ABCDEFGH.parquet", ".summary.parquet.abcdefg.parquet", "summary.parquet"}  # fmt: skip
    for name in theirs:
        (tmp_path / name).write_text("someone else's")
    caplog.set_level(logging.WARNING)
    removed = io.sweep_temporaries([out])
    assert {p.name for p in removed} == ours
    assert {p.name for p in tmp_path.iterdir()} == theirs
    assert all(f"{p}: removing a temporary left by an interrupted job" in caplog.text for p in removed)

    # A directory the job owns whole: every temporary of our naming in it, nothing else.
    owned = tmp_path / "checkpoints"
    owned.mkdir()
    for name in (".epoch2.safetensors.k3j_9x0a.safetensors", ".epoch2.json.abcdefgh.tmp", "epoch1.json", ".keep"):
        (owned / name).write_text("x")
    io.sweep_temporaries(directories=[owned, tmp_path / "absent"])
    assert sorted(p.name for p in owned.iterdir()) == [".keep", "epoch1.json"]


def test_job_log_sweeps_its_outputs_first(tmp_path):
    out = tmp_path / "table.parquet"
    stale = tmp_path / ".table.parquet.a1b2c3d4.parquet"
    stale.write_bytes(b"left by a kill")
    other = tmp_path / ".other.parquet.a1b2c3d4.parquet"
    other.write_bytes(b"another job's")
    with io.job_log(tmp_path / "job.log", outputs=[str(out)]):
        assert not stale.exists() and other.exists()


def test_every_job_sweeps_its_outputs():
    """Every rule's script opens its job with job_log(..., outputs=smk.output), so that a rerun of any
    job removes what a killed run of it left (the scripts are the workflow's only jobs)."""
    scripts = sorted((Path(__file__).parents[1] / "scripts").glob("*.py"))
    assert scripts
    missing = [p.name for p in scripts if "with job_log(smk.log[0], outputs=smk.output):" not in p.read_text()]
    assert missing == []
