"""Null-calibrated attention gates: per head a label against a null per gate, and per query row.

docs/methods.md ("Attention gates") is the specification; in short, for one head and one gate:

    passed  =  score > q_level(null)  and  effect >= patterns.min_effect.<gate>
    effect  =  score / mean(null)      (cluster: within-block mass / its chance expectation)

`score` is the mean of the gate score (bertgeom.stats.attention.gate_scores) over the subset's
sequences; the null sample pools every sequence's null values of that head. The nulls:

    backward_contextual, forward_contextual, instance
        the row's non-special keys permuted (specials kept in place): per row, the band (or
        diagonal) entries of a random permutation are drawn directly, `nulls.row_draws` per row;
        the null mean is exact (fixed special entries + b S_i / m: b free band keys, S_i the row's
        non-special mass, m = n - 2 non-special keys).
    directional, cluster
        `nulls.permutations` full permutations of every row's non-special keys; the scores
        recomputed on each permuted matrix.
    closed
        a row permutation keeps [CLS]/[SEP] in place, so it cannot change this score: the null is
        the same subset sequences through an independently initialised model of the same
        architecture (rule null_model, seed `nulls.seed`), pooled over its heads of the same layer.

Permutations are skipped where they cannot change the label (the gate fails on its effect size
alone): cluster when the block enrichment is below min_effect; directional when even the upper
bound of the effect (its null mean is at least min(k, m) / m of the non-special mass, Jensen) is.

Labels: the one gate passed, `multiple` (the gates passed are listed), or no structured gate passed:
`open` when the mean normalised row entropy reaches `thresholds.open`, else `none`.

Rows (descriptive): a query row shows a row-defined gate (contextual, instance, closed) when its
score reaches min_effect x its null mean (the row's exact permutation mean; closed: the null
model's mean row mass), then the same rule as heads (open by the row's own entropy). A single row
is one observation: a row whose mass sits on one key puts it into a band of b keys with probability
b / m under the permutation (0.9% at n = 427 and window 4), so no per-row test at the 1% level
could pass it; significance is the head's. Beside each row share, `null_share` is the share of
null rows (draws; closed: the null model's rows) that the same criterion would pass.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Iterable

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import torch

from bertgeom.io import require_columns
from bertgeom.measures import attention_measure_names, attention_measures, band_mass, sorted_row_entropy
from bertgeom.stats.attention import GATES, MULTIPLE, NONE, cluster_score, contiguous_partition, gate_scores

log = logging.getLogger(__name__)

STRUCTURED = ("directional", "backward_contextual", "forward_contextual", "cluster", "instance", "closed")
ROW_GATES = ("backward_contextual", "forward_contextual", "instance", "closed")
DRAWN = ("backward_contextual", "forward_contextual", "instance")  # row draws, exact null mean
PERMUTED = ("directional", "cluster")  # full permutations
OPEN = "open"
ROW_LABELS = (*ROW_GATES, OPEN, MULTIPLE, NONE)
TEST_COLUMNS = ["seed", "layer", "head", "gate", "score", "null_mean", "null_quantile", "effect", "min_effect",
                "n_null", "null_computed", "passed"]  # fmt: skip


def offsets(gate: str, window: int) -> list[int]:
    """Key offsets j - i of a row-defined positional gate."""
    return {"instance": [0], "backward_contextual": list(range(-window, 0)),
            "forward_contextual": list(range(1, window + 1))}[gate]  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Nulls of one matrix A [query, key] (n real tokens; keys 0 and n-1 are [CLS] and [SEP])
# ---------------------------------------------------------------------------------------------


def distinct_picks(rng: np.random.Generator, shape: tuple[int, ...], m: int, k: int) -> np.ndarray:
    """Uniform random ordered k-tuples of distinct integers in [0, m): int32 [*shape, k] (k <= m).

    Rejection: tuples with a repeat are drawn again (with k = 4 of m = 425, 1.4% of them).
    """
    picks = rng.integers(0, m, size=(*shape, k), dtype=np.int32)
    while True:
        repeated = np.zeros(shape, dtype=bool)
        for a in range(k):
            for b in range(a):
                repeated |= picks[..., a] == picks[..., b]
        if not repeated.any():
            return picks
        picks[repeated] = rng.integers(0, m, size=(int(repeated.sum()), k), dtype=np.int32)


def row_null(a: np.ndarray, offs: list[int], draws: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Per query row, the gate's row score (mass on keys i + d, d in offs) with the row's non-special
    keys permuted: (samples [draws, n], exact mean [n]).

    A permutation puts b_i distinct random non-special entries of row i on its b_i non-special slots
    (special and out-of-range slots keep their own value / 0), so those entries are drawn directly.
    """
    n = a.shape[0]
    m = n - 2
    block = a[:, 1:-1]  # [query, non-special key]
    rows = np.arange(n)[:, None]
    pos = rows + np.asarray(offs)[None, :]  # [query, slot]
    valid = (pos >= 0) & (pos < n)
    special = valid & ((pos == 0) | (pos == n - 1))
    fixed = np.where(special, a[rows, pos.clip(0, n - 1)], 0.0).sum(axis=1)
    free = (valid & ~special).sum(axis=1)  # [query]
    mean = fixed + free * block.sum(axis=1) / max(m, 1)
    width = min(len(offs), m)
    if width == 0 or not free.any():
        return np.broadcast_to(fixed, (draws, n)).copy(), mean
    picks = distinct_picks(rng, (draws, n), m, width)
    values = np.take(block.ravel(), rows[None] * m + picks)  # [draws, query, slot]
    used = np.arange(width)[None, None, :] < free[None, :, None]
    return fixed + (values * used).sum(axis=-1), mean


