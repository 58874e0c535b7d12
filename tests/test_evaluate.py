"""Evaluation: metrics against hand-computed values and scikit-learn; the predictions file agrees
with the model's own (untrimmed) forward pass."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from sklearn.metrics import classification_report
from test_train import CLASSES, MAX_LENGTH, make_config, make_tokens

from bertgeom import io
from bertgeom.evaluate import classification_metrics, evaluate_split
from bertgeom.model import build_model
from bertgeom.train import load_split

# 8 sequences of classes a, b, c; class d has no sequence and is never predicted.
LABELS = np.array([0, 0, 0, 1, 1, 2, 2, 2])
PRED = np.array([0, 0, 1, 1, 2, 2, 2, 0])
NAMES = ["a", "b", "c", "d"]


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)


def test_metrics_by_hand():
    m = classification_metrics(LABELS, PRED, NAMES)
    # Confusion matrix, rows = true class, columns = predicted class.
    assert m["confusion_matrix"] == [[2, 1, 0, 0], [0, 1, 1, 0], [1, 0, 2, 0], [0, 0, 0, 0]]
    assert m["n"] == 8 and m["accuracy"] == pytest.approx(5 / 8) and m["micro_f1"] == pytest.approx(5 / 8)
    a, b, c, d = (m["per_class"][name] for name in NAMES)
    assert (a["precision"], a["recall"], a["f1"]) == pytest.approx((2 / 3, 2 / 3, 2 / 3))
    assert (b["precision"], b["recall"], b["f1"]) == pytest.approx((1 / 2, 1 / 2, 1 / 2))
    assert (c["precision"], c["recall"], c["f1"]) == pytest.approx((2 / 3, 2 / 3, 2 / 3))
    # Specificity TN / (TN + FP): a: TN 4 (rows b, c without column a), FP 1 (c predicted a).
    assert [x["specificity"] for x in (a, b, c, d)] == pytest.approx([4 / 5, 5 / 6, 4 / 5, 1.0])
    assert [x["support"] for x in (a, b, c, d)] == [3, 2, 3, 0]
    assert (d["precision"], d["recall"], d["f1"]) == (0.0, 0.0, 0.0)
    assert m["macro_f1"] == pytest.approx((2 / 3 + 1 / 2 + 2 / 3 + 0) / 4)


def test_metrics_agree_with_sklearn_report():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 4, 200)
    pred = np.where(rng.random(200) < 0.7, labels, rng.integers(0, 4, 200))
    m = classification_metrics(labels, pred, NAMES)
    report = classification_report(labels, pred, labels=range(4), target_names=NAMES, output_dict=True, zero_division=0)
    for name in NAMES:
        for key in ("precision", "recall"):
            assert m["per_class"][name][key] == pytest.approx(report[name][key])
        assert m["per_class"][name]["f1"] == pytest.approx(report[name]["f1-score"])
        assert m["per_class"][name]["support"] == report[name]["support"]
    assert m["macro_f1"] == pytest.approx(report["macro avg"]["f1-score"])
    assert m["weighted_f1"] == pytest.approx(report["weighted avg"]["f1-score"])
    assert m["accuracy"] == pytest.approx(report["accuracy"])
    json.dumps(m)  # plain JSON types only


def test_predictions_match_the_model(tmp_path):
    tokenizer = make_tokens(tmp_path / "tokens")
    model = build_model(make_config()["model"], CLASSES, tokenizer, seed=0)
    model.save_pretrained(tmp_path / "model")
    table, metrics = evaluate_split(
        tmp_path / "model", tmp_path / "tokens" / "test.parquet", CLASSES, batch_size=5, device="cpu"
    )

    split = load_split(tmp_path / "tokens" / "test.parquet", len(CLASSES))
    mask = (torch.arange(MAX_LENGTH)[None, :] < split.n_tokens[:, None]).long()
    with torch.no_grad():
        expected = torch.softmax(model.eval()(input_ids=split.ids.long(), attention_mask=mask).logits, -1).numpy()
    prob = io.to_matrix(table["prob"])
    np.testing.assert_allclose(prob, expected, atol=1e-5)
    np.testing.assert_allclose(prob.sum(1), 1.0, atol=1e-5)
    assert table["pred"].to_numpy().tolist() == expected.argmax(1).tolist()
    assert table["seq_id"].to_pylist() == split.seq_ids
    assert table.schema.field("prob").type.list_size == len(CLASSES)
    assert metrics["accuracy"] == pytest.approx(float((expected.argmax(1) == split.labels.numpy()).mean()))
    assert metrics["split"] == "test" and sum(map(sum, metrics["confusion_matrix"])) == len(split)

    io.write_parquet(table, tmp_path / "predictions.parquet")
    assert pq.read_table(tmp_path / "predictions.parquet").equals(table)

    with pytest.raises(ValueError, match="differ from config classes"):
        evaluate_split(tmp_path / "model", tmp_path / "tokens" / "test.parquet", ["x", "y", "z"], device="cpu")
    with pytest.raises(FileNotFoundError, match="not a trained model directory"):
        evaluate_split(tmp_path / "tokens", tmp_path / "tokens" / "test.parquet", CLASSES, device="cpu")
