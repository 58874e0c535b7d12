"""Self-attention patterns: per-head metrics, the paper's gate taxonomy, K90, spike-domain attention.

Every measure reads one head's masked attention matrix A [query, key] over the n real tokens
(position 0 = [CLS], n - 1 = [SEP], [PAD] excluded; each row sums to 1). The paper names seven
patterns ("gates") but gives no formula for them; the scores below are our operational definitions
(docs/methods.md, "Attention patterns and directionality"), each in [0, 1] with a configurable threshold:

    directional          share of all attention on the `top_keys` most-attended non-special keys
    open                 mean normalised row entropy  H(A_i) / log n
    backward_contextual  mean mass on the `window` previous tokens   sum_{1<=d<=w} A[i, i-d]
    forward_contextual   mean mass on the `window` next tokens       sum_{1<=d<=w} A[i, i+d]
    cluster              block structure beyond the contextual band (see `cluster_score`)
    instance             mean mass on the diagonal  A[i, i]
    closed               mean mass on [CLS] and [SEP]  A[i, 0] + A[i, n-1]

A head's label comes from a null per gate (bertgeom.stats.gates; docs/methods.md, "Attention
gates"); `thresholds` keep today's absolute-threshold label beside it (`gate_absolute`).
Entropy, K90, the masses and the column share are bertgeom.measures' (the dump computes the same
for every sequence); the cluster score and the singular values are defined here.
"""

from __future__ import annotations

import logging
from typing import Callable, Iterator

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import torch
from tqdm import tqdm

from bertgeom.io import class_name, iter_batches, provenance, read_metadata, require_columns, write_parquet
from bertgeom.measures import attention_measure_names, attention_measures, row_k90
from bertgeom.stats.domains import domain_shares, domain_table, membership

log = logging.getLogger(__name__)

GATES = ("directional", "open", "backward_contextual", "forward_contextual", "cluster", "instance", "closed")
GATE_NAMES = {gate: gate.replace("_", " ") for gate in GATES}  # the paper's names
NONE, MULTIPLE = "none", "multiple"  # labels besides the gates: no gate passed, several passed
LABELS = (*GATES, MULTIPLE, NONE)
ROW_SUM_TOL = 0.02  # float16 storage: a row of 427 entries sums to 1 within ~1e-3
MATRIX_BATCH = 32  # attention matrices per record batch (427 x 427 float16 = 364 kB each)
MATRIX_COLUMNS = ["seq_id", "label", "layer", "head", "n", "matrix"]


# ---------------------------------------------------------------------------------------------
# Measures of one attention matrix
# ---------------------------------------------------------------------------------------------


def contiguous_partition(weights: np.ndarray, min_block: int) -> list[tuple[int, int]]:
    """The partition of positions 0..n-1 into contiguous blocks of >= min_block that maximises
    the modularity sum_B [w(B, B) - w(B, .) w(., B)] of a nonnegative matrix `weights` [n, n]
    (normalised to total 1). Exact, by dynamic programming over block ends. Returns [(start, end)).
    """
    w = np.asarray(weights, dtype=np.float64)
    n = w.shape[0]
    w = w / w.sum()
    if n < 2 * min_block:
        return [(0, n)]
    prefix = np.zeros((n + 1, n + 1))
    prefix[1:, 1:] = w.cumsum(0).cumsum(1)
    rows = np.r_[0.0, w.sum(1).cumsum()]
    cols = np.r_[0.0, w.sum(0).cumsum()]
    diag = np.diagonal(prefix)
    # gain[a, b]: modularity of block [a, b) = within-block mass - row share x column share
    within = diag[None, :] - prefix - prefix.T + diag[:, None]
    gain = within - (rows[None, :] - rows[:, None]) * (cols[None, :] - cols[:, None])
    best = np.full(n + 1, -np.inf)
    best[0] = 0.0
    start = np.zeros(n + 1, dtype=np.int64)
    for end in range(min_block, n + 1):
        candidates = best[: end - min_block + 1] + gain[: end - min_block + 1, end]
        start[end] = int(np.argmax(candidates))
        best[end] = candidates[start[end]]
    blocks, end = [], n
    while end > 0:
        blocks.append((int(start[end]), end))
        end = int(start[end])
    return blocks[::-1]