def top_key_share(block: np.ndarray, total: float, top_keys: int) -> float:
    """Share of all attention received by the `top_keys` most-attended columns of the non-special block."""
    column = block.sum(axis=0)
    k = min(top_keys, len(column))
    return float(np.partition(column, len(column) - k)[-k:].sum() / total)


def off_band(a: np.ndarray, window: int) -> np.ndarray:
    """A without the band |i - j| <= window and the [CLS]/[SEP] rows and columns (the cluster gate's B)."""
    i, j = np.indices(a.shape)
    rest = np.where(np.abs(i - j) > window, a, 0.0)
    rest[[0, -1], :] = 0.0
    rest[:, [0, -1]] = 0.0
    return rest


def block_enrichment(a: np.ndarray, window: int, min_block: int) -> tuple[float, float]:
    """(within, expected) of the cluster gate's partition: the share of B's mass inside its blocks
    and the share chance puts there, sum_B a_B b_B (row share x column share). NaN without B."""
    rest = off_band(a, window)
    if rest.sum() <= 0:
        return np.nan, np.nan
    p = rest / rest.sum()
    blocks = contiguous_partition(rest, min_block)
    member = np.repeat(np.arange(len(blocks)), [e - s for s, e in blocks])  # block of each position
    within = p[member[:, None] == member[None, :]].sum()
    expected = np.bincount(member, p.sum(axis=1)) @ np.bincount(member, p.sum(axis=0))
    return float(within), float(expected)


def row_permutations(rng: np.random.Generator, permutations: int, n: int) -> np.ndarray:
    """[permutation, query, key] int32: flat indices into a row-major [n, m] block that put every
    row's m = n - 2 non-special keys in an independent random order (the same orders serve every
    head of a sequence: each head's null stays exact)."""
    m = n - 2
    keys = np.broadcast_to(np.arange(m, dtype=np.int32), (permutations, n, m))
    return rng.permuted(keys, axis=-1) + (np.arange(n, dtype=np.int32) * m)[None, :, None]


