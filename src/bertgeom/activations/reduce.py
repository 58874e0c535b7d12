"""Reductions of one batch: the hooks' sink, and the rows it gives every output file.

Each captured tensor is reduced as soon as its hook fires (bertgeom.measures, in torch, on the
model's device), so memory is bounded by one batch. The subset's token vectors are kept as float16
deviations from their sequence's float32 mean (`encode_tokens`, bertgeom.token_vectors), its
attention matrices as float16 numpy arrays.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import torch

from bertgeom import io
from bertgeom.activations.writers import list_column
from bertgeom.hooks import ATTENTION, HEAD_SOURCE, HEAD_STAGES, STAGES
from bertgeom.measures import _computable, attention_measure_names, attention_measures, real_mask, vector_stats

NO_PREDICTION = -1  # pred of a checkpoint without a trained classifier (written as null)


class BatchReducer:
    """The hooks' sink for one batch: reduces each captured tensor as soon as it is produced.

    n: [batch] real-token counts (on the model's device); length: max_length of the input;
    subset: [batch] bool (keep token vectors and attention matrices); top_keys: k of the col_top{k}
    measure; class_attn: None or a buffer [>= batch, layer, head, L, L] that receives each layer's
    A[:, :, :L, :L] for the class heatmaps.
    """

    def __init__(self, n: torch.Tensor, length: int, subset: np.ndarray, heads: int, token_stages, top_keys: int, class_attn=None):
        self.n, self.heads, self.token_stages, self.top_keys = n, heads, set(token_stages), top_keys
        self.real = real_mask(n, length)  # [batch, seq]
        self.subset = np.flatnonzero(subset)
        self.n_cpu = n.cpu().numpy()
        self.vec: dict[tuple[int, str], dict] = {}
        self.head: dict[tuple[int, str], dict] = {}
        self.attn: dict[int, torch.Tensor] = {}
        self.tokens: dict[tuple[int, int, str], tuple[np.ndarray, np.ndarray, float]] = {}
        self.matrices: dict[tuple[int, int], np.ndarray] = {}
        self.class_attn = class_attn

    def __call__(self, layer: int, stage: str, x: torch.Tensor) -> None:
        if stage == ATTENTION:  # x: A [batch, head, query, key]
            # On CPU one sequence at a time: its [head, L, L] block stays in cache (~1.7x faster).
            step = 1 if x.device.type == "cpu" else len(x)
            chunks = [attention_measures(x[i : i + step], self.n[i : i + step], self.top_keys) for i in range(0, len(x), step)]
            self.attn[layer] = torch.cat(chunks)  # [batch, head, measure]
            for b in self.subset:
                m = self.n_cpu[b]
                self.matrices[b, layer] = x[b, :, :m, :m].to(torch.float16).cpu().numpy()
            if self.class_attn is not None:
                side = self.class_attn.shape[-1]
                # PAD query rows attend to real keys: zero them (PAD keys already hold no mass).
                rows = self.real[:, None, :side, None]
                torch.mul(x[:, :, :side, :side], rows, out=self.class_attn[: len(x), layer])
            return
        stats = vector_stats(x, self.real)  # x: [batch, seq, hidden]
        stats["cls_vec"] = x[:, 0].to(torch.float16)  # a copy: a view would keep all of x alive
        self.vec[layer, stage] = stats
        if stage in HEAD_SOURCE:
            per_head = x.view(*x.shape[:2], self.heads, -1)  # [batch, seq, head, d_head]
            self.head[layer, HEAD_SOURCE[stage]] = vector_stats(per_head, self.real)
        if stage in self.token_stages:
            for b in self.subset:
                self.tokens[b, layer, stage] = encode_tokens(x[b, : self.n_cpu[b]], stats["mean_vec"][b])


def encode_tokens(x: torch.Tensor, center: torch.Tensor) -> tuple[np.ndarray, np.ndarray, float]:
    """x [n, hidden] and its float32 mean [hidden] -> (delta float16 [n, hidden], center, scale):
    x = center + scale * delta with scale the power of two at or above max |x - center|
    (bertgeom.token_vectors). Dividing by a power of two is exact: float16 is the only rounding.
    """
    delta = _computable(x) - center
    _, exponent = torch.frexp(delta.abs().max())  # max |delta| = m 2^e with 0.5 <= m < 1 (0 -> e = 0)
    scale = torch.ldexp(torch.ones((), dtype=delta.dtype, device=delta.device), exponent)
    return (delta / scale).to(torch.float16).cpu().numpy(), center.float().cpu().numpy(), float(scale)


def prediction_columns(labels: np.ndarray, preds: np.ndarray) -> dict:
    """Columns pred (int16) and correct (bool) of rows with these labels and predictions; both null
    where the prediction is NO_PREDICTION (a checkpoint without a trained classifier)."""
    missing = preds == NO_PREDICTION
    return {
        "pred": pa.array(preds.astype(np.int16), pa.int16(), mask=missing),
        "correct": pa.array(labels == preds, pa.bool_(), mask=missing),
    }


def _ident(seq_ids, split, labels, preds, repeat, layers: np.ndarray) -> dict:
    """Identifier columns for rows ordered (sequence, then `repeat` rows each: an int, or a count per
    sequence); layers: the layers of a sequence's rows, repeated cyclically over all rows."""
    owner = np.repeat(np.arange(len(seq_ids)), repeat)  # [rows]: each row's sequence
    return {
        "seq_id": pa.array(np.asarray(seq_ids, dtype=object)[owner], pa.string()),
        "split": pa.array([split] * len(owner), pa.string()),
        "label": labels[owner].astype(np.int16),
        **prediction_columns(labels[owner], preds[owner]),
        "layer": np.resize(layers, len(owner)).astype(np.int16),
    }


def batch_tables(red: BatchReducer, seq_ids, split, labels, preds, n, n_layers, heads, schema) -> dict:
    """The rows of one batch for every per-sequence file, as pyarrow tables."""
    batch = len(seq_ids)
    keys = [(layer, stage) for layer in range(n_layers) for stage in STAGES]

    def stacked(store, keys, name):  # -> numpy [batch, len(keys), ...]
        return torch.stack([store[k][name] for k in keys], dim=1).cpu().numpy()

    layer_of = np.array([k[0] for k in keys])
    summary = _ident(seq_ids, split, labels, preds, len(keys), layer_of)
    summary["stage"] = pa.array([k[1] for k in keys] * batch, pa.string())
    summary["n"] = np.repeat(n, len(keys)).astype(np.int32)
    for name, dtype in (("sum_unit", pa.float32()), ("mean_vec", pa.float32()), ("cls_vec", pa.float16())):
        summary[name] = io.fixed_size_list(stacked(red.vec, keys, name).reshape(batch * len(keys), -1), dtype)
    summary["sum_sq_norm"] = stacked(red.vec, keys, "sum_sq_norm").reshape(-1)
    summary["cone_ref"] = stacked(red.vec, keys, "cone_ref").reshape(-1).astype(np.float32)

    # heads: rows (sequence, layer, head, stage); stacked values are [batch, layer*stage, heads, ...]
    hkeys = [(layer, stage) for layer in range(n_layers) for stage in HEAD_STAGES]
    per = n_layers * heads * len(HEAD_STAGES)

    def head_rows(name):
        values = stacked(red.head, hkeys, name)
        values = values.reshape(batch, n_layers, len(HEAD_STAGES), heads, *values.shape[3:]).swapaxes(2, 3)
        return values.reshape(batch * per, *values.shape[4:])

    head_layer = np.repeat(np.arange(n_layers), heads * len(HEAD_STAGES))
    head_cols = _ident(seq_ids, split, labels, preds, per, head_layer)
    head_cols["head"] = np.tile(np.repeat(np.arange(heads), len(HEAD_STAGES)), batch * n_layers).astype(np.int16)
    head_cols["stage"] = pa.array(list(HEAD_STAGES) * (batch * n_layers * heads), pa.string())
    head_cols["n"] = np.repeat(n, per).astype(np.int32)
    head_cols["sum_unit"] = io.fixed_size_list(head_rows("sum_unit"), pa.float32())
    head_cols["mean_vec"] = io.fixed_size_list(head_rows("mean_vec"), pa.float32())
    head_cols["sum_sq_norm"] = head_rows("sum_sq_norm")
    head_cols["cone_ref"] = head_rows("cone_ref").astype(np.float32)

    # attention summaries: [batch, layers, heads, measures]
    measures = torch.stack([red.attn[layer] for layer in range(n_layers)], dim=1).cpu().numpy()
    att = _ident(seq_ids, split, labels, preds, n_layers * heads, np.repeat(np.arange(n_layers), heads))
    att["head"] = np.tile(np.arange(heads), batch * n_layers).astype(np.int16)
    att["n"] = np.repeat(n, n_layers * heads).astype(np.int32)
    for i, name in enumerate(attention_measure_names(red.top_keys)):
        att[name] = measures[..., i].reshape(-1).astype(np.float32)

    tables = {
        "summary": pa.table(summary, schema=schema["summary"]),
        "heads": pa.table(head_cols, schema=schema["heads"]),
        "attention_summary": pa.table(att, schema=schema["attention_summary"]),
    }
    tables.update(_subset_tables(red, seq_ids, split, labels, preds, n, n_layers, heads, schema))
    return tables


def _subset_tables(red: BatchReducer, seq_ids, split, labels, preds, n, n_layers, heads, schema) -> dict:
    """tokens: {(layer, stage): rows (sequence, position)} and attention (sequence, layer, head) rows of the subset."""
    tokens = {}
    for layer in range(n_layers):
        for stage in STAGES:
            subset = [b for b in red.subset if (b, layer, stage) in red.tokens]
            if subset:
                tokens[layer, stage] = token_table([red.tokens[b, layer, stage] for b in subset], [seq_ids[b] for b in subset],
                                                    split, labels[subset], preds[subset], layer, stage, schema["tokens"])  # fmt: skip

    sub = red.subset
    if len(sub):
        per = n_layers * heads
        att = _ident([seq_ids[b] for b in sub], split, labels[sub], preds[sub], per, np.repeat(np.arange(n_layers), heads))
        att["head"] = np.tile(np.arange(heads), len(sub) * n_layers).astype(np.int16)
        att["n"] = np.repeat(n[sub], per).astype(np.int32)
        att["matrix"] = list_column(
            [red.matrices[b, layer][h] for b in sub for layer in range(n_layers) for h in range(heads)], pa.float16()
        )
        attention = pa.table(att, schema=schema["attention"])
    else:
        attention = schema["attention"].empty_table()
    return {"tokens": tokens, "attention": attention}


def token_table(encoded, seq_ids, split, labels, preds, layer, stage, schema: pa.Schema) -> pa.Table:
    """Rows (sequence, position) of one (layer, stage); encoded: per sequence (delta, center, scale)."""
    counts = np.array([len(delta) for delta, _, _ in encoded])
    first = np.zeros(counts.sum(), dtype=bool)
    first[np.cumsum(counts) - counts] = True  # the rows of position 0 carry center and scale
    cols = _ident(seq_ids, split, labels, preds, counts, np.array([layer]))
    cols["stage"] = pa.array([stage] * len(first), pa.string())
    cols["position"] = np.concatenate([np.arange(c, dtype=np.int32) for c in counts])
    cols["delta"] = io.fixed_size_list(np.concatenate([d for d, _, _ in encoded]), pa.float16())
    cols["center"] = _on_rows(io.fixed_size_list(np.stack([c for _, c, _ in encoded]), pa.float32()), first)
    cols["scale"] = _on_rows(pa.array([s for _, _, s in encoded], pa.float32()), first)
    return pa.table(cols, schema=schema)


def _on_rows(values: pa.Array, where: np.ndarray) -> pa.Array:
    """values (one per True of `where`) at the True rows, null at the others."""
    index = np.where(where, np.cumsum(where) - 1, -1)
    return values.take(pa.array(index, pa.int64(), mask=~where))
