"""The open-set stage in the workflow (rules/openset.smk), read from the shared tiny run: background
genomes reach training, every model directory gets its open set and model card, the evaluation has one
row per type of genome, and `bertgeom predict` agrees with it.

The tiny model (1 epoch of 8 x 12 genomes) is near chance, so these tests check the wiring and the
agreement between the stages, not the quality of the open set (test_predict checks that on a model
that learned its classes; the default run's results/open_set/seed{seed}/summary.tsv measures it)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml
from sklearn.metrics import roc_auc_score
from workflow import TINY

from bertgeom.cli import main
from bertgeom.data.outofclass import control_sequences, out_of_class_definitions
from bertgeom.openset import OpenSet

pytestmark = pytest.mark.slow
CONFIG = yaml.safe_load(TINY.read_text())
SEEDS, CLASSES = CONFIG["train"]["seeds"], CONFIG["classes"]


def evaluation_types(root) -> list[str]:
    lineages = out_of_class_definitions(root / "resources/variants.yaml", CLASSES, "evaluation")
    return ["test (in class)"] + [entry["name"] for entry in lineages] + ["reference", "shuffled", "random"]


def test_background_genomes_reach_training(tiny_run):
    background = pq.read_table(tiny_run / "results/tokens/background.parquet").to_pandas()
    assert 0 < len(background) <= CONFIG["data"]["background"]["n"]
    assert set(background["type"]) == {"background"} and set(background["label"]) == {-1}
    for seed in SEEDS:
        info = json.loads((tiny_run / f"results/models/seed{seed}/training_info.json").read_text())
        assert info["n_background"] == len(background) and info["config"]["train"]["outlier_weight"] == 0.5


def test_every_model_directory_has_its_open_set_and_card(tiny_run):
    for seed in SEEDS:
        model_dir = tiny_run / f"results/models/seed{seed}"
        open_set = OpenSet.load(model_dir / "open_set.json", model_dir / "open_set.safetensors")
        assert open_set.classes == CLASSES and np.isfinite(open_set.threshold) and open_set.temperature > 0
        assert open_set.means.shape[:2] == (2, len(CLASSES))  # tiny preset: [layer, class, hidden]
        assert open_set.report["n_in_class"] > 0 and len(open_set.report["threshold_lineages"]) == 7
        card = (model_dir / "README.md").read_text()
        assert ", ".join(f"{i} {c}" for i, c in enumerate(CLASSES)) in card
        assert f"**{open_set.threshold:.3f}**" in card and "| B.1.525 |" in card


def test_open_set_table_has_one_row_per_type_and_its_aurocs(tiny_run, root):
    types = evaluation_types(root)
    for seed in SEEDS:
        summary = pd.read_csv(tiny_run / f"results/open_set/seed{seed}/summary.tsv", sep="\t").set_index("type")
        scores = pd.read_parquet(tiny_run / f"results/open_set/seed{seed}/scores.parquet")
        assert summary.index.tolist() == types
        assert summary["n"].tolist() == [int((scores["type"] == t).sum()) for t in types]
        inside = scores[scores["group"] == "in_class"]
        for kind in ("B.1.525", "reference"):
            part = scores[scores["type"] == kind]
            truth = np.r_[np.zeros(len(inside)), np.ones(len(part))]
            want = roc_auc_score(truth, np.r_[inside["ood_score"], part["ood_score"]])
            assert summary.loc[kind, "auroc"] == pytest.approx(want)
        # random sequences are far from every class, even for a model near chance
        assert summary.loc[["random", "shuffled"], "unassigned"].tolist() == [1.0, 1.0]
        assert np.isnan(summary.loc["test (in class)", "auroc"])
        calibration = json.loads((tiny_run / f"results/open_set/seed{seed}/calibration.json").read_text())
        made = len(pq.read_table(tiny_run / "results/open_set/genomes/calibration.parquet"))
        assert made <= CONFIG["open_set"]["calibration"]["per_class"] * len(CLASSES)  # some fail QC (N runs)
        assert calibration["calibration_check"]["n"] == made // 2  # the odd rows; the even ones fit T
    table = pd.read_csv(tiny_run / "results/figures/open_set_table.tsv", sep="\t")
    assert table["type"].tolist() == types and {f"unassigned seed {s}" for s in SEEDS} <= set(table)


def test_predict_agrees_with_the_open_set_rule(tiny_run, root, tmp_path, capsys):
    """The reference genome gets the ood_score the workflow's evaluation gave it, and `unassigned`
    exactly when that score is above the stored threshold; random sequences never get a class."""
    model_dir = tiny_run / "results/models/seed0"
    records = list(control_sequences(root / "resources/NC_045512.2.fasta", 2, seed=9))
    fasta = tmp_path / "in.fasta"
    fasta.write_text("".join(f">{i}\n{s}\n" for i, s, f in records if f["type"] in ("reference", "random")))
    out = tmp_path / "out.tsv"
    assert main(["predict", "--model", str(model_dir), "--fasta", str(fasta), "--out", str(out), "--quiet"]) == 0
    rows = pd.read_csv(out, sep="\t", keep_default_na=False).set_index("seq_id")
    scores = pd.read_parquet(tiny_run / "results/open_set/seed0/scores.parquet").set_index("seq_id")
    threshold = OpenSet.load(model_dir / "open_set.json").threshold
    reference = rows.loc["control-reference"]
    assert reference["status"] == "pass"
    assert float(reference["ood_score"]) == pytest.approx(scores.loc["control-reference", "ood_score"], rel=1e-6)
    assert (reference["prediction"] == "unassigned") == (float(reference["ood_score"]) > threshold)
    assert reference["prediction"] == scores.loc["control-reference", "prediction"]
    random = rows[rows.index.str.startswith("control-random")]
    assert len(random) == 2 and set(random["status"]) == {"reject"} and set(random["prediction"]) == {""}
    assert "2 rejected (missing_spike 2)" in capsys.readouterr().err
