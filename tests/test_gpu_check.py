"""benchmarks/gpu_check.py's CPU-side logic (it has not run on a GPU in CI): the agreement of two
dumps it reports, and the script end to end on the CPU with the tiny preset."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from workflow import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import gpu_check  # noqa: E402
from bench_activations import CLASSES, make_model, make_tokens  # noqa: E402

from bertgeom import activations  # noqa: E402
from bertgeom.config import load_config  # noqa: E402
from bertgeom.io import fixed_size_list, to_matrix  # noqa: E402


@pytest.fixture(scope="module")
def tiny_dump(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gpu_check")
    make_model(tmp / "model", "tiny")
    make_tokens(tmp / "tokens.parquet", 8)
    settings = {**load_config()["activations"], "splits": ["test"], "subset_per_class": 1, "device": "cpu"}
    outputs = {name: tmp / "a" / f"{name}.parquet" for name in activations.OUTPUT_FILES}
    activations.dump(tmp / "model", {"test": tmp / "tokens.parquet"}, outputs, CLASSES, settings, top_keys=5)
    return tmp, outputs


def test_dump_agreement_finds_a_planted_difference(tiny_dump):
    tmp, a = tiny_dump
    shutil.copytree(tmp / "a", tmp / "b")
    b = {name: tmp / "b" / path.name for name, path in a.items()}
    assert max(gpu_check.dump_agreement(a, b).values()) == 0
    table = pq.read_table(b["summary"])
    means = to_matrix(table.column("mean_vec")).astype(np.float32)
    scale = np.abs(means).max()
    means[3, 5] += 0.25 * scale
    column = table.schema.get_field_index("mean_vec")
    pq.write_table(table.set_column(column, "mean_vec", fixed_size_list(means, pa.float32())), b["summary"])
    agreement = gpu_check.dump_agreement(b, a)
    assert agreement["summary.mean_vec"] == pytest.approx(0.25, rel=1e-3)
    assert agreement["summary.sum_unit"] == 0 and agreement["tokens.vectors"] == 0


def test_gpu_check_runs_on_the_cpu(tmp_path):
    out = tmp_path / "gpu_check.json"
    command = [sys.executable, str(ROOT / "benchmarks/gpu_check.py"), "--device", "cpu", "--preset", "tiny", "--steps", "1",
               "--warmup", "1", "--batch-sizes", "2", "--threads", "1", "--rehearsal-sequences", "8", "--out", str(out)]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True, text=True, cwd=ROOT / "benchmarks", timeout=300)
    result = json.loads(out.read_text())
    assert len(result["rows"]) == 2 and all(row["tokens_per_s"] > 0 for row in result["rows"])
    assert result["rows"][0]["mfu"] is None  # no peak on a CPU
    check = result["rehearsal"]
    assert check["dump_cpu_sequences_per_s"] > 0 and check["stats_seconds"] > 0
    assert max(check["agreement"].values()) < 1e-6  # the CPU twice: the same numbers
