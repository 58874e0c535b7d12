"""Directionality of subspace selection, per head, from the weights and from the data.

BERT's head h of a layer scores query token x_i against key token x_j (nn.Linear: y = W x + b,
head h = rows c = h*d:(h+1)*d of W_Q, W_K, W_V and columns c of W_O):

    s_ij = (W_Q[c] x_i + b_Q[c]) . (W_K[c] x_j + b_K[c]) / sqrt(d)
         = x_i^T M x_j  +  x_j . u_key  +  x_i . u_query  +  const
    M = W_Q[c]^T W_K[c] / sqrt(d)   [hidden, hidden], the issue's W_Q^h (W_K^h)^T / sqrt(d_k)
    u_key = W_K[c]^T b_Q[c] / sqrt(d),  u_query = W_Q[c]^T b_K[c] / sqrt(d),  const = b_Q[c].b_K[c] / sqrt(d)

u_query and const are the same for every key of a query and cancel in the softmax; u_key does not.
M = S + N with S = (M + M^T)/2 symmetric and N = (M - M^T)/2 skew. The directionality index
||N||_F^2 / ||M||_F^2 is 0 for a symmetric M (i attends to j as much as j to i), 1 for a skew one,
about 0.5 for independent random W_Q, W_K (1 - the "symmetry score" of Saponati et al. 2025).

The original analysis code sliced columns, W[:, c], and dropped the biases; `variant`
"original_code" reports what that gives, beside ours, so that the difference is visible.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.dataset as ds
from safetensors import safe_open
from scipy.linalg import orth, subspace_angles
from tqdm import tqdm

from bertgeom.io import provenance, require_columns, to_matrix, write_parquet
from bertgeom.stats.attention import iter_attention

log = logging.getLogger(__name__)

OURS, ORIGINAL = "ours", "original_code"
WEIGHT_KEY = re.compile(
    r"(?:^|\.)encoder\.layer\.(\d+)\.attention\.(self\.query|self\.key|self\.value|output\.dense)\.(weight|bias)$"
)
WEIGHT_NAMES = {"self.query": "q", "self.key": "k", "self.value": "v", "output.dense": "o"}


# ---------------------------------------------------------------------------------------------
# Weights
# ---------------------------------------------------------------------------------------------


def load_attention_weights(model_dir: str | Path) -> tuple[list[dict[str, np.ndarray]], int]:
    """Per layer {wq, bq, wk, bk, wv, bv, wo, bo} (float64) of a saved BERT, and heads per layer.

    Reads model.safetensors (never pickles) and config.json of a save_pretrained directory;
    works for BertModel and BertFor* checkpoints alike (any prefix before `encoder.layer`).
    """
    model_dir = Path(model_dir)
    weights, config = model_dir / "model.safetensors", model_dir / "config.json"
    for path in (weights, config):
        if not path.exists():
            raise FileNotFoundError(f"{path}: not found (expected a save_pretrained BERT directory)")
    n_heads = json.loads(config.read_text()).get("num_attention_heads")
    if not isinstance(n_heads, int) or n_heads < 1:
        raise ValueError(f"{config}: num_attention_heads missing or invalid ({n_heads!r})")
    layers: dict[int, dict[str, np.ndarray]] = {}
    with safe_open(str(weights), framework="np") as handle:
        for key in handle.keys():
            match = WEIGHT_KEY.search(key)
            if match:
                layer, name, kind = int(match[1]), WEIGHT_NAMES[match[2]], match[3]
                layers.setdefault(layer, {})[("w" if kind == "weight" else "b") + name] = handle.get_tensor(key).astype(
                    np.float64
                )
    if not layers or sorted(layers) != list(range(len(layers))):
        raise ValueError(f"{weights}: no complete set of BERT attention weights (encoder.layer.N.attention.*)")
    for layer, tensors in layers.items():
        missing = sorted({"wq", "bq", "wk", "bk", "wv", "bv", "wo", "bo"} - set(tensors))
        if missing:
            raise ValueError(f"{weights}: layer {layer} lacks attention tensors {missing}")
        if tensors["wq"].shape[0] % n_heads:
            raise ValueError(f"{weights}: hidden size {tensors['wq'].shape[0]} is not a multiple of {n_heads} heads")
    return [layers[i] for i in range(len(layers))], n_heads


def head_rows(head: int, d_head: int) -> slice:
    return slice(head * d_head, (head + 1) * d_head)


def qk_bilinear(w: dict[str, np.ndarray], head: int, n_heads: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """(M [hidden, hidden], u_query [hidden], u_key [hidden], const) of head `head`: see module doc."""
    d = w["wq"].shape[0] // n_heads
    c = head_rows(head, d)
    wq, wk, bq, bk = w["wq"][c], w["wk"][c], w["bq"][c], w["bk"][c]
    scale = np.sqrt(d)
    return wq.T @ wk / scale, wq.T @ bk / scale, wk.T @ bq / scale, float(bq @ bk / scale)


def qk_bilinear_original(w: dict[str, np.ndarray], head: int, n_heads: int) -> np.ndarray:
    """M of the original code: columns W[:, c] (the wrong axis) and no biases, [hidden, hidden]."""
    d = w["wq"].shape[0] // n_heads
    c = head_rows(head, d)
    return w["wq"][:, c] @ w["wk"][:, c].T / np.sqrt(d)


def directionality_index(m: np.ndarray) -> float:
    """||N||_F^2 / ||M||_F^2 with N = (M - M^T)/2: 0 symmetric, 1 skew; M [k, k]."""
    m = np.asarray(m, dtype=np.float64)
    total = (m * m).sum()
    if total == 0:
        raise ValueError("directionality_index: M is zero")
    skew = (m - m.T) / 2
    return float((skew * skew).sum() / total)


def symmetric_eigenvalues(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Eigenvalues of S = (A B^T + B A^T)/2 for A, B [hidden, d], through the rank-2d core.

    With [A B] = Q R (reduced QR), S = Q (R J R^T) Q^T where J = [[0, I], [I, 0]] / 2, so the
    nonzero eigenvalues are those of the 2d x 2d matrix R J R^T (the other hidden - 2d are 0).
    """
    d = a.shape[1]
    q, r = np.linalg.qr(np.hstack([a, b]))
    j = np.block([[np.zeros((d, d)), np.eye(d)], [np.eye(d), np.zeros((d, d))]]) / 2
    core = r @ j @ r.T
    return np.linalg.eigvalsh((core + core.T) / 2)