def cluster_score(attention: np.ndarray, window: int, min_block: int) -> tuple[float, int]:
    """Block structure of A [query, key] beyond the contextual band: (score in [0, 1], blocks).

    The band |i - j| <= window and the [CLS]/[SEP] rows and columns are removed first (they belong
    to the instance, contextual and closed gates); the rest, B, is split into the contiguous blocks
    of >= min_block tokens with the largest modularity. The score is Newman's assortativity of that
    partition, r = (sum_B e_BB - sum_B a_B b_B) / (1 - sum_B a_B b_B) (1: all of B within blocks,
    0: no more than chance), clipped at 0 and multiplied by the share of A's mass left in B.
    """
    a = np.asarray(attention, dtype=np.float64)
    n = a.shape[0]
    i, j = np.indices(a.shape)
    rest = np.where(np.abs(i - j) > window, a, 0.0)
    rest[[0, -1], :] = 0.0
    rest[:, [0, -1]] = 0.0
    share = rest.sum() / a.sum()
    if share <= 0:
        return 0.0, 1
    blocks = contiguous_partition(rest, min_block)
    p = rest / rest.sum()
    within = sum(p[s:e, s:e].sum() for s, e in blocks)
    expected = sum(p[s:e].sum() * p[:, s:e].sum() for s, e in blocks)
    if len(blocks) < 2 or expected >= 1:
        return 0.0, len(blocks)
    r = (within - expected) / (1 - expected)
    return float(np.clip(r, 0.0, 1.0) * share), len(blocks)


def matrix_metrics(
    attention: np.ndarray, window: int, top_keys: int, min_block: int, n_singular: int, rank_tol: float
) -> dict[str, float]:
    """Per-head metrics of one attention matrix A [query, key] (n x n, rows sum to 1).

    The measures of bertgeom.measures (means over all n real query rows; special keys 0 = [CLS]
    and n - 1 = [SEP]; the contextual windows of `window` tokens), computed in float64, except the
    cone of the rows (every sequence's is in the dump's attention_summary); then the cluster score
    and the singular values.
    """
    a = np.asarray(attention, dtype=np.float64)
    n = a.shape[0]
    names = attention_measure_names(top_keys, window)
    values = attention_measures(torch.from_numpy(a)[None, None], torch.tensor([n]), top_keys, window)[0, 0].tolist()
    singular = np.linalg.svd(a, compute_uv=False)
    spectrum = singular / singular.sum()
    cluster, blocks = cluster_score(a, window, min_block)
    metrics = {
        "n": float(n),
        **{name: value for name, value in zip(names, values) if name not in ("attn_cone", "attn_cone_ref")},
        "cluster": cluster,
        "cluster_blocks": float(blocks),
        "rank": float((singular > rank_tol * singular[0]).sum()),
        "effective_rank": float(np.exp(-(spectrum * np.log(np.where(spectrum > 0, spectrum, 1.0))).sum())),
        "sv1_share": float(singular[0] ** 2 / (singular**2).sum()),
    }
    metrics.update({f"sv{i + 1}": float(s) for i, s in enumerate(singular[:n_singular])})
    return metrics


def gate_scores(metrics: dict[str, float], top_keys: int) -> dict[str, float]:
    """The seven gate scores (each in [0, 1]) from `matrix_metrics` output."""
    return {
        "directional": metrics[f"col_top{top_keys}"],
        "open": metrics["entropy"],
        "backward_contextual": metrics["mass_back"],
        "forward_contextual": metrics["mass_fwd"],
        "cluster": metrics["cluster"],
        "instance": metrics["mass_self"],
        "closed": metrics["mass_cls"] + metrics["mass_sep"],
    }


def head_gates(attention: np.ndarray, patterns: dict) -> tuple[dict[str, float], dict[str, float]]:
    """(metrics, gate scores) of one matrix with the `patterns` config block."""
    metrics = matrix_metrics(
        attention,
        patterns["window"],
        patterns["top_keys"],
        patterns["min_block"],
        patterns["singular_values"],
        patterns["rank_tol"],
    )
    return metrics, gate_scores(metrics, patterns["top_keys"])


# ---------------------------------------------------------------------------------------------
# Reading the activations
# ---------------------------------------------------------------------------------------------


