"""Activation dumping: what a trained BERT computes inside, captured exactly, reduced on the fly.

Forward hooks on transformers' own modules (BertLayer, BertSelfAttention, its q/k/v projections,
BertSelfOutput, BertOutput) capture, per layer, the stages of the information stream (STAGES) and
the masked attention probabilities A. Each captured tensor is reduced as soon as the hook fires
(in torch, on the model's device), so memory is bounded by one batch, never by the data set:

- every sequence: sufficient statistics per (sequence, layer, stage) and per (sequence, layer,
  head, per-head stage), and attention summaries per (sequence, layer, head);
- a stratified subset: the token vectors and attention matrices themselves (float16);
- per class: the attention matrix averaged over the correctly classified sequences.

Rows are streamed to Parquet (bertgeom.io.ParquetStream); docs/outputs.md is the schema.
PAD positions (position >= n_tokens) never enter any statistic, except the columns named `*_ref`,
the reference-compatible variants of the original analysis code, which sum over every one of the
max_length rows. The model is always run on the full max_length padding so those rows exist.

The model runs with attn_implementation=EXACT_ATTENTION: transformers' eager attention (A is
materialised), computed in place; A and every stage are bit-identical to eager's (tests).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from transformers import AttentionInterface, AttentionMaskInterface
from transformers.masking_utils import eager_mask

from bertgeom import io
from bertgeom.model import load_model

log = logging.getLogger("bertgeom.activations")

# The stages of one layer, in the order of the information stream (docs/outputs.md).
STAGES = ("input", "q", "k", "v", "context", "attn_output", "attn_ln", "ffn", "output")
# Per-head stages and the full-width stage whose column block h is head h (z = A_h V_h).
HEAD_STAGES = ("q", "k", "v", "z")
HEAD_SOURCE = {"q": "q", "k": "k", "v": "v", "context": "z"}
ATTENTION_MEASURES = (
    "entropy", "k90", "mass_cls", "mass_sep", "mass_self", "mass_prev", "mass_next",
    "k90_q10", "k90_q50", "k90_q90", "col_top5", "attn_cone", "attn_cone_ref",
)  # fmt: skip
OUTPUT_FILES = ("summary", "heads", "attention_summary", "tokens", "attention", "class_attention")
TOKEN_COLUMNS = ("seq_id", "label", "input_ids", "n_tokens")
K90_MASS = 0.9
TOP_KEYS = 5
EXACT_ATTENTION = "bertgeom_eager"
# On CPU a forward chunk is sized so that its fp32 scores [chunk, heads, L, L] take about this much
# per torch thread (a core's L2): bigger chunks run ~10% slower per sequence, smaller ones leave
# threads idle (measured on the default model, 1 and 2 threads).
CPU_SCORES_BYTES = 8 * 2**20
TRIM_EVERY = 16  # sequences between returns of freed heap memory to the OS (free_heap_memory)


# ---------------------------------------------------------------------------------------------
# Model and hooks


def eager_attention_in_place(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """transformers' eager_attention_forward for BERT, with the scores scaled, masked and softmaxed in place.

    query, key, value: [batch, heads, seq, d_head]; attention_mask: additive [batch, 1, query, key].
    Returns (Z [batch, query, heads, d_head], A [batch, heads, query, key]). The operations and their
    order are eager's, so the results are bit-identical (tests). Eager fills three fresh [batch,
    heads, L, L] buffers after QK^T; on CPU that costs more than its two matmuls.
    """
    if scaling is None:
        scaling = query.size(-1) ** -0.5
    scores = torch.matmul(query, key.transpose(2, 3)).mul_(scaling)
    if attention_mask is not None:
        scores.add_(attention_mask)
    if scores.device.type == "cpu":
        weights = torch.softmax(scores, dim=-1, out=scores)
    else:  # the CUDA caching allocator makes a fresh buffer cheap; keep eager's out-of-place kernel
        weights = torch.softmax(scores, dim=-1)
    weights = torch.nn.functional.dropout(weights, p=dropout, training=module.training)
    return torch.matmul(weights, value).transpose(1, 2).contiguous(), weights


AttentionInterface.register(EXACT_ATTENTION, eager_attention_in_place)
AttentionMaskInterface.register(EXACT_ATTENTION, eager_mask)


def forward_batch(batch_size: int, device: torch.device, heads: int, length: int) -> int:
    """Sequences per forward pass: `batch_size` on CUDA; on CPU as many as keep the scores in cache."""
    if device.type != "cpu":
        return batch_size
    budget = CPU_SCORES_BYTES * torch.get_num_threads()
    return max(1, min(batch_size, budget // (4 * heads * length * length)))


def free_heap_memory() -> None:
    """Return freed heap memory to the OS: glibc's malloc_trim(0), a no-op without glibc.

    The CPU chunks' buffers (a few MB) fall under glibc's dynamic mmap threshold, so they come from
    the heap; real sequences differ by a few tokens, so do the buffers, and the fragmented heap grew
    to 3.7 GB on the default run (1.5 GB when trimmed every TRIM_EVERY sequences, at the same speed).
    """
    trim = getattr(ctypes.CDLL(None), "malloc_trim", None)
    if trim is not None:
        trim(0)


def hook_names(num_layers: int) -> list[str]:
    """Names of the capture points: `layer.{i}.{stage}` for STAGES, and `layer.{i}.attn` for A."""
    return [f"layer.{i}.{stage}" for i in range(num_layers) for stage in (*STAGES[:4], "attn", *STAGES[4:])]


@contextlib.contextmanager
def capture(model, sink: Callable[[int, str, torch.Tensor], None]) -> Iterator[list[str]]:
    """Register forward hooks that call `sink(layer, stage, tensor)` as each tensor is computed.

    Stages and shapes (hook name `layer.{i}.{stage}`):
      input        BertLayer's input hidden states                         [batch, seq, hidden]
      q, k, v      X W^T + b of attention.self.query/key/value              [batch, seq, hidden]
      attn         A = softmax(Q_h K_h^T / sqrt(d) + mask), BertSelfAttention's weights
                                                                            [batch, heads, query, key]
      context      Z_h = A_h V_h, heads concatenated (BertSelfAttention out) [batch, seq, hidden]
      attn_output  W_O context + b_O (attention.output.dense, before the residual)
      attn_ln      LayerNorm(attn_output + input) (attention.output)
      ffn          W_2 gelu(W_1 attn_ln + b_1) + b_2 (output.dense, before the residual)
      output       LayerNorm(ffn + attn_ln), the layer's output (BertLayer)
    Head h of q, k, v and context is columns h*d_head:(h+1)*d_head (= rows of W).
    """
    if model.config._attn_implementation not in ("eager", EXACT_ATTENTION):
        raise ValueError(
            f"model uses attn_implementation={model.config._attn_implementation!r}; load it with "
            f"attn_implementation='eager' (or {EXACT_ATTENTION!r}) so the attention probabilities exist"
        )
    if model.training:
        raise ValueError("model is in training mode: call model.eval() (dropout would change every captured tensor)")

    def after(layer: int, stage: str, pick: int | None = None):
        def hook(module, args, output):
            sink(layer, stage, output if pick is None else output[pick])

        return hook

    def before(layer: int):
        def hook(module, args, kwargs):
            sink(layer, "input", args[0] if args else kwargs["hidden_states"])

        return hook

    handles = []
    for i, block in enumerate(model.bert.encoder.layer):
        attention = block.attention
        handles.append(block.register_forward_pre_hook(before(i), with_kwargs=True))
        handles.append(attention.self.query.register_forward_hook(after(i, "q")))
        handles.append(attention.self.key.register_forward_hook(after(i, "k")))
        handles.append(attention.self.value.register_forward_hook(after(i, "v")))
        handles.append(attention.self.register_forward_hook(after(i, "attn", pick=1)))
        handles.append(attention.self.register_forward_hook(after(i, "context", pick=0)))
        # Dropout after these denses is the identity in eval mode, so the dense output is the stage.
        handles.append(attention.output.dense.register_forward_hook(after(i, "attn_output")))
        handles.append(attention.output.register_forward_hook(after(i, "attn_ln")))
        handles.append(block.output.dense.register_forward_hook(after(i, "ffn")))
        handles.append(block.register_forward_hook(after(i, "output")))
    try:
        yield hook_names(len(model.bert.encoder.layer))
    finally:
        for handle in handles:
            handle.remove()


def capture_batch(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """Run one (small) batch and keep every captured tensor: (logits [batch, classes], {hook name: tensor})."""
    captured: dict[str, torch.Tensor] = {}

    def keep(layer: int, stage: str, tensor: torch.Tensor) -> None:
        captured[f"layer.{layer}.{stage}"] = tensor

    # no_grad rather than inference_mode: the caller may compute with these tensors and the weights.
    with torch.no_grad(), capture(model, keep):
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
    return logits, captured


# ---------------------------------------------------------------------------------------------
# Reductions (torch, on the tensors' device)


def real_mask(n: torch.Tensor, length: int) -> torch.Tensor:
    """[batch, length] bool: position < n (real tokens: [CLS], k-mers, [SEP])."""
    return torch.arange(length, device=n.device)[None, :] < n[:, None]


def vector_stats(x: torch.Tensor, real: torch.Tensor) -> dict[str, torch.Tensor]:
    """Sufficient statistics of the real token vectors of each sequence.

    x: [batch, seq, *groups, width] (groups: e.g. heads); real: [batch, seq] bool.
    Returns, each [batch, *groups, width] or [batch, *groups]:
      sum_unit = sum_real x/||x|| (a zero vector counts as 0), mean_vec = sum_real x / n,
      sum_sq_norm = sum_real ||x||^2 (float64), cone_ref = ||sum over ALL seq rows of x/||x|| ||.
    """
    x = x.float()
    norms = x.norm(dim=-1)  # [batch, seq, *groups]
    inv = 1 / norms.clamp_min(torch.finfo(x.dtype).tiny)
    w = real.to(x.dtype).view(*real.shape, *([1] * (x.dim() - 3))).expand_as(norms)
    # One weighted sum over the tokens gives all three vector sums: weights [batch, 3, seq, *groups].
    sums = torch.einsum("bks...,bs...d->bk...d", torch.stack([w * inv, w, inv], dim=1), x)
    return {
        "sum_unit": sums[:, 0],
        "mean_vec": sums[:, 1] / w.sum(1).unsqueeze(-1),
        "sum_sq_norm": (w.double() * norms.double() ** 2).sum(1),
        "cone_ref": sums[:, 2].norm(dim=-1),
    }


def attention_stats(attn: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    """Summaries of each head's masked attention matrix over its real query rows.

    attn: [batch, heads, query, key], rows summing to 1 over the real keys (PAD keys get 0);
    n: [batch] real-token counts. Returns [batch, heads, len(ATTENTION_MEASURES)]:
      entropy    mean over real rows of H(row) / log n  (H = -sum a log a)
      k90        mean over real rows of the number of keys that hold 90% of the row's mass
      mass_cls / mass_sep / mass_self   mean A[q, 0] / A[q, n-1] / A[q, q]
      mass_prev / mass_next             mean A[q, q-1] / A[q, q+1] (0 where no such real key)
      k90_q10 / k90_q50 / k90_q90       quantiles of k90 over real rows (linear interpolation)
      col_top5   mass of the 5 most-attended non-special keys (column sums over real rows) / n
      attn_cone  ||sum_real_rows a_q/||a_q|| || / n   (rows as vectors over the keys)
      attn_cone_ref  ||sum over all rows, PAD rows included, of a_q/||a_q|| ||  (reference-compatible)
    """
    batch, heads, length, _ = attn.shape
    attn = attn.float()
    tiny = torch.finfo(attn.dtype).tiny
    # PAD keys hold no mass: keys beyond the longest sequence are dropped everywhere.
    top = int(n.max())
    keys = attn[..., :top]  # [batch, heads, query (all rows), key]
    real_all = real_mask(n, length)[:, None, :].float()  # [batch, 1, query]
    inv = 1 / keys.norm(dim=-1).clamp_min(tiny)  # [batch, heads, query]
    # One weighted sum over the rows gives the real rows' unit sum (attn_cone), the column masses
    # of the real rows (col_top5) and the unit sum over every row, PAD included (attn_cone_ref).
    weights = torch.stack([real_all * inv, real_all.expand_as(inv), inv], dim=2)  # [batch, heads, 3, query]
    sums = weights @ keys  # [batch, heads, 3, key]
    a = attn[:, :, :top, :top]  # PAD rows are excluded from the rest: the [top, top] corner
    real = real_mask(n, top)  # [batch, top]
    rows = real[:, None, :].float()  # [batch, 1, query]
    nf = n.float()[:, None]  # [batch, 1]

    def row_mean(per_row: torch.Tensor) -> torch.Tensor:  # [batch, heads, query] -> [batch, heads]
        return (per_row * rows).sum(-1) / nf

    # Entropy and K90 on the rows sorted ascending: contiguous, so each pass over them is cheaper.
    ordered = sort_rows(a)
    entropy = -ordered.clamp_min(tiny).log_().mul_(ordered).sum(-1) / torch.log(nf)[..., None]  # 0 log 0 = 0
    k90 = keys_for_mass(ordered, K90_MASS).float()
    k90_q = torch.nanquantile(k90.masked_fill(~real[:, None, :], float("nan")), torch.tensor([0.1, 0.5, 0.9], device=a.device), dim=-1)
    sep = (n - 1).view(batch, 1, 1, 1).expand(batch, heads, top, 1)
    prev = torch.nn.functional.pad(a.diagonal(offset=-1, dim1=-2, dim2=-1), (1, 0))  # A[q, q-1], q = 0 -> 0
    nxt = torch.nn.functional.pad(a.diagonal(offset=1, dim1=-2, dim2=-1), (0, 1))  # A[q, q+1], last -> 0
    ordinary = real.clone()  # keys 1..n-2: neither [CLS], [SEP] nor PAD
    ordinary[:, 0] = False
    ordinary[torch.arange(batch, device=a.device), n - 1] = False
    columns = sums[:, :, 1].masked_fill(~ordinary[:, None, :], 0)
    col_top = columns.topk(min(TOP_KEYS, top), dim=-1).values.sum(-1) / nf
    cone = sums[:, :, 0].norm(dim=-1) / nf
    cone_ref = sums[:, :, 2].norm(dim=-1)
    measures = [
        row_mean(entropy), row_mean(k90), row_mean(a[..., 0]), row_mean(a.gather(-1, sep).squeeze(-1)),
        row_mean(a.diagonal(dim1=-2, dim2=-1)), row_mean(prev), row_mean(nxt),
        k90_q[0], k90_q[1], k90_q[2], col_top, cone, cone_ref,
    ]  # fmt: skip
    return torch.stack(measures, dim=-1)


def sort_rows(a: torch.Tensor) -> torch.Tensor:
    """[..., key] -> a new contiguous tensor with each row sorted ascending."""
    if a.device.type == "cpu":
        # torch's CPU sort also builds int64 indices and is ~25x slower than numpy's SIMD sort.
        return torch.from_numpy(np.sort(a.numpy(), axis=-1))
    return a.sort(dim=-1).values


def keys_for_mass(ordered: torch.Tensor, mass: float = K90_MASS) -> torch.Tensor:
    """[..., key] rows sorted ascending (sort_rows) -> [...] int: the fewest keys holding `mass` of each
    row's total (K90 for 0.9). Consumes `ordered` (its rows become cumulative sums).

    With C the cumulative sum of the sorted row, the top k keys hold >= mass of the total exactly
    when C[L-k] <= (1 - mass) * total, so k = L - #{j : C[j] <= (1 - mass) * total}.
    """
    cumulative = ordered.cumsum_(dim=-1)
    # C is non-decreasing, so the count is a binary search (a comparison pass costs more than the sort).
    return ordered.shape[-1] - torch.searchsorted(cumulative, (1 - mass) * cumulative[..., -1:].contiguous(), right=True)[..., 0]


# ---------------------------------------------------------------------------------------------
# Output schemas


def schemas(hidden: int, d_head: int) -> dict[str, pa.Schema]:
    """The Parquet schema of each output file (docs/outputs.md)."""
    ident = [
        ("seq_id", pa.string()), ("split", pa.string()), ("label", pa.int16()),
        ("pred", pa.int16()), ("correct", pa.bool_()), ("layer", pa.int16()),
    ]  # fmt: skip

    def stats(width: int) -> list:
        return [
            ("n", pa.int32()), ("sum_unit", pa.list_(pa.float32(), width)),
            ("mean_vec", pa.list_(pa.float32(), width)), ("sum_sq_norm", pa.float64()),
        ]  # fmt: skip

    return {
        "summary": pa.schema(
            [*ident, ("stage", pa.string()), *stats(hidden), ("cls_vec", pa.list_(pa.float16(), hidden)), ("cone_ref", pa.float32())]
        ),
        "heads": pa.schema([*ident, ("head", pa.int16()), ("stage", pa.string()), *stats(d_head), ("cone_ref", pa.float32())]),
        "attention_summary": pa.schema(
            [*ident, ("head", pa.int16()), ("n", pa.int32()), *[(m, pa.float32()) for m in ATTENTION_MEASURES]]
        ),
        "tokens": pa.schema(
            [*ident, ("stage", pa.string()), ("position", pa.int32()), ("vec", pa.list_(pa.float16(), hidden))]
        ),
        "attention": pa.schema([*ident, ("head", pa.int16()), ("n", pa.int32()), ("matrix", pa.list_(pa.float16()))]),
        "class_attention": pa.schema(
            [
                ("label", pa.int16()), ("class", pa.string()), ("layer", pa.int16()), ("head", pa.int16()),
                ("n_seqs", pa.int32()), ("length", pa.int32()), ("matrix", pa.list_(pa.float32())),
            ]  # fmt: skip
        ),
    }


def _list_column(blocks: list[np.ndarray], dtype: pa.DataType) -> pa.ListArray:
    """Variable-length list column: one row per flattened block."""
    offsets = np.concatenate([[0], np.cumsum([b.size for b in blocks])]).astype(np.int32)
    values = np.concatenate([b.reshape(-1) for b in blocks]) if blocks else np.zeros(0)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values, type=dtype))


def _writer_options(schema: pa.Schema) -> dict:
    """Dictionary encoding for the string identifiers only, statistics for the scalar columns only.

    Arrow otherwise tries a dictionary for every float column (and gives up per page), and keeps
    min/max of every list element: together about half of the write time of the float16 tensors.
    zstd level 1: float16 activations compress ~5% less than at level 3, in half the time.
    """
    scalar = [f.name for f in schema if not pa.types.is_list(f.type) and not pa.types.is_fixed_size_list(f.type)]
    return {
        "use_dictionary": [f.name for f in schema if pa.types.is_string(f.type)],
        "write_statistics": scalar,
        "compression_level": 1,
    }


class _RowGroups:
    """Collects a file's per-batch tables and writes them as one row group of about `target_bytes`.

    Per-batch tables are small (a few hundred rows); row groups of tens of MB read faster. Writes
    run on `pool` (background threads: Parquet encoding and zstd release the GIL, so they overlap
    the next forward pass); at most one row group per file is in flight, so memory stays bounded.
    """

    def __init__(self, stream: io.ParquetStream, target_bytes: int, pool: ThreadPoolExecutor):
        self.stream, self.target, self.pool = stream, target_bytes, pool
        self.tables, self.nbytes, self.pending = [], 0, None

    def add(self, table: pa.Table) -> None:
        self.tables.append(table)
        self.nbytes += table.nbytes
        if self.nbytes >= self.target:
            self.flush()

    def flush(self) -> None:
        self.wait()
        if self.tables:
            self.pending = self.pool.submit(_write_group, self.stream, self.tables)
        self.tables, self.nbytes = [], 0

    def wait(self) -> None:
        """Block until the row group in flight is written; re-raises its error."""
        if self.pending is not None:
            self.pending, pending = None, self.pending
            pending.result()


def _write_group(stream: io.ParquetStream, tables: list[pa.Table]) -> None:
    stream.write(pa.concat_tables(tables).combine_chunks())


# ---------------------------------------------------------------------------------------------
# One batch


class _BatchReducer:
    """The hooks' sink for one batch: reduces each captured tensor as soon as it is produced.

    n: [batch] real-token counts (on the model's device); length: max_length of the input;
    subset: [batch] bool (keep token vectors and attention matrices); class_attn: None or a buffer
    [>= batch, layers, heads, L, L] that receives each layer's A[:, :, :L, :L] for the class heatmaps.
    """

    def __init__(self, n: torch.Tensor, length: int, subset: np.ndarray, heads: int, token_stages, class_attn=None):
        self.n, self.heads, self.token_stages = n, heads, set(token_stages)
        self.real = real_mask(n, length)  # [batch, seq]
        self.subset = np.flatnonzero(subset)
        self.n_cpu = n.cpu().numpy()
        self.vec: dict[tuple[int, str], dict] = {}
        self.head: dict[tuple[int, str], dict] = {}
        self.attn: dict[int, torch.Tensor] = {}
        self.tokens: dict[tuple[int, int, str], np.ndarray] = {}
        self.matrices: dict[tuple[int, int], np.ndarray] = {}
        self.class_attn = class_attn

    def __call__(self, layer: int, stage: str, x: torch.Tensor) -> None:
        if stage == "attn":
            # On CPU one sequence at a time: its [heads, L, L] block stays in cache (~1.7x faster).
            step = 1 if x.device.type == "cpu" else len(x)
            self.attn[layer] = torch.cat([attention_stats(x[i : i + step], self.n[i : i + step]) for i in range(0, len(x), step)])
            for b in self.subset:
                m = self.n_cpu[b]
                self.matrices[b, layer] = x[b, :, :m, :m].to(torch.float16).cpu().numpy()
            if self.class_attn is not None:
                side = self.class_attn.shape[-1]
                # PAD query rows attend to real keys: zero them (PAD keys already hold no mass).
                rows = self.real[:, None, :side, None]
                torch.mul(x[:, :, :side, :side], rows, out=self.class_attn[: len(x), layer])
            return
        stats = vector_stats(x, self.real)
        stats["cls_vec"] = x[:, 0].to(torch.float16)  # a copy: a view would keep all of x alive
        self.vec[layer, stage] = stats
        if stage in HEAD_SOURCE:
            per_head = x.view(*x.shape[:2], self.heads, -1)  # [batch, seq, heads, d_head]
            self.head[layer, HEAD_SOURCE[stage]] = vector_stats(per_head, self.real)
        if stage in self.token_stages:
            for b in self.subset:
                self.tokens[b, layer, stage] = x[b, : self.n_cpu[b]].to(torch.float16).cpu().numpy()


def _ident(seq_ids, split, labels, preds, repeat: int, layers: np.ndarray) -> dict:
    """Identifier columns for rows ordered (sequence, then `repeat` rows each); layers: [repeat]."""
    return {
        "seq_id": pa.array(np.repeat(np.asarray(seq_ids, dtype=object), repeat), pa.string()),
        "split": pa.array([split] * (len(seq_ids) * repeat), pa.string()),
        "label": np.repeat(labels, repeat).astype(np.int16),
        "pred": np.repeat(preds, repeat).astype(np.int16),
        "correct": np.repeat(labels == preds, repeat),
        "layer": np.tile(layers, len(seq_ids)).astype(np.int16),
    }


def _batch_tables(red: _BatchReducer, seq_ids, split, labels, preds, n, n_layers, heads, schema) -> dict:
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
    for i, name in enumerate(ATTENTION_MEASURES):
        att[name] = measures[..., i].reshape(-1).astype(np.float32)

    tables = {
        "summary": pa.table(summary, schema=schema["summary"]),
        "heads": pa.table(head_cols, schema=schema["heads"]),
        "attention_summary": pa.table(att, schema=schema["attention_summary"]),
    }
    tables.update(_subset_tables(red, seq_ids, split, labels, preds, n, n_layers, heads, schema))
    return tables


def _subset_tables(red: _BatchReducer, seq_ids, split, labels, preds, n, n_layers, heads, schema) -> dict:
    """tokens (sequence, layer, stage, position) and attention (sequence, layer, head) rows of the subset."""
    token_keys = [(b, layer, s) for b in red.subset for layer in range(n_layers) for s in STAGES if (b, layer, s) in red.tokens]
    tok: dict[str, list] = {k: [] for k in schema["tokens"].names}
    blocks = []
    for b, layer, stage in token_keys:
        vecs = red.tokens[b, layer, stage]
        rows = len(vecs)
        for key, value in (("seq_id", seq_ids[b]), ("split", split), ("label", labels[b]), ("pred", preds[b])):
            tok[key].append(np.full(rows, value, dtype=object if key in ("seq_id", "split") else np.int16))
        tok["correct"].append(np.full(rows, labels[b] == preds[b]))
        tok["layer"].append(np.full(rows, layer, np.int16))
        tok["stage"].append(np.full(rows, stage, dtype=object))
        tok["position"].append(np.arange(rows, dtype=np.int32))
        blocks.append(vecs)
    if blocks:
        cols = {k: np.concatenate(v) for k, v in tok.items() if k != "vec"}
        cols["vec"] = io.fixed_size_list(np.concatenate(blocks), pa.float16())
        tokens = pa.table(cols, schema=schema["tokens"])
    else:
        tokens = schema["tokens"].empty_table()

    sub = red.subset
    if len(sub):
        per = n_layers * heads
        att = _ident([seq_ids[b] for b in sub], split, labels[sub], preds[sub], per, np.repeat(np.arange(n_layers), heads))
        att["head"] = np.tile(np.arange(heads), len(sub) * n_layers).astype(np.int16)
        att["n"] = np.repeat(n[sub], per).astype(np.int32)
        att["matrix"] = _list_column(
            [red.matrices[b, layer][h] for b in sub for layer in range(n_layers) for h in range(heads)], pa.float16()
        )
        attention = pa.table(att, schema=schema["attention"])
    else:
        attention = schema["attention"].empty_table()
    return {"tokens": tokens, "attention": attention}


# ---------------------------------------------------------------------------------------------
# The whole dump


def _read_tokens_index(path: str | Path, num_labels: int, max_positions: int) -> tuple[pa.Table, int]:
    """seq_id, label, n_tokens of a tokens file (validated) and its max_length."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: tokens file not found")
    schema = pq.read_schema(path)
    missing = [c for c in TOKEN_COLUMNS if c not in schema.names]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; expected {list(TOKEN_COLUMNS)} (docs/outputs.md)")
    ids_type = schema.field("input_ids").type
    if not pa.types.is_fixed_size_list(ids_type):
        raise ValueError(f"{path}: input_ids must be fixed_size_list<int32>[max_length], got {ids_type}")
    width = ids_type.list_size
    if width > max_positions:
        raise ValueError(f"{path}: max_length {width} exceeds the model's max_position_embeddings {max_positions}")
    index = pq.read_table(path, columns=["seq_id", "label", "n_tokens"])
    n = index.column("n_tokens").to_numpy()
    labels = index.column("label").to_numpy()
    bad = np.flatnonzero((n < 2) | (n > width))
    if len(bad):
        raise ValueError(
            f"{path}: record {index.column('seq_id')[int(bad[0])]}: n_tokens={n[bad[0]]}, expected 2..{width} ([CLS] and [SEP] included)"
        )
    bad = np.flatnonzero((labels < 0) | (labels >= num_labels))
    if len(bad):
        raise ValueError(f"{path}: record {index.column('seq_id')[int(bad[0])]}: label {labels[bad[0]]} not in 0..{num_labels - 1}")
    return index, width