def eigen_signs(eigenvalues: np.ndarray, tol: float) -> dict[str, float]:
    """Counts of positive and negative eigenvalues (|l| > tol max|l|) and the positive mass share."""
    lam = np.asarray(eigenvalues, dtype=np.float64)
    big = np.abs(lam) > tol * np.abs(lam).max()
    return {
        "eig_pos": float((big & (lam > 0)).sum()),
        "eig_neg": float((big & (lam < 0)).sum()),
        "eig_pos_mass": float(lam[lam > 0].sum() / np.abs(lam).sum()),
    }


def principal_angles(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Principal angles (radians, ascending) between the column spaces of a [D, p] and b [D, q]."""
    return np.sort(subspace_angles(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)))


def subspace_overlap(u: np.ndarray, v: np.ndarray) -> float:
    """Mean squared cosine of the principal angles, ||U^T V||_F^2 / min(p, q), for orthonormal
    bases U [D, p], V [D, q]: 1 for nested subspaces, 0 for orthogonal ones, p/D on average for
    random ones (q = p)."""
    return float(((u.T @ v) ** 2).sum() / min(u.shape[1], v.shape[1]))


def row_col_directionality(m: np.ndarray, num_std: float = 2.0) -> float:
    """The "directionality score" of Saponati et al. (arXiv 2502.10927): excess of M's column
    norms over mean + num_std sd, minus that of its row norms, over their sum; in [-1, 1]
    (positive: a few keys directions dominate; negative: a few query directions)."""
    rows, cols = np.linalg.norm(m, axis=1), np.linalg.norm(m, axis=0)
    row_excess = np.clip(rows - (rows.mean() + num_std * rows.std(ddof=1)), 0, None).sum()
    col_excess = np.clip(cols - (cols.mean() + num_std * cols.std(ddof=1)), 0, None).sum()
    total = row_excess + col_excess
    return float((col_excess - row_excess) / total) if total > 0 else 0.0


def qk_measures(m: np.ndarray, a: np.ndarray, b: np.ndarray, eig_tol: float) -> dict[str, float]:
    """Measures of M = A B^T / sqrt(d) with query factor a and key factor b, both [hidden, d].

    The eigenvalues come from A and B unscaled: signs, counts and shares do not depend on sqrt(d).
    """
    angles = np.degrees(principal_angles(a, b))
    return {
        "directionality_index": directionality_index(m),
        **eigen_signs(symmetric_eigenvalues(a, b), eig_tol),
        "angle_min": float(angles[0]),
        "angle_median": float(np.median(angles)),
        "angle_max": float(angles[-1]),
        "qk_overlap": subspace_overlap(orth(a), orth(b)),
        "m_norm": float(np.linalg.norm(m)),
        "row_col_directionality": row_col_directionality(m),
    }


def ov_basis(w: dict[str, np.ndarray], head: int, n_heads: int) -> np.ndarray:
    """Orthonormal basis [hidden, rank] of the subspace head h writes to: the column space of
    W_O[:, c] W_V[c] (value then output projection). With W_V[c]^T = Q R, W_O[:, c] W_V[c] =
    (W_O[:, c] R^T) Q^T and Q^T has full row rank, so the span is that of W_O[:, c] R^T."""
    d = w["wq"].shape[0] // n_heads
    c = head_rows(head, d)
    _, r = np.linalg.qr(w["wv"][c].T)
    return orth(w["wo"][:, c] @ r.T)


def weight_rows(layers: list[dict[str, np.ndarray]], n_heads: int, eig_tol: float) -> list[tuple]:
    """(layer, head, variant, measure, value) rows of every weights-based measure."""
    rows = []
    for layer, w in enumerate(tqdm(layers, desc="directionality: weights", mininterval=10)):
        d = w["wq"].shape[0] // n_heads
        bases = [ov_basis(w, h, n_heads) for h in range(n_heads)]
        for head in range(n_heads):
            c = head_rows(head, d)
            m, _, u_key, _ = qk_bilinear(w, head, n_heads)
            ours = qk_measures(m, w["wq"][c].T, w["wk"][c].T, eig_tol)
            ours["key_bias_norm"] = float(np.linalg.norm(u_key))
            others = [subspace_overlap(bases[head], bases[g]) for g in range(n_heads) if g != head]
            ours["ov_overlap_mean"] = float(np.mean(others)) if others else np.nan
            ours["ov_overlap_max"] = float(np.max(others)) if others else np.nan
            original = qk_measures(qk_bilinear_original(w, head, n_heads), w["wq"][:, c], w["wk"][:, c], eig_tol)
            rows += [(layer, head, OURS, k, v) for k, v in ours.items()]
            rows += [(layer, head, ORIGINAL, k, v) for k, v in original.items()]
    return rows


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------


def head_scores(x: np.ndarray, w: dict[str, np.ndarray], n_heads: int, variant: str) -> np.ndarray:
    """Pre-softmax scores of every head on tokens x [n, hidden] -> [heads, query, key].

    ours: (x W_Q^T + b_Q) split into heads by columns (= rows of W_Q), likewise K, / sqrt(d);
    original_code: x W_Q[:, c] and x W_K[:, c], no biases.
    """
    n = x.shape[0]
    d = w["wq"].shape[0] // n_heads
    if variant == OURS:
        q, k = x @ w["wq"].T + w["bq"], x @ w["wk"].T + w["bk"]
    else:
        q, k = x @ w["wq"], x @ w["wk"]
    q = q.reshape(n, n_heads, d).transpose(1, 0, 2)
    k = k.reshape(n, n_heads, d).transpose(1, 0, 2)
    return q @ k.transpose(0, 2, 1) / np.sqrt(d)


def read_layer_inputs(tokens: str) -> dict[tuple[str, int], np.ndarray]:
    """{(seq_id, layer): x [n, hidden]} of stage "input" of tokens.parquet (the subset)."""
    require_columns(tokens, ["seq_id", "layer", "stage", "position", "vec"])
    table = ds.dataset(tokens, format="parquet").to_table(
        columns=["seq_id", "layer", "position", "vec"], filter=ds.field("stage") == "input"
    )
    if table.num_rows == 0:
        raise ValueError(f"{tokens}: no rows of stage 'input' (config activations.token_stages must include input)")
    frame = table.drop_columns(["vec"]).to_pandas()
    vectors = to_matrix(table.column("vec"))
    inputs = {}
    for (seq_id, layer), rows in frame.groupby(["seq_id", "layer"]).indices.items():
        order = rows[np.argsort(frame["position"].to_numpy()[rows])]
        if not np.array_equal(frame["position"].to_numpy()[order], np.arange(len(order))):
            raise ValueError(f"{tokens}: sequence {seq_id} layer {layer}: positions are not 0..n-1")
        inputs[(seq_id, int(layer))] = vectors[order]  # float16 until used: memory
    return inputs


def data_rows(layers: list[dict[str, np.ndarray]], n_heads: int, tokens: str, attention: str) -> list[tuple]:
    """(layer, head, variant, measure, value): asymmetry of Q K^T and of A, mean over sequences."""
    values: dict[tuple, list[float]] = {}
    inputs = read_layer_inputs(tokens)
    for (seq_id, layer), x in tqdm(inputs.items(), desc="directionality: Q K^T", mininterval=10):
        x = x.astype(np.float64)
        if layer >= len(layers) or x.shape[1] != layers[layer]["wq"].shape[1]:
            raise ValueError(f"{tokens}: sequence {seq_id} layer {layer} does not fit the model (hidden {x.shape[1]})")
        for variant in (OURS, ORIGINAL):
            for head, scores in enumerate(head_scores(x, layers[layer], n_heads, variant)):
                values.setdefault((layer, head, variant, "qk_asymmetry"), []).append(directionality_index(scores))
    for record, a in iter_attention(attention):
        values.setdefault((record["layer"], record["head"], OURS, "attn_asymmetry"), []).append(directionality_index(a))
    rows = [(*key, float(np.mean(v))) for key, v in values.items()]
    rows += [
        (layer, head, OURS, "n_seqs", float(len(v)))
        for (layer, head, _, m), v in values.items()
        if m == "attn_asymmetry"
    ]
    return rows


def directionality_table(model_dir: str, tokens: str, attention: str, eig_tol: float, seed: int) -> pd.DataFrame:
    """Tidy table: seed, layer, head, variant, measure, value (docs/methods.md, "Attention patterns and directionality")."""
    layers, n_heads = load_attention_weights(model_dir)
    rows = weight_rows(layers, n_heads, eig_tol) + data_rows(layers, n_heads, tokens, attention)
    table = pd.DataFrame(rows, columns=["layer", "head", "variant", "measure", "value"]).assign(seed=seed)
    table = table[["seed", "layer", "head", "variant", "measure", "value"]]
    table = table.astype({"seed": "int32", "layer": "int16", "head": "int16", "value": "float64"})
    return table.sort_values(["seed", "layer", "head", "variant", "measure"], kind="stable").reset_index(drop=True)


def write_directionality(model_dir: str, tokens: str, attention: str, out: str, eig_tol: float, seed: int) -> None:
    """Rule directionality: one seed's weights- and data-based directionality table."""
    table = directionality_table(model_dir, tokens, attention, eig_tol, seed)
    write_parquet(table, out, meta=provenance({"eig_tol": eig_tol}, model_dir=model_dir, seed=seed))
    log.info("wrote %s (%d rows)", out, len(table))