def iter_attention(path: str, columns: list[str] = MATRIX_COLUMNS) -> Iterator[tuple[dict, np.ndarray]]:
    """(record, A [query, key] float64) per row of attention.parquet or class_attention.parquet.

    `columns` must include `matrix` and a size column (`n` or `length`). Raises ValueError naming
    the file and record if a matrix has the wrong size or a real row does not sum to 1.
    """
    require_columns(path, columns)
    size = "n" if "n" in columns else "length"
    for batch in iter_batches(path, columns, MATRIX_BATCH):
        matrices = batch.column("matrix")
        offsets = matrices.offsets.to_numpy()
        values = matrices.values.to_numpy(zero_copy_only=False)
        records = batch.drop_columns(["matrix"]).to_pylist()
        for row, record in enumerate(records):
            n = int(record[size])
            flat = values[offsets[row] : offsets[row + 1]]
            where = ", ".join(f"{k}={record[k]}" for k in ("seq_id", "label", "layer", "head") if k in record)
            if flat.size != n * n:
                raise ValueError(f"{path}: record {where}: matrix has {flat.size} values, expected {size}^2 = {n * n}")
            a = flat.astype(np.float64).reshape(n, n)
            sums = a.sum(axis=1)
            if size == "n" and np.abs(sums - 1).max() > ROW_SUM_TOL:
                raise ValueError(
                    f"{path}: record {where}: attention rows must sum to 1 (found {sums.min():.4f}..{sums.max():.4f})"
                )
            yield record, a


# ---------------------------------------------------------------------------------------------
# Per-seed tables
# ---------------------------------------------------------------------------------------------


def summary_table(path: str, seed: int, batch_rows: int, top_keys: int) -> pd.DataFrame:
    """Means over every dumped sequence of attention_summary.parquet, tidy, source "all"."""
    measures = list(attention_measure_names(top_keys))
    columns = ["layer", "head"] + measures
    frames = [batch.to_pandas() for batch in iter_batches(path, columns, batch_rows)]
    if not frames:
        raise ValueError(f"{path}: no rows")
    frame = pd.concat(frames, ignore_index=True)
    grouped = frame.groupby(["layer", "head"])
    means = grouped[measures].mean()
    means["n_seqs"] = grouped.size()
    tidy = means.reset_index().melt(id_vars=["layer", "head"], var_name="measure", value_name="value")
    return tidy.assign(seed=seed, source="all")


def subset_tables(
    attention_path: str, member: np.ndarray, domain_names: list[str], patterns: dict, seed: int, classes: list[str],
    each: Callable[[dict, np.ndarray], None] | None = None,
):
    """Metrics, gate scores, K90 samples and domain shares from the subset's full matrices; `each`
    (record, A) is called on every matrix too.

    Returns (per-matrix metrics+scores DataFrame, K90 samples DataFrame, per-matrix domain rows).
    """
    metric_rows, k90_frames, domain_rows = [], [], []
    n_rows = pq.ParquetFile(attention_path).metadata.num_rows
    for record, a in tqdm(iter_attention(attention_path), total=n_rows, desc="attention matrices", mininterval=10):
        metrics, scores = head_gates(a, patterns)
        key = {"layer": record["layer"], "head": record["head"], "seq_id": record["seq_id"]}
        metric_rows.append({**key, **metrics, **{f"score_{g}": s for g, s in scores.items()}})
        if each is not None:
            each(record, a)
        k = row_k90(torch.from_numpy(a)).numpy()
        k90_frames.append(
            pd.DataFrame({**key, "label": record["label"], "class": class_name(record["label"], classes, attention_path),
                          "position": np.arange(len(k)), "k90": k})  # fmt: skip
        )
        observed, expected = domain_shares(a, member)
        for d, name in enumerate(domain_names):
            domain_rows.append({**key, "domain": name, "share": observed[d], "expected": expected[d]})
    if not metric_rows:
        raise ValueError(f"{attention_path}: no attention matrices (config activations.subset_per_class must be >= 1)")
    k90_table = pd.concat(k90_frames, ignore_index=True).assign(seed=seed)
    k90_table = k90_table.astype(
        {"seed": "int32", "layer": "int16", "head": "int16", "label": "int16", "position": "int16", "k90": "int16"}
    )
    k90_table = k90_table[["seed", "layer", "head", "seq_id", "label", "class", "position", "k90"]]
    return pd.DataFrame(metric_rows), k90_table, pd.DataFrame(domain_rows)