def subset_ids(index: pa.Table, per_class: int) -> set[str]:
    """The first `per_class` seq_ids (in seq_id order) of each label: the token-level subset."""
    frame = index.select(["seq_id", "label"]).to_pandas().sort_values(["label", "seq_id"])
    return set(frame.groupby("label").head(per_class)["seq_id"])


def _check_classes(model, classes: list[str]) -> None:
    names = [model.config.id2label[i] for i in range(model.config.num_labels)]
    if names != list(classes):
        raise ValueError(f"model id2label {names} does not match config classes {list(classes)}")


def pick_device(setting: str) -> torch.device:
    """`auto`: CUDA when available, else CPU."""
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if setting == "cuda" and not torch.cuda.is_available():
        raise ValueError("config activations.device is 'cuda' but no CUDA device is available")
    return torch.device(setting)


def dump(
    model_dir: str | Path,
    token_files: dict[str, str | Path],
    outputs: dict[str, str | Path],
    classes: list[str],
    settings: dict,
) -> dict:
    """Dump the activations of every sequence of `token_files` ({split: tokens parquet}) to `outputs`.

    outputs: {name: path} for every name in OUTPUT_FILES. settings: config `activations`
    (subset_per_class, token_stages, and the execution-only batch_size, device, row_group_mb).
    Returns counts (sequences, seconds) for logging. Outputs appear only if everything succeeded.
    """
    classes = list(classes)
    device = pick_device(settings["device"])
    model = load_model(model_dir, device, attn_implementation=EXACT_ATTENTION)  # A is materialised
    _check_classes(model, classes)
    cfg = model.config
    n_layers, heads, hidden = cfg.num_hidden_layers, cfg.num_attention_heads, cfg.hidden_size
    d_head = hidden // heads
    unknown = sorted(set(settings["token_stages"]) - set(STAGES))
    if unknown:
        raise ValueError(f"config activations.token_stages: unknown stage(s) {unknown}; expected some of {list(STAGES)}")

    indexes, widths = {}, {}
    for split, path in token_files.items():
        indexes[split], widths[split] = _read_tokens_index(path, len(classes), cfg.max_position_embeddings)
    if len(set(widths.values())) > 1:
        raise ValueError(f"tokens files differ in max_length: {widths}")
    class_len = max(int(pc.max(idx.column("n_tokens")).as_py()) for idx in indexes.values())
    total = sum(idx.num_rows for idx in indexes.values())

    meta = io.provenance(
        {"classes": classes, "activations": settings}, model_dir, splits=list(token_files), stages=list(STAGES), head_stages=list(HEAD_STAGES),
        token_stages=list(settings["token_stages"]), hook_points=hook_names(n_layers), layers=n_layers,
        heads=heads, hidden=hidden, d_head=d_head, max_length=next(iter(widths.values())), device=str(device),
    )  # fmt: skip
    schema = schemas(hidden, d_head)
    # Class heatmaps: A of the batch waits in class_buf until the predictions are known, then the
    # correctly classified sequences are summed into class_sum (float32: sums of values in [0, 1]).
    class_sum = torch.zeros((len(classes), n_layers, heads, class_len, class_len), device=device)
    class_buf = torch.empty((settings["batch_size"], n_layers, heads, class_len, class_len), device=device)
    class_hist = np.zeros((len(classes), class_len + 1), dtype=np.int64)  # correct sequences per (label, n)
    target = int(settings["row_group_mb"] * 2**20)
    done, start = 0, time.perf_counter()
    log.info("dumping %d sequences of %s on %s: %d layers, %d heads, hidden %d", total, list(token_files), device, n_layers, heads, hidden)
    with contextlib.ExitStack() as stack:
        streams = {
            name: stack.enter_context(
                io.ParquetStream(outputs[name], schema[name], meta={**meta, "file": name}, **_writer_options(schema[name]))
            )
            for name in OUTPUT_FILES
        }
        # Entered after the streams, so it exits first: no write is in flight when they close or abort.
        # Two writers: Arrow encodes float16 at ~180 MB/s, so the token-level files need both.
        pool = stack.enter_context(ThreadPoolExecutor(max_workers=2, thread_name_prefix="parquet"))
        groups = {name: _RowGroups(streams[name], target, pool) for name in OUTPUT_FILES if name != "class_attention"}
        for split, path in token_files.items():
            keep = subset_ids(indexes[split], settings["subset_per_class"])
            chunk = forward_batch(settings["batch_size"], device, heads, widths[split])
            reader = pq.ParquetFile(path).iter_batches(batch_size=chunk, columns=list(TOKEN_COLUMNS))
            for record in reader:
                seq_ids = record.column("seq_id").to_pylist()
                labels = record.column("label").to_numpy().astype(np.int64)
                n_np = record.column("n_tokens").to_numpy().astype(np.int64)
                ids = torch.from_numpy(io.to_matrix(record.column("input_ids")).astype(np.int64)).to(device)
                n = torch.from_numpy(n_np).to(device)
                subset = np.array([s in keep for s in seq_ids])
                red = _BatchReducer(n, ids.shape[1], subset, heads, settings["token_stages"], class_buf)
                with torch.inference_mode(), capture(model, red):
                    logits = model(input_ids=ids, attention_mask=real_mask(n, ids.shape[1]).long()).logits
                preds = logits.argmax(-1).cpu().numpy()
                correct = np.flatnonzero(preds == labels)
                if len(correct):
                    at = torch.from_numpy(correct).to(device)
                    class_sum.index_add_(0, torch.from_numpy(labels[correct]).to(device), class_buf.index_select(0, at))
                    np.add.at(class_hist, (labels[correct], n_np[correct]), 1)
                for name, table in _batch_tables(red, seq_ids, split, labels, preds, n_np, n_layers, heads, schema).items():
                    groups[name].add(table)
                done += len(seq_ids)
                _progress(done, total, start)
                if done // TRIM_EVERY != (done - len(seq_ids)) // TRIM_EVERY:
                    free_heap_memory()
        for group in groups.values():
            group.flush()
        for group in groups.values():
            group.wait()
        streams["class_attention"].write(_class_table(class_sum, class_hist, classes, schema["class_attention"]))
    seconds = time.perf_counter() - start
    log.info("dumped %d sequences in %.1f s (%.2f sequences/s)", done, seconds, done / max(seconds, 1e-9))
    return {"sequences": done, "seconds": seconds}