def permuted_scores(a: np.ndarray, gates: set[str], patterns: dict, orders: np.ndarray) -> dict[str, np.ndarray]:
    """Directional and/or cluster scores of A with every row's non-special keys in the `orders`
    (row_permutations): one score per permutation."""
    out = {gate: np.empty(len(orders)) for gate in gates}
    total = a.sum()
    flat = np.ascontiguousarray(a[:, 1:-1]).ravel()
    for p, order in enumerate(orders):
        block = np.take(flat, order)  # [query, key]: every row's non-special keys shuffled
        if "directional" in gates:
            out["directional"][p] = top_key_share(block, total, patterns["top_keys"])
        if "cluster" in gates:
            full = np.concatenate([a[:, :1], block, a[:, -1:]], axis=1)
            out["cluster"][p] = cluster_score(full, patterns["window"], patterns["min_block"])[0]
    return out


def scores_of(a: np.ndarray, patterns: dict) -> dict[str, float]:
    """The seven gate scores of A without the costly metrics (SVD) of attention.matrix_metrics."""
    top_keys, window = patterns["top_keys"], patterns["window"]
    values = attention_measures(torch.from_numpy(a)[None, None], torch.tensor([a.shape[0]]), top_keys, window)[0, 0]
    metrics = dict(zip(attention_measure_names(top_keys, window), values.tolist()))
    metrics["cluster"] = cluster_score(a, window, patterns["min_block"])[0]
    return gate_scores(metrics, top_keys)


def row_band(a: np.ndarray, offs: list[int]) -> np.ndarray:
    """Per query row of A [query, key], the mass on keys i + d for the consecutive offsets `offs`."""
    return band_mass(torch.from_numpy(a), range(offs[0], offs[-1] + 1)).numpy()


def row_entropies(a: np.ndarray) -> np.ndarray:
    """Normalised entropy H(A_i) / log n of each query row of A [query, key]."""
    return sorted_row_entropy(torch.from_numpy(a), torch.tensor(float(a.shape[-1]), dtype=torch.float64)).numpy()


def enriched(score: np.ndarray, mean: np.ndarray, min_effect: float) -> np.ndarray:
    """Row scores (or null draws) at or above min_effect x their row's null mean (and above 0)."""
    return (score >= min_effect * mean) & (score > 0)


def row_label_counts(passed: dict[str, np.ndarray], is_open: np.ndarray) -> dict[str, int]:
    """Rows per row label from the per-gate row flags (ROW_GATES) and the open flag."""
    stacked = np.stack([passed[g] for g in ROW_GATES])  # [gate, query]
    count = stacked.sum(axis=0)
    labels = np.where(count > 1, MULTIPLE, np.where(count == 1, np.array(ROW_GATES)[stacked.argmax(axis=0)],
                                                   np.where(is_open, OPEN, NONE)))  # fmt: skip
    return {label: int((labels == label).sum()) for label in ROW_LABELS}


def matrix_null(a: np.ndarray, patterns: dict, closed_rows: float, rng: np.random.Generator) -> dict:
    """Everything the labels need from one matrix A (kept small: no per-row arrays).

    closed_rows: the mean per-row [CLS] + [SEP] mass of the null model in this layer. Returns the
    samples and exact means of the drawn gates' matrix scores, the directional effect bound, the
    cluster enrichment, the counts of this matrix's rows per row label, and per row gate the number
    of null draws (rows x draws) that would pass it (`null_rows`).
    """
    effects = patterns["min_effect"]
    out: dict = {"samples": {}, "mean": {}, "null_rows": {}}
    passed = {}
    for gate in DRAWN:
        offs = offsets(gate, patterns["window"])
        samples, mean = row_null(a, offs, patterns["nulls"]["row_draws"], rng)
        passed[gate] = enriched(row_band(a, offs), mean, effects[gate])
        out["null_rows"][gate] = float(enriched(samples, mean, effects[gate]).mean())
        out["samples"][gate] = samples.mean(axis=1)  # matrix score = mean over rows; rows independent
        out["mean"][gate] = float(mean.mean())
    passed["closed"] = enriched(a[:, 0] + a[:, -1], closed_rows, effects["closed"])
    out["rows"] = row_label_counts(passed, row_entropies(a) >= patterns["thresholds"]["open"])
    block = a[:, 1:-1]
    out["directional_bound"] = min(patterns["top_keys"], block.shape[1]) * block.sum() / block.shape[1] / a.sum()
    out["within"], out["expected"] = block_enrichment(a, patterns["window"], patterns["min_block"])
    return out


