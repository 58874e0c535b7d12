"""Open-set answers and calibrated probabilities for a trained classifier (stored as open_set.json).

Open set (Lee et al. 2018, "A simple unified framework for detecting out-of-distribution samples and
adversarial attacks", NeurIPS): the final-layer [CLS] vector x of a sequence is compared with the
class means mu_c of the training split under one covariance S shared by all classes (fitted on the
class-centred training vectors with Ledoit-Wolf shrinkage, so that it is invertible for any size):

    ood_score(x) = min_c sqrt((x - mu_c)^T S^-1 (x - mu_c))        (a Mahalanobis distance)

A sequence whose score exceeds the threshold is `unassigned`. The threshold is chosen on in-class
genomes (the validation split, plus fresh synthetic in-class genomes the model never saw) and
out-of-class genomes reserved for that purpose (synthetic genomes of the `use: threshold` lineages of
variants.yaml), never on genomes used to evaluate it: the one that maximises Youden's J = (in-class
accepted share) + (out-of-class rejected share) - 1, at the geometric middle of the interval of
scores where J is largest (the widest margin to both sides), raised if needed so that at most
`max_false_unassigned` of the in-class genomes are unassigned (wrongly calling a genome of a class
`unassigned` costs the user more than a rare false assignment of a lineage like none seen).

Calibration (Guo et al. 2017, "On calibration of modern neural networks", ICML): one temperature T
divides the logits, fitted by minimising the negative log-likelihood on a calibration split that is
harder than the training data (synthetic genomes with bertgeom.data.synthetic.HARD_VARIETY). Its
expected calibration error (ECE) uses 15 equal-width confidence bins.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from bertgeom.io import write_json
from bertgeom.model import trim_batch

OPEN_SET_FILE = "open_set.json"
ECE_BINS = 15


@dataclass
class OpenSet:
    """What `predict` needs besides the model: class means, shared precision, threshold, temperature.

    means: float64 [classes, hidden]; precision: float64 [hidden, hidden] (inverse shared covariance).
    """

    classes: list[str]
    means: np.ndarray
    precision: np.ndarray
    threshold: float
    temperature: float = 1.0
    feature: str = "final-layer [CLS] hidden state (hidden_states[-1][:, 0])"
    method: str = "Mahalanobis distance to the nearest class mean, shared Ledoit-Wolf covariance"
    report: dict = field(default_factory=dict)  # how threshold and temperature were chosen (numbers)

    def scores(self, features: np.ndarray) -> np.ndarray:
        """Mahalanobis distances [N, classes] of features [N, hidden] to every class mean."""
        return mahalanobis(features, self.means, self.precision)

    def save(self, path: str | Path) -> None:
        data = asdict(self)
        data.update(means=self.means.tolist(), precision=self.precision.tolist())
        write_json(path, {"format": "bertgeom open set 1", **data})

    @classmethod
    def load(cls, path: str | Path) -> "OpenSet":
        """Read open_set.json; ValueError naming the file when a key is missing or the shapes disagree."""
        data = json.loads(Path(path).read_text())
        missing = [k for k in ("classes", "means", "precision", "threshold", "temperature") if k not in data]
        if missing:
            raise ValueError(f"{path}: not an open-set file (missing {missing})")
        data.pop("format", None)
        means, precision = np.asarray(data.pop("means"), float), np.asarray(data.pop("precision"), float)
        if means.shape[0] != len(data["classes"]) or precision.shape != (means.shape[1], means.shape[1]):
            raise ValueError(f"{path}: means {means.shape} and precision {precision.shape} do not fit the classes")
        return cls(means=means, precision=precision, **data)


def mahalanobis(features: np.ndarray, means: np.ndarray, precision: np.ndarray) -> np.ndarray:
    """sqrt((x - mu_c)^T P (x - mu_c)) for features [N, hidden], means [C, hidden] -> [N, C]."""
    diff = features[:, None, :] - means[None, :, :]  # [N, C, hidden]
    squared = np.einsum("nch,hk,nck->nc", diff, precision, diff)
    return np.sqrt(np.maximum(squared, 0.0))


def fit_gaussian(features: np.ndarray, labels: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Class means [C, hidden] and the shared precision [hidden, hidden] (Ledoit-Wolf on centred vectors)."""
    from sklearn.covariance import LedoitWolf

    absent = sorted(set(range(n_classes)) - set(np.unique(labels).tolist()))
    if absent:
        raise ValueError(f"no training sequence of class label(s) {absent}: cannot fit the class means")
    features = features.astype(np.float64)
    means = np.stack([features[labels == c].mean(axis=0) for c in range(n_classes)])
    centred = features - means[labels]
    return means, LedoitWolf(assume_centered=True).fit(centred).precision_


