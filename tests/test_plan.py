"""`bertgeom plan` (issue 17 item 3): workload, FLOPs, projection arithmetic, disk warning, CLI."""

from __future__ import annotations

import json

import pytest
from workflow import ROOT

from bertgeom import plan
from bertgeom.cli import main
from bertgeom.config import load_config

CAL = {
    "train_flops_per_s": 1e11, "forward_flops_per_s": 2e11, "params_per_matmul_param": 1.5,
    "train_fixed_bytes_per_param": 16.0, "train_bytes_per_sample": 1e9, "checkpoint_bytes_per_param": 12.0,
    "forward_peak_bytes": 2e9, "dump_s_per_seq": 3.0, "dump_s_per_subset_seq": 5.0, "dump_bytes_per_seq": 1e6,
    "dump_bytes_per_subset_seq": 6e7, "dump_peak_bytes": 3e9, "cone_index_s_per_subset_seq": 1.0,
    "cone_index_peak_bytes": 1e9, "directionality_s_per_subset_seq": 2.0, "directionality_peak_bytes": 1e9,
    "null_model_fewest_s_per_subset_seq": 1.0, "null_model_default_s_per_subset_seq": 20.0,
    "attention_patterns_fewest_s_per_subset_seq": 2.0, "attention_patterns_default_s_per_subset_seq": 40.0,
    "null_model_peak_bytes": 1e9, "attention_patterns_peak_bytes": 1e9,
    "real_tokens": 427, "job_startup_s": 0.0, "cone_index_fixed_s": 0.0, "directionality_fixed_s": 0.0, "null_model_fixed_s": 0.0,
    "attention_patterns_fixed_s": 0.0,
    "nulls": {"fewest": {"row_draws": 10, "permutations": 1}, "default": {"row_draws": 100, "permutations": 20}},
}  # fmt: skip


def test_flops_of_bert_base():
    """bert-base at 512 tokens: 85M matmul weights (12 x (4 h^2 + 2 h 4h)), forward 2 N T + 4 L T^2 h."""
    shape = plan.Shape(12, 768, 12, 3072, 512)
    assert shape.matmul_params() == 12 * 12 * 768**2 == 84_934_656
    assert shape.forward_flops() == pytest.approx(2 * 84_934_656 * 512 + 4 * 12 * 512**2 * 768)
    assert plan.flops_per_token(shape, 512) * 512 == pytest.approx(3 * shape.forward_flops())


def test_paper_workload():
    """paper.yaml: 8 classes x 6,200 (NCBI upper bound), the tokens stage's split sizes, base shape."""
    work = plan.workload(load_config(ROOT / "config/paper.yaml"), ROOT)
    assert sum(work.splits.values()) == 8 * 6200
    assert work.splits["test"] == 9920 and work.dumped == work.splits["test"]  # ceil(0.2 x 49,600)
    assert (work.shape.layers, work.shape.hidden, work.shape.length) == (12, 768, 512)
    assert work.subset == 8 * 2 and work.seeds == 1 and work.epochs == 2
    # open set: the training and validation splits, then fresh and calibration genomes per class and
    # 30 per `threshold` lineage (7 in resources/variants.yaml); the test split, 30 per `evaluation`
    # lineage (8), 30 shuffled spikes, 30 random sequences and the reference
    assert work.open_fit == work.splits["train"] + work.splits["val"] + 8 * (30 + 100) + 30 * 7
    assert work.open_eval == work.splits["test"] + 30 * 8 + 2 * 30 + 1