def _progress(done: int, total: int, start: float) -> None:
    step = max(1, total // 20)
    if done == total or done // step != (done - 1) // step or done < 2:
        rate = done / max(time.perf_counter() - start, 1e-9)
        log.info("%d/%d sequences (%.0f%%), %.2f sequences/s", done, total, 100 * done / max(total, 1), rate)


def _class_table(class_sum: torch.Tensor, class_hist: np.ndarray, classes: list[str], schema: pa.Schema) -> pa.Table:
    """Mean attention per (class, layer, head) over correctly classified sequences.

    class_sum: [classes, layers, heads, L, L] sums of A; class_hist: [classes, L + 1] counts of
    correct sequences per real length n. Entry (i, j) is averaged over the sequences with n > max(i, j).
    """
    n_classes, n_layers, heads = class_sum.shape[:3]
    cols: dict[str, list] = {k: [] for k in schema.names}
    blocks = []
    for label in range(n_classes):
        hist = class_hist[label]
        seqs = int(hist.sum())
        length = int(np.flatnonzero(hist).max()) if seqs else 0
        longer = seqs - np.cumsum(hist)[:length]  # [L]: sequences with n > m
        pos = np.arange(length)
        count = longer[np.maximum(pos[:, None], pos[None, :])]
        mean = (class_sum[label, :, :, :length, :length].cpu().numpy() / np.maximum(count, 1)).astype(np.float32)
        for layer in range(n_layers):
            for head in range(heads):
                for key, value in (("label", label), ("class", classes[label]), ("layer", layer), ("head", head), ("n_seqs", seqs), ("length", length)):
                    cols[key].append(value)
                blocks.append(mean[layer, head])
    cols["matrix"] = _list_column(blocks, pa.float32())
    return pa.table(cols, schema=schema)
