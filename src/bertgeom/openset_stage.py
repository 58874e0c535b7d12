"""Stage open_set: fit the open-set threshold and the temperature of a model, and evaluate them.

`fit_open_set` (per model) writes open_set.json into the model directory: class means and shared
covariance from the training split, the threshold from the validation split plus the `threshold`
out-of-class genomes, the temperature from half of the hard calibration genomes (the other half
measures it). `evaluate_open_set` scores the test split plus the `evaluation` out-of-class genomes and
the controls, and writes one row per sequence and one row per out-of-class type (AUROC of the
ood_score against the test split, share unassigned at the stored threshold). Formulas:
bertgeom.openset. Shuffled spikes and random sequences are scored as they are, without spike
extraction (QC would reject them before the model: this measures the detector itself).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd
import torch

from bertgeom.data.spike import SpikeExtractor
from bertgeom.model import load_model
from bertgeom.openset import (
    OPEN_SET_FILE,
    OpenSet,
    answer,
    choose_threshold,
    layer_features,
    expected_calibration_error,
    fit_layers,
    fit_temperature,
    nll,
    reliability,
    softmax,
)
from bertgeom.tokens import KmerTokenizer
from bertgeom.train import load_split

log = logging.getLogger("bertgeom.openset")
BARE_TYPES = ("shuffled", "random")  # scored without spike extraction


def spikes_of(records: Iterable[tuple[str, str, dict]], extractor: SpikeExtractor, max_nt: int) -> pd.DataFrame:
    """One row per record with a usable spike: seq_id, spike, and the record's fields; rejects are logged."""
    rows, rejected = [], {}
    for seq_id, sequence, fields in records:
        if fields.get("type") in BARE_TYPES:
            rows.append({"seq_id": seq_id, "spike": sequence, **fields})
            continue
        res = extractor.extract(seq_id, sequence)
        if res.status == "pass" and res.length <= max_nt:
            rows.append({"seq_id": seq_id, "spike": res.sequence, **fields})
        else:
            reason = res.reason or "too_long"
            rejected[reason] = rejected.get(reason, 0) + 1
    if rejected:
        log.info("records without a usable spike (left out): %s", rejected)
    return pd.DataFrame(rows)


def encode_and_run(model, tokenizer: KmerTokenizer, spikes: list[str], batch_size: int, device) -> tuple:
    """(features [N, hidden], logits [N, classes]) of spike sequences."""
    ids, n_tokens = tokenizer.encode(spikes)
    return layer_features(model, torch.from_numpy(ids), torch.from_numpy(n_tokens).long(), batch_size, device)


def split_outputs(model, path: str | Path, n_classes: int, batch_size: int, device) -> tuple:
    """(features, logits, labels) of a tokens parquet split."""
    split = load_split(path, n_classes)
    features, logits = layer_features(model, split.ids, split.n_tokens, batch_size, device)
    return features, logits, split.labels.numpy()


def fit_open_set(
    model_dir: str | Path,
    train_tokens: str | Path,
    val_tokens: str | Path,
    threshold_records: Iterable[tuple[str, str, dict]],
    calibration_records: Iterable[tuple[str, str, dict]],
    reference: str | Path,
    out_path: str | Path | None = None,
    qc: dict | None = None,
    batch_size: int = 32,
    device: str = "cpu",
    in_class_records: Iterable[tuple[str, str, dict]] = (),
    max_false_unassigned: float = 0.01,
) -> OpenSet:
    """Fit and write open_set.json (default: in model_dir). qc: SpikeExtractor options (config qc).

    in_class_records: fresh in-class genomes (never trained on) that join the validation split in
    choosing the threshold. Calibration records carry their class index as `label`.
    """
    model_dir = Path(model_dir)
    model, tokenizer = load_model(model_dir, device), KmerTokenizer.load(model_dir)
    classes = [model.config.id2label[i] for i in range(model.config.num_labels)]
    extractor = SpikeExtractor(reference, **(qc or {}))
    max_nt = (tokenizer.max_length - 3) * tokenizer.stride + tokenizer.k
    train_x, _, train_y = split_outputs(model, train_tokens, len(classes), batch_size, device)
    means, precision = fit_layers(train_x, train_y, len(classes))
    open_set = OpenSet(classes, means, precision, threshold=float("inf"))
    val_x, val_logits, val_y = split_outputs(model, val_tokens, len(classes), batch_size, device)
    outside = spikes_of(threshold_records, extractor, max_nt)
    out_x, _ = encode_and_run(model, tokenizer, outside["spike"].tolist(), batch_size, device)
    fresh = spikes_of(in_class_records, extractor, max_nt)
    in_x = val_x
    if len(fresh):
        in_x = np.concatenate([val_x, encode_and_run(model, tokenizer, fresh["spike"].tolist(), batch_size, device)[0]])
    in_scores, out_scores = open_set.scores(in_x).min(1), open_set.scores(out_x).min(1)
    threshold, report = choose_threshold(in_scores, out_scores, max_false_unassigned)
    report["threshold_lineages"] = sorted(outside["type"].unique().tolist())
    calibration = spikes_of(calibration_records, extractor, max_nt)
    cal_x, cal_logits = encode_and_run(model, tokenizer, calibration["spike"].tolist(), batch_size, device)
    cal_y = calibration["label"].to_numpy().astype(int)
    fit, check = np.arange(len(cal_y)) % 2 == 0, np.arange(len(cal_y)) % 2 == 1
    if (cal_logits[fit].argmax(1) == cal_y[fit]).all():
        temperature = 1.0  # no error to calibrate on: NLL falls without bound as T -> 0
        log.warning("every calibration genome is classified right: temperature left at 1 (not identifiable)")
    else:
        temperature = fit_temperature(cal_logits[fit], cal_y[fit])
    report["calibration"] = calibration_report(cal_logits[check], cal_y[check], temperature)
    report["calibration"].update(n_fit=int(fit.sum()), n_check=int(check.sum()))
    open_set = OpenSet(classes, means, precision, threshold, temperature, report=report)
    open_set.save(out_path or model_dir / OPEN_SET_FILE)
    log.info("open set: threshold %.3f (%s), temperature %.3f", threshold, report, temperature)
    return open_set