def test_projection_arithmetic():
    work = plan.Workload(plan.Shape(12, 768, 12, 3072, 512), {"train": 100, "val": 10, "test": 20}, 2, 3, 4, 20, 4, False, 20, 8)
    stages = {s.name: s for s in plan.project(work, CAL, 1000.0, 0.5)}
    fwd = work.shape.forward_flops()
    assert stages["train"].flops == pytest.approx(3 * (3 * fwd * 100 + fwd * 10))
    assert stages["train"].cpu_s == pytest.approx(stages["train"].flops / 1e11)
    assert stages["train"].gpu_s == pytest.approx(stages["train"].flops / 5e14)
    assert stages["evaluate"].cpu_s == pytest.approx(20 * fwd / 1e11)  # one thread: the training rate
    assert stages["dump_activations"].cpu_s == pytest.approx(20 * 3.0 + 4 * 5.0)
    # class_attention: a float32 matrix of the real tokens per (class, layer, head)
    assert stages["dump_activations"].disk == pytest.approx(20 * 1e6 + 4 * 6e7 + 8 * 144 * 427**2 * 4)
    assert stages["attention_patterns"].cpu_s == pytest.approx(4 * 40.0)  # default nulls
    assert stages["train"].runs == 2 and stages["null_model"].runs == 1
    late = {s.name: s for s in plan.project(work, {**CAL, "job_startup_s": 7.0}, 1000.0, 0.5)}
    assert all(late[name].cpu_s == pytest.approx(stages[name].cpu_s + 7.0) for name in stages)
    # outlier exposure adds half a batch of background genomes to every training step
    more = {s.name: s for s in plan.project(plan.Workload(**{**vars(work), "outlier": True}), CAL, 1000.0, 0.5)}
    assert more["train"].flops == pytest.approx(3 * (3 * fwd * 150 + fwd * 10))


def test_nulls_cost_is_interpolated_in_the_permutations():
    assert plan.nulls_cost(CAL, "null_model", 1) == pytest.approx(1.0)
    assert plan.nulls_cost(CAL, "null_model", 20) == pytest.approx(20.0)
    assert plan.nulls_cost(CAL, "null_model", 39) == pytest.approx(39.0)


def test_disk_warning(tmp_path, monkeypatch):
    assert plan.disk_warning(1.0, tmp_path / "results") is None  # a missing results/ is checked at its parent
    monkeypatch.setattr(plan, "free_bytes", lambda path: 10 * 2**30)
    message = plan.disk_warning(20 * 2**30, tmp_path / "results")
    assert "20.0 GiB" in message and "10.0 GiB" in message and "results" in message


def test_cli_prints_every_stage_and_warns(tmp_path, monkeypatch, capsys):
    calibration = tmp_path / "cal.json"
    calibration.write_text(json.dumps(CAL))
    monkeypatch.setattr(plan, "free_bytes", lambda path: 1)
    assert main(["plan", "--configfile", str(ROOT / "config/paper.yaml"), "--calibration", str(calibration), "--gpu", "H200"]) == 0
    out = capsys.readouterr().out
    for stage in ("train", "evaluate", "open_set_fit", "open_set", "dump_activations", "null_model", "attention_patterns", "cone_index", "directionality"):
        assert any(line.startswith(stage) for line in out.splitlines())
    assert "H200" in out and "assumed MFU of 40%" in out and "warning: the projected outputs" in out


def test_cli_bad_input(tmp_path, capsys):
    assert main(["plan", "--configfile", str(ROOT / "config/paper.yaml"), "--gpu", "K80"]) == 1
    assert "--gpu 'K80'" in capsys.readouterr().err
    assert main(["plan", "--configfile", str(ROOT / "config/paper.yaml"), "--mfu", "1.5"]) == 2
    config = tmp_path / "c.yaml"
    config.write_text("model: {init: pretrained, pretrained: some/unknown-model}\n")
    assert main(["plan", "--configfile", str(config), "--calibration", str(tmp_path / "none.json")]) == 1
    assert "model.pretrained 'some/unknown-model'" in capsys.readouterr().err


def test_workflow_start_warns_when_the_disk_is_short(tmp_path, monkeypatch):
    """The Snakefile's onstart calls this with the run's config: silent when the outputs fit."""
    calibration = tmp_path / "cal.json"
    calibration.write_text(json.dumps(CAL))
    monkeypatch.setattr(plan, "CALIBRATION", calibration)
    config = load_config(ROOT / "config/tiny.yaml")
    assert plan.workflow_disk_warning(config, ROOT, tmp_path / "results") is None
    monkeypatch.setattr(plan, "free_bytes", lambda path: 1)
    assert plan.workflow_disk_warning(config, ROOT, tmp_path / "results").startswith("warning: the projected outputs")
