"""Per-seed evaluation of a trained classifier on the test split: predictions and metrics.

predictions.parquet: one row per test sequence (seq_id, label, pred, prob [classes], class names).
metrics.json: accuracy, macro/micro/weighted F1, per-class precision, recall, F1, specificity and
support, the confusion matrix (rows = true class, columns = predicted class), class names.
Specificity of class c = TN / (TN + FP), from the confusion matrix C:
FP = column sum - C[c, c], TN = N - row sum - column sum + C[c, c].
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

from bertgeom import io
from bertgeom.model import load_model, predict_probs, select_device
from bertgeom.train import load_split

log = logging.getLogger("bertgeom.evaluate")


def classification_metrics(labels: np.ndarray, pred: np.ndarray, classes: list[str]) -> dict:
    """Metrics of predicted labels against true labels (both int [N], values in 0..len(classes)-1).

    Every class appears in the per-class table and the confusion matrix, present or not; a
    precision/recall with an empty denominator is 0 (scikit-learn's zero_division=0).
    """
    labels, pred = np.asarray(labels), np.asarray(pred)
    index = list(range(len(classes)))
    matrix = confusion_matrix(labels, pred, labels=index)
    precision, recall, f1, support = precision_recall_fscore_support(labels, pred, labels=index, zero_division=0)
    fp = matrix.sum(axis=0) - np.diag(matrix)
    tn = matrix.sum() - matrix.sum(axis=1) - matrix.sum(axis=0) + np.diag(matrix)
    specificity = np.divide(tn, tn + fp, out=np.zeros(len(classes)), where=(tn + fp) > 0)
    average = {
        f"{kind}_f1": float(f1_score(labels, pred, labels=index, average=kind, zero_division=0))
        for kind in ("macro", "micro", "weighted")
    }
    return {
        "n": int(len(labels)),
        "accuracy": float(accuracy_score(labels, pred)),
        **average,
        "classes": list(classes),
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "specificity": float(specificity[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(classes)
        },
        "confusion_matrix": matrix.tolist(),
    }


def predictions_table(seq_ids: list[str], labels: np.ndarray, probs: np.ndarray, classes: list[str]) -> pa.Table:
    """seq_id, label, pred (int16), prob (fixed_size_list<float32>[classes]), class, pred_class."""
    pred = probs.argmax(axis=1)
    names = np.asarray(classes, dtype=object)
    return pa.table(
        {
            "seq_id": pa.array(seq_ids, pa.string()),
            "label": pa.array(labels, pa.int16()),
            "pred": pa.array(pred, pa.int16()),
            "prob": io.fixed_size_list(probs.astype(np.float32), pa.float32()),
            "class": pa.array(names[labels].tolist(), pa.string()),
            "pred_class": pa.array(names[pred].tolist(), pa.string()),
        }
    )


def evaluate_split(
    model_dir: str | Path,
    tokens_path: str | Path,
    classes: list[str],
    batch_size: int = 32,
    device: str = "auto",
) -> tuple[pa.Table, dict]:
    """(predictions table, metrics) of the model in `model_dir` on one tokens parquet."""
    model = load_model(model_dir, select_device(device, "config train.device"))
    names = [model.config.id2label[i] for i in range(model.config.num_labels)]
    if names != list(classes):
        raise ValueError(f"{model_dir}: model classes {names} differ from config classes {list(classes)}")
    split = load_split(tokens_path, len(classes))
    probs = predict_probs(model, split.ids, split.n_tokens, batch_size, next(model.parameters()).device).numpy()
    table = predictions_table(split.seq_ids, split.labels.numpy(), probs, classes)
    metrics = classification_metrics(split.labels.numpy(), probs.argmax(axis=1), classes)
    return table, {"split": Path(tokens_path).stem, "model_dir": str(model_dir), **metrics}


def evaluate(
    model_dir: str | Path,
    test: str | Path,
    predictions_out: str | Path,
    metrics_out: str | Path,
    classes: list[str],
    batch_size: int = 32,
    device: str = "auto",
) -> dict:
    """Rule evaluate: predictions.parquet and metrics.json of one model on the test split."""
    table, metrics = evaluate_split(model_dir, test, classes, batch_size, device)
    meta = io.provenance({"classes": classes}, model_dir, split="test")
    io.write_parquet(table, predictions_out, meta)
    io.write_json(metrics_out, {**metrics, "provenance": meta})
    log.info(
        "%s on the test split: accuracy %.4f, macro-F1 %.4f over %d sequences",
        model_dir,
        metrics["accuracy"],
        metrics["macro_f1"],
        metrics["n"],
    )
    return metrics