def calibration_report(logits: np.ndarray, labels: np.ndarray, temperature: float) -> dict:
    """NLL, ECE and accuracy of softmax(logits) and softmax(logits / T) on held-out sequences."""
    before, after = softmax(logits), softmax(logits / temperature)
    return {
        "temperature": temperature,
        "accuracy": float((before.argmax(1) == labels).mean()) if len(labels) else float("nan"),
        "nll_before": nll(logits, labels) if len(labels) else float("nan"),
        "nll_after": nll(logits / temperature, labels) if len(labels) else float("nan"),
        "ece_before": expected_calibration_error(before, labels),
        "ece_after": expected_calibration_error(after, labels),
    }


def evaluate_open_set(
    model_dir: str | Path,
    test_tokens: str | Path,
    eval_records: Iterable[tuple[str, str, dict]],
    reference: str | Path,
    open_set_path: str | Path | None = None,
    qc: dict | None = None,
    batch_size: int = 32,
    device: str = "cpu",
) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """(per-sequence table, per-type summary, calibration on the test split) of the test split and the
    out-of-class genomes. The calibration dict has calibration_report's numbers and `reliability`
    (per confidence bin, before and after temperature scaling: the reliability diagram's data)."""
    from sklearn.metrics import roc_auc_score

    model_dir = Path(model_dir)
    model, tokenizer = load_model(model_dir, device), KmerTokenizer.load(model_dir)
    open_set = OpenSet.load(open_set_path or model_dir / OPEN_SET_FILE)
    classes = open_set.classes
    max_nt = (tokenizer.max_length - 3) * tokenizer.stride + tokenizer.k
    test_x, test_logits, test_y = split_outputs(model, test_tokens, len(classes), batch_size, device)
    outside = spikes_of(eval_records, SpikeExtractor(reference, **(qc or {})), max_nt)
    out_x, out_logits = encode_and_run(model, tokenizer, outside["spike"].tolist(), batch_size, device)
    rows = []
    for group, x, logits, types, truth in (
        ("in_class", test_x, test_logits, ["test"] * len(test_y), [classes[y] for y in test_y]),
        ("out_of_class", out_x, out_logits, outside["type"].tolist(), [""] * len(outside)),
    ):
        got = answer(open_set, x, logits)
        for i in range(len(types)):
            rows.append(
                {
                    "group": group,
                    "type": types[i],
                    "true_class": truth[i],
                    "closest_class": classes[got.closest[i]],
                    "prediction": classes[got.closest[i]] if got.assigned[i] else "unassigned",
                    "probability": float(got.probs[i].max()),
                    "ood_score": float(got.ood_score[i]),
                }
            )
    table = pd.DataFrame(rows)
    inside = table[table["group"] == "in_class"]
    summary = [
        {
            "type": "test (in class)",
            "n": len(inside),
            "auroc": float("nan"),
            "unassigned": float((inside["prediction"] == "unassigned").mean()),
            "correct": float((inside["prediction"] == inside["true_class"]).mean()),
        }
    ]
    for kind, part in table[table["group"] == "out_of_class"].groupby("type", sort=False):
        scores = np.concatenate([inside["ood_score"], part["ood_score"]])
        truth = np.r_[np.zeros(len(inside)), np.ones(len(part))]
        summary.append(
            {
                "type": kind,
                "n": len(part),
                "auroc": float(roc_auc_score(truth, scores)),
                "unassigned": float((part["prediction"] == "unassigned").mean()),
                "correct": float("nan"),
            }
        )
    calibration = calibration_report(test_logits, test_y, open_set.temperature)
    calibration["reliability_before"] = reliability(softmax(test_logits), test_y)
    calibration["reliability_after"] = reliability(softmax(test_logits / open_set.temperature), test_y)
    return table, pd.DataFrame(summary), calibration