def choose_threshold(
    in_scores: np.ndarray, out_scores: np.ndarray, max_false_unassigned: float = 0.01
) -> tuple[float, dict]:
    """The threshold (score > threshold: unassigned) with the largest Youden J, at least the
    (1 - max_false_unassigned) quantile of the in-class scores; see the module docstring.

    Returns (threshold, report with J, the in-class accepted and out-of-class rejected shares).
    """
    in_scores, out_scores = np.sort(np.asarray(in_scores, float)), np.sort(np.asarray(out_scores, float))
    if not len(in_scores) or not len(out_scores):
        raise ValueError("choosing the open-set threshold needs in-class and out-of-class scores")
    edges = np.unique(np.concatenate([in_scores, out_scores]))
    # A threshold in [edges[i], edges[i+1]) accepts in-class scores <= edges[i] and rejects out-of-class > edges[i].
    accepted = np.searchsorted(in_scores, edges, side="right") / len(in_scores)
    rejected = 1.0 - np.searchsorted(out_scores, edges, side="right") / len(out_scores)
    j = accepted + rejected - 1.0
    best = np.flatnonzero(j == j.max())
    low = edges[best[0]]
    high = edges[best[-1] + 1] if best[-1] + 1 < len(edges) else edges[best[-1]] * 2.0
    youden = math.sqrt(low * high) if low > 0 else (low + high) / 2.0
    quantile = float(np.quantile(in_scores, 1.0 - max_false_unassigned, method="higher"))
    threshold = max(youden, quantile)
    report = {
        "rule": "in-class quantile" if quantile > youden else "Youden J",
        "youden_threshold": float(youden),
        "in_class_quantile": quantile,
        "max_false_unassigned": float(max_false_unassigned),
        "youden_j": float(j.max()),
        "in_class_accepted": float((in_scores <= threshold).mean()),
        "out_of_class_rejected": float((out_scores > threshold).mean()),
        "n_in_class": int(len(in_scores)),
        "n_out_of_class": int(len(out_scores)),
        "interval": [float(low), float(high)],
    }
    return float(threshold), report


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature T > 0 minimising the mean NLL of softmax(logits / T) (bounded 1-D search on log T)."""
    from scipy.optimize import minimize_scalar

    logits, labels = np.asarray(logits, np.float64), np.asarray(labels)
    result = minimize_scalar(lambda log_t: nll(logits / math.exp(log_t), labels), bounds=(-5.0, 5.0), method="bounded")
    return float(math.exp(result.x))


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def nll(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-likelihood of the true labels under softmax(logits)."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_z = np.log(np.exp(shifted).sum(axis=1))
    return float(np.mean(log_z - shifted[np.arange(len(labels)), labels]))


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    """ECE: sum over equal-width confidence bins of (bin share) x |accuracy - mean confidence|; NaN if empty."""
    if not len(labels):
        return float("nan")
    confidence, correct = probs.max(axis=1), probs.argmax(axis=1) == labels
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    total = 0.0
    for b in np.unique(which):
        inside = which == b
        total += inside.mean() * abs(correct[inside].mean() - confidence[inside].mean())
    return float(total)


def reliability(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> list[dict]:
    """One row per non-empty confidence bin: bin range, count, mean confidence, accuracy (the diagram's data)."""
    confidence, correct = probs.max(axis=1), probs.argmax(axis=1) == labels
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    rows = []
    for b in np.unique(which):
        inside = which == b
        rows.append(
            {
                "bin_low": b / bins,
                "bin_high": (b + 1) / bins,
                "n": int(inside.sum()),
                "confidence": float(confidence[inside].mean()),
                "accuracy": float(correct[inside].mean()),
            }
        )
    return rows


@torch.inference_mode()
def cls_features(model, ids: torch.Tensor, n_tokens: torch.Tensor, batch_size: int = 32, device="cpu"):
    """Final-layer [CLS] vectors float64 [N, hidden] and logits float64 [N, classes] (eval mode, fp32).

    ids: [N, max_length] token ids; n_tokens: [N] real tokens per row.
    """
    model.eval()
    features, logits = [], []
    for start in range(0, len(ids), batch_size):
        batch, mask = trim_batch(ids[start : start + batch_size], n_tokens[start : start + batch_size])
        out = model(input_ids=batch.to(device), attention_mask=mask.to(device), output_hidden_states=True)
        features.append(out.hidden_states[-1][:, 0].double().cpu())
        logits.append(out.logits.double().cpu())
    if not features:
        hidden = model.config.hidden_size
        return np.zeros((0, hidden)), np.zeros((0, model.config.num_labels))
    return torch.cat(features).numpy(), torch.cat(logits).numpy()


@dataclass
class Answers:
    """Open-set answers for N sequences: prediction index (-1 = unassigned), calibrated probabilities."""

    closest: np.ndarray  # int64 [N], the most probable class
    assigned: np.ndarray  # bool [N]
    probs: np.ndarray  # float64 [N, classes], softmax(logits / T)
    ood_score: np.ndarray  # float64 [N]


def answer(open_set: OpenSet | None, features: np.ndarray, logits: np.ndarray) -> Answers:
    """Calibrated probabilities and the open-set decision; without an OpenSet every sequence is assigned."""
    if open_set is None:
        probs = softmax(logits)
        return Answers(probs.argmax(1), np.ones(len(probs), bool), probs, np.full(len(probs), np.nan))
    probs = softmax(logits / open_set.temperature)
    score = open_set.scores(features).min(axis=1) if len(features) else np.zeros(0)
    return Answers(probs.argmax(1), score <= open_set.threshold, probs, score)
