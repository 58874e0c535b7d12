"""Open-set answers and calibrated probabilities for a trained classifier (stored as open_set.json).

Open set (Mahalanobis distance to the class means with a shared covariance over the features of every
layer, after Lee et al. 2018, "A simple unified framework for detecting out-of-distribution samples
and adversarial attacks", NeurIPS): x_l is the mean over the real tokens of layer l's output; its
class means mu_lc come from the training split and one covariance S_l per layer is shared by all
classes (Ledoit-Wolf shrinkage on the class-centred training vectors, invertible for any size):

    ood_score(x) = min_c sqrt( sum_l (x_l - mu_lc)^T S_l^-1 (x_l - mu_lc) )

(the Mahalanobis distance of the concatenated vectors under a block-diagonal covariance). Chosen because
it separated the evaluation lineages better than the final [CLS] vector when the open set was designed
(a one-off comparison; the workflow measures only this feature: results/open_set/seed{seed}/summary.tsv).

A sequence whose score exceeds the threshold is `unassigned`. The threshold is chosen on in-class
genomes (the validation split, plus fresh synthetic in-class genomes the model never saw) and
out-of-class genomes reserved for that purpose (synthetic genomes of the `use: threshold` lineages of
variants.yaml), never on genomes used to evaluate it: the lowest threshold that maximises Youden's
J = (in-class accepted share) + (out-of-class rejected share) - 1 (when the two groups are apart,
the highest in-class score: out-of-class genomes of kinds never seen are likelier to fall between the
groups than beyond the known out-of-class ones), raised if needed so that at most
`max_false_unassigned` of the in-class genomes are unassigned (a user loses more from a genome of a
class called `unassigned` than from a rare false assignment).

Calibration (Guo et al. 2017, "On calibration of modern neural networks", ICML): one temperature T
divides the logits, fitted by minimising the negative log-likelihood on a calibration split that is
harder than the training data (synthetic genomes with the settings of config open_set.calibration). Its
expected calibration error (ECE) uses 15 equal-width confidence bins.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from bertgeom.io import atomic_path, sha256_file, write_json
from bertgeom.model import trim_batch

OPEN_SET_FILE = "open_set.json"
TENSORS_FILE = "open_set.safetensors"
ECE_BINS = 15


@dataclass
class OpenSet:
    """What `predict` needs besides the model: class means, shared precisions, threshold, temperature.

    means: float64 [layer, class, hidden]; precision: float64 [layer, hidden, hidden] (inverse of each
    layer's shared covariance). Saved as open_set.json (everything else) + open_set.safetensors (these two).
    """

    classes: list[str]
    means: np.ndarray
    precision: np.ndarray
    threshold: float
    temperature: float = 1.0
    feature: str = "mean over real tokens of every layer's output (hidden_states[1:])"
    method: str = "Mahalanobis distance to the nearest class mean, shared Ledoit-Wolf covariance per layer"
    report: dict = field(default_factory=dict)  # how threshold and temperature were chosen (numbers)

    def scores(self, features: np.ndarray) -> np.ndarray:
        """Distances [N, classes] of features [N, layer, hidden] to every class (module docstring)."""
        squared = sum(
            mahalanobis(features[:, layer], self.means[layer], self.precision[layer]) ** 2
            for layer in range(len(self.means))
        )
        return np.sqrt(squared)

    def save(self, path: str | Path, tensors: str | Path | None = None) -> None:
        """path (open_set.json) and `tensors` (default: open_set.safetensors beside it; it must lie in the
        same directory, where load looks for it), each written atomically."""
        from safetensors.numpy import save_file

        path = Path(path)
        tensors = Path(tensors) if tensors else path.with_name(TENSORS_FILE)
        if tensors.parent.resolve() != path.parent.resolve():
            raise ValueError(f"{tensors}: the open-set tensors must lie beside {path}")
        with atomic_path(tensors, ".safetensors") as tmp:
            save_file({"means": self.means, "precision": self.precision}, str(tmp))
        data = {k: v for k, v in asdict(self).items() if k not in ("means", "precision")}
        write_json(
            path,
            {"format": "bertgeom open set 2", "tensors": tensors.name, **data, "tensors_sha256": sha256_file(tensors)},
        )

    @classmethod
    def load(cls, path: str | Path, tensors: str | Path | None = None) -> "OpenSet":
        """Read open_set.json and its tensors (the file it names beside it; `tensors`, if given, must be
        that file); ValueError naming the file when something is missing or wrong."""
        from safetensors.numpy import load_file

        path = Path(path)
        data = json.loads(path.read_text())
        missing = [k for k in ("classes", "threshold", "temperature", "tensors", "tensors_sha256") if k not in data]
        if missing:
            raise ValueError(f"{path}: not an open-set file (missing {missing})")
        named = path.with_name(data.pop("tensors"))
        if tensors is not None and Path(tensors).resolve() != named.resolve():
            raise ValueError(f"{path}: its tensors are {named.name} beside it, not {tensors}")
        tensors = named
        if not tensors.is_file() or sha256_file(tensors) != data.pop("tensors_sha256"):
            raise ValueError(f"{path}: {tensors.name} is missing or not the file it was saved with")
        arrays = load_file(str(tensors))
        means, precision = arrays["means"], arrays["precision"]
        data.pop("format", None)
        if means.shape[1] != len(data["classes"]) or precision.shape != (
            means.shape[0],
            means.shape[2],
            means.shape[2],
        ):
            raise ValueError(f"{tensors}: means {means.shape} and precision {precision.shape} do not fit the classes")
        return cls(means=means, precision=precision, **data)


def fit_layers(features: np.ndarray, labels: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-layer class means [layer, class, hidden] and shared precisions [layer, hidden, hidden]."""
    fitted = [fit_gaussian(features[:, layer], labels, n_classes) for layer in range(features.shape[1])]
    return np.stack([m for m, _ in fitted]), np.stack([p for _, p in fitted])


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


def choose_threshold(in_scores: np.ndarray, out_scores: np.ndarray, max_false_unassigned: float) -> tuple[float, dict]:
    """The lowest threshold (score > threshold: unassigned) with the largest Youden J, at least the
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
    high = edges[best[-1] + 1] if best[-1] + 1 < len(edges) else float("inf")
    youden = float(low)
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
def layer_features(model, ids: torch.Tensor, n_tokens: torch.Tensor, batch_size: int = 32, device="cpu"):
    """Mean over the real tokens of every layer's output, float64 [N, layer, hidden], and the logits
    float64 [N, classes] (eval mode, fp32). ids: [N, max_length] token ids; n_tokens: [N] real tokens."""
    model.eval()
    features, logits = [], []
    for start in range(0, len(ids), batch_size):
        batch, mask = trim_batch(ids[start : start + batch_size], n_tokens[start : start + batch_size])
        mask = mask.to(device)
        out = model(input_ids=batch.to(device), attention_mask=mask, output_hidden_states=True)
        weights = (mask / mask.sum(1, keepdim=True)).double()[:, None, :]  # [batch, 1, token]
        layers = torch.stack(out.hidden_states[1:], dim=1).double()  # [batch, layer, token, hidden]
        features.append((weights[..., None] * layers).sum(2).cpu())  # [batch, layer, hidden]
        logits.append(out.logits.double().cpu())
    if not features:
        config = model.config
        return np.zeros((0, config.num_hidden_layers, config.hidden_size)), np.zeros((0, config.num_labels))
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
