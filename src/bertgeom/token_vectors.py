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
from dataclasses import dataclass
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bertgeom.io import to_matrix

VECTOR_COLUMNS = ("position", "delta", "center", "scale")


class TokenFile:
    """A tokens.parquet opened once: its (layer, stage) row groups (from the footer) and readers.

    keys(): the (layer, stage) pairs present, in the file's order; vectors(layer, stage, columns):
    (table of `columns`, x [rows, hidden] float64) per row group, memory one row group;
    sequences(layer, stage): (seq_id, x [n, hidden]) per sequence.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.reader = pq.ParquetFile(self.path, pre_buffer=False)
        self.groups = _layer_stage_groups(self.reader.metadata, self.path)

    def keys(self) -> list[tuple[int, str]]:
        return list(self.groups)

    def blocks(self, layer: int, stage: str, columns=()) -> Iterator["Block"]:
        wanted = list(dict.fromkeys([*columns, *VECTOR_COLUMNS]))
        for index in self.groups.get((layer, stage), []):
            table = self.reader.read_row_group(index, columns=wanted)
            try:
                yield Block.decode(table, list(columns))
            except ValueError as err:
                raise ValueError(f"{self.path}: row group {index}: {err}") from None

    def vectors(self, layer: int, stage: str, columns=()) -> Iterator[tuple[pa.Table, np.ndarray]]:
        for block in self.blocks(layer, stage, columns):
            yield block.table, block.vectors()

    def sequences(self, layer: int, stage: str) -> Iterator[tuple[str, np.ndarray]]:
        for table, x in self.vectors(layer, stage, ["seq_id", "position"]):
            position = table.column("position").to_numpy()
            starts = np.flatnonzero(position == 0)
            seq_ids = table.column("seq_id").to_pylist()
            for first, end in zip(starts, [*starts[1:], len(x)]):
                if not np.array_equal(position[first:end], np.arange(end - first)):
                    raise ValueError(f"{self.path}: sequence {seq_ids[first]} layer {layer} stage {stage}: positions are not 0..n-1")
                yield seq_ids[first], x[first:end]


def _layer_stage_groups(meta: pq.FileMetaData, path: Path) -> dict[tuple[int, str], list[int]]:
    """{(layer, stage): [row group indices]} from the footer's min/max statistics."""
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


@dataclass
class Block:
    """One row group, decoded: the vector of row i is centers[owner[i]] + deviations[i].

    table: the columns asked for; owner [rows]: the row's sequence (0.. in row order); centers
    [sequences, hidden] float64; deviations [rows, hidden] float32 = scale * delta, exact (scale is
    a power of two): the deviation from its sequence's mean, never rounded to the vector's norm.
    """

    table: pa.Table
    owner: np.ndarray
    centers: np.ndarray
    deviations: np.ndarray

    @classmethod
    def decode(cls, table: pa.Table, columns: list[str]) -> "Block":
        position = table.column("position").to_numpy()
        first = position == 0
        if len(position) and not first[0]:
            raise ValueError("tokens rows do not start at a sequence's position 0 (docs/outputs.md)")
        center = table.column("center").drop_null()
        scale = table.column("scale").drop_null().to_numpy().astype(np.float32)
        if len(center) != first.sum() or len(scale) != first.sum():
            raise ValueError("tokens rows: center/scale must be set on exactly the rows of position 0")
        owner = np.cumsum(first) - 1
        deviations = to_matrix(table.column("delta")).astype(np.float32)
        deviations *= scale[owner, None]
        return cls(table.select(columns), owner, to_matrix(center).astype(np.float64), deviations)

    def vectors(self) -> np.ndarray:
        """x [rows, hidden] float64."""
        return self.centers[self.owner] + self.deviations