# ---------------------------------------------------------------------------------------------
# Per head: pooled nulls, tests, labels
# ---------------------------------------------------------------------------------------------


def collect(nulls: Iterable[tuple[tuple[int, int], dict]]) -> dict[tuple[int, int], dict]:
    """Group matrix_null results by (layer, head): lists of samples, means, bounds, enrichments; row counts summed."""
    heads: dict = defaultdict(lambda: {"samples": defaultdict(list), "mean": defaultdict(list), "directional_bound": [],
                                       "within": [], "expected": [], "rows": defaultdict(int),
                                       "null_rows": defaultdict(list)})  # fmt: skip
    for key, null in nulls:
        head = heads[key]
        for gate in DRAWN:
            head["samples"][gate].append(null["samples"][gate])
            head["mean"][gate].append(null["mean"][gate])
        for name in ("directional_bound", "within", "expected"):
            head[name].append(null[name])
        for label, count in null["rows"].items():
            head["rows"][label] += count
        for gate, share in null["null_rows"].items():
            head["null_rows"][gate].append(share)
    return dict(heads)


def enrichment(head: dict) -> float:
    """Cluster effect: mean within-block share over the mean chance share (NaN without off-band mass)."""
    within, expected = np.nanmean(head["within"]), np.nanmean(head["expected"])
    return float(within / expected) if expected > 0 else np.nan


def candidates(scores: pd.DataFrame, heads: dict, patterns: dict) -> dict[tuple[int, int], set[str]]:
    """Per head, the permuted gates whose label the permutations could change (see the module docstring)."""
    effects = patterns["min_effect"]
    out = {}
    for key, head in heads.items():
        gates = set()
        if scores.loc[key, "score_directional"] / np.mean(head["directional_bound"]) >= effects["directional"]:
            gates.add("directional")
        if enrichment(head) >= effects["cluster"]:
            gates.add("cluster")
        if gates:
            out[key] = gates
    return out


def permutation_nulls(
    matrices: Iterable[tuple[dict, np.ndarray]], wanted: dict[tuple[int, int], set[str]], patterns: dict,
    rng: np.random.Generator,
) -> dict[tuple[int, int], dict[str, list[np.ndarray]]]:
    """Second pass over the matrices: permuted directional/cluster scores of the `wanted` heads.
    The row orders are drawn once per sequence (matrices come sequence by sequence) for all its heads."""
    out: dict = defaultdict(lambda: defaultdict(list))
    sequence, orders = None, None
    for record, a in matrices:
        key = (int(record["layer"]), int(record["head"]))
        if key not in wanted:
            continue
        if record["seq_id"] != sequence or len(orders[0]) != len(a):
            sequence, orders = record["seq_id"], row_permutations(rng, patterns["nulls"]["permutations"], len(a))
        for gate, values in permuted_scores(a, wanted[key], patterns, orders).items():
            out[key][gate].append(values)
    return out


def gate_test(score: float, samples: np.ndarray | None, null_mean: float, patterns: dict, gate: str) -> dict:
    """One head's test of one gate: quantile, effect, passed."""
    level, min_effect = patterns["nulls"]["level"], patterns["min_effect"][gate]
    quantile = float(np.quantile(samples, level)) if samples is not None and len(samples) else np.nan
    effect = score / null_mean if null_mean > 0 else np.nan
    passed = bool(score > quantile and effect >= min_effect)  # NaN compares False
    return {"score": score, "null_mean": null_mean, "null_quantile": quantile, "effect": effect,
            "min_effect": min_effect, "n_null": 0 if samples is None else len(samples),
            "null_computed": samples is not None, "passed": passed}  # fmt: skip


