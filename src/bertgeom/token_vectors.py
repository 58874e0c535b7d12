"""The subset's token vectors (tokens.parquet): how they are stored, and read back one (layer, stage)
at a time.

Storage (docs/outputs.md, Activations). Per (sequence, layer, stage) the dump keeps, in float32, the
mean of the real tokens' vectors (`center`, equal to summary.parquet's `mean_vec`) and a power of
two `scale` at or above max |x - center|; each token row holds `delta = (x - center) / scale` in
float16, and the vector is

    x = center + scale * delta.

float16 rounds `delta` relative to the spread of the sequence's tokens, not to their norm: where
a cloud is nearly collapsed (spread 1e-6 of the norm) float16 of x itself would round the spread
away (issue 14, item 5), at the same size on disk. `center` and `scale` are stored once, on the
row of position 0 (null on the others).

Layout. Every row group holds one (layer, stage): whole sequences, positions in order, so its
`layer` and `stage` statistics have min = max. A reader finds the row groups of one (layer, stage)
from the footer and decodes only those, and only the columns it asks for (`layer_stage_groups`,
`iter_vectors`). Importing this module imports no torch.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bertgeom.io import to_matrix

VECTOR_COLUMNS = ("position", "delta", "center", "scale")


def layer_stage_groups(path: str | Path) -> dict[tuple[int, str], list[int]]:
    """{(layer, stage): [row group indices]} of a tokens file, from its footer (min/max statistics)."""
    meta = pq.ParquetFile(path).metadata
    names = [meta.schema.column(i).path for i in range(meta.num_columns)]
    missing = [c for c in ("layer", "stage", *VECTOR_COLUMNS) if not any(n == c or n.startswith(f"{c}.") for n in names)]
    if missing:
        raise ValueError(
            f"{path}: missing column(s) {missing}: not a tokens file of this version (docs/outputs.md); "
            "rerun dump_activations"
        )
    layer_col, stage_col = names.index("layer"), names.index("stage")
    groups: dict[tuple[int, str], list[int]] = defaultdict(list)
    for i in range(meta.num_row_groups):
        group = meta.row_group(i)
        if group.num_rows == 0:
            continue
        layer, stage = group.column(layer_col).statistics, group.column(stage_col).statistics
        if layer is None or stage is None or layer.min != layer.max or stage.min != stage.max:
            raise ValueError(f"{path}: row group {i} is not one (layer, stage) (docs/outputs.md); rerun dump_activations")
        groups[int(layer.min), str(stage.min)].append(i)
    return dict(groups)


def decode(table: pa.Table) -> np.ndarray:
    """The vectors x [rows, hidden] (float64) of rows holding whole sequences in position order."""
    position = table.column("position").to_numpy()
    starts = np.flatnonzero(position == 0)
    if len(position) and (len(starts) == 0 or starts[0] != 0):
        raise ValueError("tokens rows do not start at a sequence's position 0 (docs/outputs.md)")
    center = table.column("center").drop_null()
    scale = table.column("scale").drop_null().to_numpy().astype(np.float64)
    if len(center) != len(starts) or len(scale) != len(starts):
        raise ValueError("tokens rows: center/scale must be set on exactly the rows of position 0")
    owner = np.cumsum(position == 0) - 1  # [rows]: index of each row's sequence
    delta = to_matrix(table.column("delta")).astype(np.float64)
    return to_matrix(center).astype(np.float64)[owner] + scale[owner, None] * delta


def iter_vectors(path: str | Path, layer: int, stage: str, columns=(), groups=None) -> Iterator[tuple[pa.Table, np.ndarray]]:
    """(table of `columns`, x [rows, hidden] float64) per row group of one (layer, stage).

    Memory is one row group. `groups`: the file's layer_stage_groups, when already known.
    """
    groups = layer_stage_groups(path) if groups is None else groups
    reader = pq.ParquetFile(path, pre_buffer=False)
    wanted = list(dict.fromkeys([*columns, *VECTOR_COLUMNS]))
    for index in groups.get((layer, stage), []):
        table = reader.read_row_group(index, columns=wanted)
        try:
            x = decode(table)
        except ValueError as err:
            raise ValueError(f"{path}: row group {index}: {err}") from None
        yield table.select(list(columns)), x


def sequence_vectors(path: str | Path, layer: int, stage: str, groups=None) -> Iterator[tuple[str, np.ndarray]]:
    """(seq_id, x [n, hidden] float64) of every sequence of the subset at one (layer, stage)."""
    for table, x in iter_vectors(path, layer, stage, ["seq_id", "position"], groups):
        position = table.column("position").to_numpy()
        starts = np.flatnonzero(position == 0)
        seq_ids = table.column("seq_id").to_pylist()
        for first, end in zip(starts, [*starts[1:], len(x)]):
            if not np.array_equal(position[first:end], np.arange(end - first)):
                raise ValueError(f"{path}: sequence {seq_ids[first]} layer {layer} stage {stage}: positions are not 0..n-1")
            yield seq_ids[first], x[first:end]