def patterns_tables(per_matrix: pd.DataFrame, seed: int) -> pd.DataFrame:
    """Tidy subset metrics and gate scores, averaged over the subset's sequences (+ n_seqs)."""
    grouped = per_matrix.drop(columns=["seq_id"]).groupby(["layer", "head"])
    means = grouped.mean()
    means["n_seqs"] = grouped.size()
    tidy = means.reset_index().melt(id_vars=["layer", "head"], var_name="measure", value_name="value")
    return tidy.assign(seed=seed, source="subset")


def class_domain_rows(path: str, member: np.ndarray, domain_names: list[str]) -> pd.DataFrame:
    """Domain shares of each class's mean attention matrix (class_attention.parquet); classes
    without a correctly classified sequence (n_seqs 0, empty matrix) are skipped."""
    rows = []
    for record, a in iter_attention(path, ["label", "layer", "head", "n_seqs", "length", "matrix"]):
        if record["n_seqs"] == 0:
            continue
        observed, _ = domain_shares(a, member)
        rows += [
            {"layer": record["layer"], "head": record["head"], "domain": d, "share": s}
            for d, s in zip(domain_names, observed)
        ]
    return pd.DataFrame(rows)


def _tidy(frame: pd.DataFrame, ids: list[str]) -> pd.DataFrame:
    columns = ["seed", *ids, "measure", "value"]
    frame = frame[columns].astype({"seed": "int32", "layer": "int16", "head": "int16", "value": "float64"})
    return frame.sort_values(columns[:-1], kind="stable").reset_index(drop=True)


def attention_tables(
    summary: str,
    attention: str,
    class_attention: str,
    token_map: str,
    variants: str,
    null_scores: str,
    patterns: dict,
    classes: list[str],
    seed: int,
    batch_rows: int = 65536,
) -> dict[str, pd.DataFrame]:
    """Every per-seed table of rule attention_patterns: patterns, gates, gate_tests, row_gates, k90,
    domains. null_scores: the null model's per-matrix scores (rule null_model), the closed gate's null."""
    from bertgeom.stats import gates  # gates uses this module's cluster score and gate scores: no import cycle

    parts, subunits, member = membership(token_map, variants)
    domain_names = parts + subunits
    log.info("summary means over every sequence: %s", summary)
    all_rows = summary_table(summary, seed, batch_rows, patterns["top_keys"])
    log.info("subset matrices: %s", attention)
    labeller = gates.Labeller(patterns, gates.read_null_scores(null_scores, patterns), seed)
    per_matrix, k90_table, domain_rows = subset_tables(attention, member, domain_names, patterns, seed, classes,
                                                       each=labeller.add)  # fmt: skip
    gate_tables = labeller.tables(per_matrix, iter_attention(attention))
    class_rows = class_domain_rows(class_attention, member, domain_names)
    domains = domain_table(domain_rows, class_rows, parts, patterns["fdr"], seed)
    return {
        "patterns": _tidy(pd.concat([patterns_tables(per_matrix, seed), all_rows], ignore_index=True),
                          ["layer", "head", "source"]),  # fmt: skip
        **gate_tables,
        "k90": k90_table,
        "domains": _tidy(domains, ["layer", "head", "domain"]),
    }


# ---------------------------------------------------------------------------------------------
# Rule entry point
# ---------------------------------------------------------------------------------------------


def _upstream(path: str) -> dict:
    upstream = read_metadata(path)
    return {k: upstream[k] for k in ("model_dir", "model_sha256") if k in upstream}


def write_attention_patterns(
    summary: str,
    attention: str,
    class_attention: str,
    token_map: str,
    variants: str,
    null_scores: str,
    outputs: dict[str, str],
    patterns: dict,
    classes: list[str],
    seed: int,
    batch_rows: int = 65536,
) -> None:
    """Rule attention_patterns: one seed's patterns, gates, gate_tests, row_gates, k90 and domains
    tables (`outputs` keys)."""
    tables = attention_tables(summary, attention, class_attention, token_map, variants, null_scores, patterns, classes,
                              seed, batch_rows)  # fmt: skip
    meta = provenance({"patterns": patterns, "classes": classes}, seed=seed, **_upstream(attention))
    for name, table in tables.items():
        write_parquet(table, outputs[name], meta=meta)
        log.info("wrote %s (%d rows)", outputs[name], len(table))