def head_tests(key, score: pd.Series, head: dict, permuted: dict, closed_null: np.ndarray, patterns: dict) -> list[dict]:
    """Tests of every structured gate of one head (rows of the gate_tests table)."""
    rows = []
    for gate in STRUCTURED:
        value = float(score[f"score_{gate}"])
        if gate in DRAWN:
            test = gate_test(value, np.concatenate(head["samples"][gate]), float(np.mean(head["mean"][gate])), patterns, gate)
        elif gate == "closed":
            test = gate_test(value, closed_null, float(np.mean(closed_null)), patterns, gate)
        elif gate in permuted:
            samples = np.concatenate(permuted[gate])
            test = gate_test(value, samples, float(samples.mean()), patterns, gate)
            if gate == "cluster":
                test = _cluster_effect(test, head, patterns)
        else:  # skipped: the gate fails on its effect size alone
            bound = enrichment(head) if gate == "cluster" else value / np.mean(head["directional_bound"])
            test = {**gate_test(value, None, np.nan, patterns, gate), "effect": bound}
        rows.append({"layer": key[0], "head": key[1], "gate": gate, **test})
    return rows


def _cluster_effect(test: dict, head: dict, patterns: dict) -> dict:
    effect = enrichment(head)
    passed = bool(test["score"] > test["null_quantile"] and effect >= patterns["min_effect"]["cluster"])
    return {**test, "effect": effect, "passed": passed}


def label(passed: list[str], entropy: float, open_threshold: float) -> str:
    """The head's label from the structured gates it passed and its mean normalised row entropy."""
    if len(passed) > 1:
        return MULTIPLE
    if passed:
        return passed[0]
    return OPEN if entropy >= open_threshold else NONE


def absolute_label(scores: pd.Series, thresholds: dict) -> str:
    """Today's rule for comparison: the one gate whose mean score reaches its absolute threshold."""
    passed = [g for g in GATES if scores[f"score_{g}"] >= thresholds[g]]
    return passed[0] if len(passed) == 1 else (MULTIPLE if passed else NONE)


def closed_nulls(null_scores: pd.DataFrame, min_effect: float) -> dict[int, dict]:
    """Per layer of the null model: its matrix closed scores, the mean of its rows' [CLS] + [SEP]
    mass and the share of its rows enriched by min_effect over that mean."""
    out = {}
    for layer, part in null_scores.groupby("layer"):
        rows = np.concatenate([np.asarray(r, dtype=np.float64) for r in part["row_closed"]])
        out[int(layer)] = {"matrix": part["score_closed"].to_numpy(np.float64), "rows": float(rows.mean()),
                           "null_rows": float(enriched(rows, rows.mean(), min_effect).mean())}  # fmt: skip
    return out


def gate_tables(
    scores: pd.DataFrame, heads: dict, permuted: dict, closed: dict[int, dict], patterns: dict, seed: int
) -> dict[str, pd.DataFrame]:
    """gates (one label per head), gate_tests (per head and gate) and row_gates (per head and row label).

    scores: per-head mean gate scores (index layer, head; columns score_<gate>, n_seqs).
    """
    tests, gates, rows = [], [], []
    for key in sorted(heads):
        layer = key[0]
        if layer not in closed:
            raise ValueError(f"null model has no layer {layer}: it must have the trained model's architecture")
        head_rows = head_tests(key, scores.loc[key], heads[key], permuted.get(key, {}), closed[layer]["matrix"], patterns)
        tests += head_rows
        passed = [r["gate"] for r in head_rows if r["passed"]]
        score = scores.loc[key]
        gates.append({"layer": layer, "head": key[1], "gate": label(passed, score["score_open"], patterns["thresholds"]["open"]),
                      "passed": "+".join(passed), "n_passed": len(passed),
                      "gate_absolute": absolute_label(score, patterns["thresholds"]), "n_seqs": int(score["n_seqs"]),
                      **{f"score_{g}": float(score[f"score_{g}"]) for g in GATES}})  # fmt: skip
        rows += row_shares(key, heads[key], closed[layer]["null_rows"])
    types = {"seed": "int32", "layer": "int16", "head": "int16"}
    gates_table = pd.DataFrame(gates).assign(seed=seed).astype({**types, "n_passed": "int8", "n_seqs": "int32"})
    return {
        "gates": gates_table[["seed", *gates_table.columns[:-1]]],
        "gate_tests": pd.DataFrame(tests).assign(seed=seed).astype(types)[TEST_COLUMNS],
        "row_gates": pd.DataFrame(rows).assign(seed=seed).astype(types)[["seed", "layer", "head", "label", "measure", "value"]],
    }


