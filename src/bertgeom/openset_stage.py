"""Rules open_set_fit and open_set: fit the open-set threshold and the temperature of a model, and evaluate them.

`fit_open_set` (rule open_set_fit, per model) writes open_set.json + open_set.safetensors into the model
directory: class means and shared covariances from the training split, the threshold from the
validation split plus the `fresh` in-class genomes against the `threshold` out-of-class genomes, the
temperature from the even rows of the hard `calibration` genomes (the odd rows measure it).
`evaluate_open_set` (rule open_set) scores the test split and the `evaluation` genomes (out-of-class
lineages and controls) and writes one row per sequence, one row per type (AUROC of the ood_score
against the test split, shares unassigned and correct at the stored threshold) and the calibration
before and after temperature scaling (NLL, ECE, reliability bins) on the test split and on the held-out
calibration genomes. The genome sets are tokens parquets of bertgeom.genome_sets; formulas:
bertgeom.openset.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from bertgeom.io import provenance, write_json, write_parquet, write_text
from bertgeom.model import load_model
from bertgeom.openset import (
    OpenSet,
    answer,
    choose_threshold,
    expected_calibration_error,
    fit_layers,
    fit_temperature,
    layer_features,
    nll,
    reliability,
    softmax,
)
from bertgeom.train import load_split, select_device

log = logging.getLogger("bertgeom.openset")
PathLike = str | Path
SUMMARY_COLUMNS = ["group", "type", "n", "auroc", "unassigned", "correct"]
TEST_TYPE = "test (in class)"


def set_outputs(model, path: PathLike, n_classes: int, batch_size: int, labelled: bool = True) -> dict:
    """Features [N, layer, hidden], logits [N, classes], labels [N], seq_ids and types of a tokens parquet."""
    split = load_split(path, n_classes, labelled)
    device = next(model.parameters()).device
    features, logits = layer_features(model, split.ids, split.n_tokens, batch_size, device)
    names = pq.read_schema(path).names
    types = pq.read_table(path, columns=["type"])["type"].to_pylist() if "type" in names else ["test"] * len(split)
    return {"x": features, "logits": logits, "y": split.labels.numpy(), "seq_ids": split.seq_ids, "types": types}


def calibration_halves(n: int) -> tuple[np.ndarray, np.ndarray]:
    """(fit, check) masks of the calibration genomes: even rows fit the temperature, odd rows measure it."""
    fit = np.arange(n) % 2 == 0
    return fit, ~fit


def fit_open_set(
    model_dir: PathLike,
    train: PathLike,
    val: PathLike,
    threshold: PathLike,
    fresh: PathLike,
    calibration: PathLike,
    open_set_out: PathLike,
    tensors_out: PathLike,
    max_false_unassigned: float,
    batch_size: int = 32,
    device: str = "cpu",
) -> OpenSet:
    """Rule open_set_fit: fit and write open_set.json (+ its tensors file, in the same directory).

    train, val: the model's tokens splits; threshold, fresh, calibration: the open_set_genomes sets.
    """
    model = load_model(model_dir, select_device(device))
    classes = [model.config.id2label[i] for i in range(model.config.num_labels)]
    n = len(classes)
    fitted = set_outputs(model, train, n, batch_size)
    means, precision = fit_layers(fitted["x"], fitted["y"], n)
    open_set = OpenSet(classes, means, precision, threshold=float("inf"))
    inside = [set_outputs(model, path, n, batch_size)["x"] for path in (val, fresh)]
    outside = set_outputs(model, threshold, n, batch_size, labelled=False)
    in_scores = open_set.scores(np.concatenate(inside)).min(1)
    chosen, report = choose_threshold(in_scores, open_set.scores(outside["x"]).min(1), max_false_unassigned)
    report["threshold_lineages"] = sorted(set(outside["types"]))
    cal = set_outputs(model, calibration, n, batch_size)
    fit, check = calibration_halves(len(cal["y"]))
    if (cal["logits"][fit].argmax(1) == cal["y"][fit]).all():
        temperature = 1.0  # no error to calibrate on: NLL falls without bound as T -> 0
        log.warning("every calibration genome is classified right: temperature left at 1 (not identifiable)")
    else:
        temperature = fit_temperature(cal["logits"][fit], cal["y"][fit])
    report["calibration"] = calibration_report(cal["logits"][check], cal["y"][check], temperature)
    report["calibration"].update(n_fit=int(fit.sum()), n_check=int(check.sum()))
    open_set = OpenSet(classes, means, precision, chosen, temperature, report=report)
    open_set.save(open_set_out, tensors_out)
    log.info("open set: threshold %.3f (%s), temperature %.3f", chosen, report, temperature)
    return open_set


def calibration_report(logits: np.ndarray, labels: np.ndarray, temperature: float) -> dict:
    """NLL, ECE and accuracy of softmax(logits) and softmax(logits / T) on held-out sequences (NaN if none)."""
    before, after = softmax(logits), softmax(logits / temperature)
    empty = not len(labels)
    return {
        "temperature": temperature,
        "n": int(len(labels)),
        "accuracy": float("nan") if empty else float((before.argmax(1) == labels).mean()),
        "nll_before": float("nan") if empty else nll(logits, labels),
        "nll_after": float("nan") if empty else nll(logits / temperature, labels),
        "ece_before": expected_calibration_error(before, labels),
        "ece_after": expected_calibration_error(after, labels),
    }


def reliability_report(logits: np.ndarray, labels: np.ndarray, temperature: float) -> dict:
    """calibration_report plus the reliability bins before and after temperature scaling (the diagram's data)."""
    report = calibration_report(logits, labels, temperature)
    report["reliability_before"] = reliability(softmax(logits), labels)
    report["reliability_after"] = reliability(softmax(logits / temperature), labels)
    return report


def evaluate_open_set(
    model_dir: PathLike,
    open_set_path: PathLike,
    tensors_path: PathLike | None,
    test: PathLike,
    evaluation: PathLike,
    calibration: PathLike,
    outputs: dict[str, PathLike] | None = None,
    batch_size: int = 32,
    device: str = "cpu",
) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Rule open_set: (one row per sequence, one row per type, calibration {test, calibration_check}) of a
    model; with `outputs` ({scores, summary, calibration}: paths) also written as scores.parquet,
    summary.tsv and calibration.json."""
    model = load_model(model_dir, select_device(device))
    open_set = OpenSet.load(open_set_path, tensors_path)
    classes, n = open_set.classes, len(open_set.classes)
    parts = {
        "in_class": set_outputs(model, test, n, batch_size),
        "out_of_class": set_outputs(model, evaluation, n, batch_size, labelled=False),
    }
    rows = []
    for group, part in parts.items():
        got = answer(open_set, part["x"], part["logits"])
        for i, seq_id in enumerate(part["seq_ids"]):
            closest = classes[got.closest[i]]
            rows.append(
                {
                    "seq_id": seq_id,
                    "group": group,
                    "type": TEST_TYPE if group == "in_class" else part["types"][i],
                    "true_class": classes[part["y"][i]] if group == "in_class" else "",
                    "closest_class": closest,
                    "prediction": closest if got.assigned[i] else "unassigned",
                    "probability": float(got.probs[i].max()),
                    "ood_score": float(got.ood_score[i]),
                }
            )
    table = pd.DataFrame(rows)
    cal = set_outputs(model, calibration, n, batch_size)
    check = calibration_halves(len(cal["y"]))[1]
    calibration_data = {
        "test": reliability_report(parts["in_class"]["logits"], parts["in_class"]["y"], open_set.temperature),
        "calibration_check": reliability_report(cal["logits"][check], cal["y"][check], open_set.temperature),
    }
    summary = summarise(table)
    if outputs:
        meta = provenance(None, model_dir, stage="open_set")
        write_parquet(table, outputs["scores"], meta)
        write_text(outputs["summary"], summary.to_csv(sep="\t", index=False, float_format="%.6g"))
        write_json(outputs["calibration"], {**calibration_data, "provenance": meta})
        log.info("open set of %s:\n%s", model_dir, summary.to_string(index=False))
    return table, summary, calibration_data


def summarise(table: pd.DataFrame) -> pd.DataFrame:
    """One row per type: n, AUROC of ood_score (out-of-class type vs the test split; NaN for the test
    split itself), share unassigned, share correct (in class only; NaN out of class)."""
    from sklearn.metrics import roc_auc_score

    inside = table[table["group"] == "in_class"]
    rows = [
        {
            "group": "in_class",
            "type": TEST_TYPE,
            "n": len(inside),
            "auroc": float("nan"),
            "unassigned": float((inside["prediction"] == "unassigned").mean()),
            "correct": float((inside["prediction"] == inside["true_class"]).mean()),
        }
    ]
    for kind, part in table[table["group"] == "out_of_class"].groupby("type", sort=False):
        truth = np.r_[np.zeros(len(inside)), np.ones(len(part))]
        auroc = roc_auc_score(truth, np.r_[inside["ood_score"], part["ood_score"]]) if len(inside) else float("nan")
        rows.append(
            {
                "group": "out_of_class",
                "type": kind,
                "n": len(part),
                "auroc": float(auroc),
                "unassigned": float((part["prediction"] == "unassigned").mean()),
                "correct": float("nan"),
            }
        )
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
