"""The dump's output files: their schemas (docs/outputs.md), list columns, and row groups written
in the background."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa

from bertgeom import io
from bertgeom.measures import attention_measure_names

OUTPUT_FILES = ("summary", "heads", "attention_summary", "tokens", "attention", "class_attention")


def schemas(hidden: int, d_head: int, top_keys: int) -> dict[str, pa.Schema]:
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

    measures = [(m, pa.float32()) for m in attention_measure_names(top_keys)]
    return {
        "summary": pa.schema(
            [*ident, ("stage", pa.string()), *stats(hidden), ("cls_vec", pa.list_(pa.float16(), hidden)), ("cone_ref", pa.float32())]
        ),
        "heads": pa.schema([*ident, ("head", pa.int16()), ("stage", pa.string()), *stats(d_head), ("cone_ref", pa.float32())]),
        "attention_summary": pa.schema([*ident, ("head", pa.int16()), ("n", pa.int32()), *measures]),
        "tokens": pa.schema(
            [*ident, ("stage", pa.string()), ("position", pa.int32()), ("delta", pa.list_(pa.float16(), hidden)),
             ("center", pa.list_(pa.float32(), hidden)), ("scale", pa.float32())]
        ),  # fmt: skip
        "attention": pa.schema([*ident, ("head", pa.int16()), ("n", pa.int32()), ("matrix", pa.list_(pa.float16()))]),
        "class_attention": pa.schema(
            [
                ("label", pa.int16()), ("class", pa.string()), ("layer", pa.int16()), ("head", pa.int16()),
                ("n_seqs", pa.int32()), ("length", pa.int32()), ("matrix", pa.list_(pa.float32())),
            ]  # fmt: skip
        ),
    }


def list_column(blocks: list[np.ndarray], dtype: pa.DataType) -> pa.ListArray:
    """Variable-length list column: one row per flattened block."""
    offsets = np.concatenate([[0], np.cumsum([b.size for b in blocks])]).astype(np.int32)
    values = np.concatenate([b.reshape(-1) for b in blocks]) if blocks else np.zeros(0)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values, type=dtype))


def writer_options(schema: pa.Schema) -> dict:
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


class RowGroups:
    """Collects a file's per-batch tables and writes them as one row group of about `target_bytes`.

    Per-batch tables are small (a few hundred rows); row groups of tens of MB read faster. Writes
    run on `pool` (background threads: Parquet encoding and zstd release the GIL, so they overlap
    the next forward pass); at most one row group per file is in flight, so memory stays bounded.
    """

    def __init__(self, stream: io.ParquetStream, target_bytes: int, pool: ThreadPoolExecutor):
        self.stream, self.target, self.pool = stream, target_bytes, pool
        self.groups: dict = {}  # key -> tables of one row group
        self.nbytes, self.pending = 0, None

    def add(self, table: pa.Table, key=None) -> None:
        self.groups.setdefault(key, []).append(table)
        self.nbytes += table.nbytes
        if self.nbytes >= self.target:
            self.flush()

    def flush(self) -> None:
        self.wait()
        if self.groups:
            self.pending = self.pool.submit(_write_groups, self.stream, list(self.groups.values()))
        self.groups, self.nbytes = {}, 0

    def wait(self) -> None:
        """Block until the row groups in flight are written; re-raises their error."""
        if self.pending is not None:
            self.pending, pending = None, self.pending
            pending.result()


class KeyedRowGroups(RowGroups):
    """RowGroups for tables that come as {key: table} (tokens.parquet: key (layer, stage)): a flush
    writes one row group per key, in the order the keys were first seen, so that a reader can fetch
    one key's rows without decoding the others (bertgeom.token_vectors)."""

    def add(self, tables: dict) -> None:
        for key, table in tables.items():
            super().add(table, key)


def _write_groups(stream: io.ParquetStream, groups: list[list[pa.Table]]) -> None:
    for tables in groups:
        stream.write(pa.concat_tables(tables).combine_chunks())


def class_table(class_sum, class_hist: np.ndarray, classes: list[str], schema: pa.Schema) -> pa.Table:
    """Mean attention per (class, layer, head) over correctly classified sequences.

    class_sum: [class, layer, head, L, L] sums of A (torch); class_hist: [class, L + 1] counts of
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
    cols["matrix"] = list_column(blocks, pa.float32())
    return pa.table(cols, schema=schema)