def row_shares(key: tuple[int, int], head: dict, closed_null_share: float) -> list[dict]:
    """row_gates rows of one head: per row label the share of its query rows (`share`) and, for the
    row-defined gates, the share of null rows that pass the same criterion (`null_share`)."""
    total = sum(head["rows"].values())
    null = {gate: float(np.mean(head["null_rows"][gate])) for gate in DRAWN} | {"closed": closed_null_share}
    rows = [{"layer": key[0], "head": key[1], "label": name, "measure": "share", "value": head["rows"][name] / total}
            for name in ROW_LABELS]  # fmt: skip
    return rows + [{"layer": key[0], "head": key[1], "label": g, "measure": "null_share", "value": null[g]} for g in ROW_GATES]


def read_null_scores(path: str, patterns: dict) -> tuple[dict[int, dict], set[str]]:
    """The closed gate's nulls per layer (closed_nulls) from the null model's scores table, and its seq_ids."""
    require_columns(path, ["seq_id", "layer", "head", "score_closed", "row_closed"])
    frame = pq.read_table(path, columns=["seq_id", "layer", "head", "score_closed", "row_closed"]).to_pandas()
    if frame.empty:
        raise ValueError(f"{path}: no rows (the null model saw no sequence)")
    return closed_nulls(frame, patterns["min_effect"]["closed"]), set(frame["seq_id"])


class Labeller:
    """Labels the heads of one model: `add` every matrix (first pass), then `tables` (second pass
    over the matrices for the permutation nulls of the heads that need them)."""

    def __init__(self, patterns: dict, null: tuple[dict[int, dict], set[str]], seed: int):
        self.patterns, (self.closed, self.null_seqs), self.seed = patterns, null, seed
        self.rng = np.random.default_rng([patterns["nulls"]["seed"], seed])
        self.rng_permuted = np.random.default_rng([patterns["nulls"]["seed"], seed, 1])
        self.nulls: list = []
        self.cpu = 0.0

    def add(self, record: dict, a: np.ndarray) -> None:
        layer = int(record["layer"])
        if layer not in self.closed:
            raise ValueError(f"layer {layer}: the null model has layers {sorted(self.closed)}; it must have the "
                             "trained model's architecture")  # fmt: skip
        if record["seq_id"] not in self.null_seqs:
            raise ValueError(f"sequence {record['seq_id']} is not in the null model's table: both must use the same "
                             "activations.splits and activations.subset_per_class")  # fmt: skip
        start = time.process_time()
        self.nulls.append(((layer, int(record["head"])), matrix_null(a, self.patterns, self.closed[layer]["rows"], self.rng)))
        self.cpu += time.process_time() - start

    def tables(self, per_matrix: pd.DataFrame, matrices: Iterable[tuple[dict, np.ndarray]]) -> dict[str, pd.DataFrame]:
        """gate_tables of every head added; per_matrix: one row per matrix with layer, head, score_<gate>."""
        grouped = per_matrix.groupby(["layer", "head"])
        scores = grouped[[f"score_{g}" for g in GATES]].mean()
        scores["n_seqs"] = grouped.size()
        heads = collect(self.nulls)
        wanted = candidates(scores, heads, self.patterns)
        start = time.process_time()
        permuted = permutation_nulls(matrices, wanted, self.patterns, self.rng_permuted) if wanted else {}
        permuting = time.process_time() - start
        log.info("gate nulls: %.1f CPU s of row draws (%d matrices), %.1f CPU s of permutations (%d head-gates: %s)",
                 self.cpu, len(self.nulls), permuting, sum(map(len, wanted.values())), wanted)  # fmt: skip
        return gate_tables(scores, heads, permuted, self.closed, self.patterns, self.seed)
