"""Reading the stage tables a figure needs, with errors that name the file and what was expected."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq


def _check_columns(frame: pd.DataFrame, columns, path) -> pd.DataFrame:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; expected at least {list(columns)}")
    return frame


def read_parquet(path: str | os.PathLike, columns=(), filters=None) -> pd.DataFrame:
    """`columns` of a Parquet table (all when empty) as a DataFrame, rows matching `filters` (pyarrow
    DNF); raises naming the file if it or one of `columns` is missing. Only those columns are read."""
    if not Path(path).exists():
        raise FileNotFoundError(f"{path}: no such table (run the stage that writes it first)")
    names = pq.read_schema(path).names
    _check_columns(pd.DataFrame(columns=names), columns, path)
    return pq.read_table(path, columns=list(columns) or None, filters=filters).to_pandas()


def read_tsv(path: str | os.PathLike, columns=()) -> pd.DataFrame:
    if not Path(path).exists():
        raise FileNotFoundError(f"{path}: no such table")
    return _check_columns(pd.read_csv(path, sep="\t"), columns, path)


def read_csv(path: str | os.PathLike, columns=()) -> pd.DataFrame:
    if not Path(path).exists():
        raise FileNotFoundError(f"{path}: no such table")
    return _check_columns(pd.read_csv(path), columns, path)


def read_json(path: str | os.PathLike, keys=()) -> dict:
    if not Path(path).exists():
        raise FileNotFoundError(f"{path}: no such file")
    data = json.loads(Path(path).read_text())
    missing = [k for k in keys if k not in data]
    if missing:
        raise ValueError(f"{path}: missing key(s) {missing}")
    return data


def per_seed(paths, seeds, reader, **kwargs) -> pd.DataFrame:
    """Concatenate one table per seed (paths in the order of `seeds`), adding a `seed` column."""
    paths, seeds = list(paths), list(seeds)
    if len(paths) != len(seeds):
        raise ValueError(f"{len(paths)} files for {len(seeds)} seeds {seeds}")
    frames = []
    for path, seed in zip(paths, seeds):
        frame = reader(path, **kwargs)
        frame["seed"] = seed
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def matched_heads(frame: pd.DataFrame, matching_path) -> pd.DataFrame:
    """Per-seed rows (seed, layer, head, ...) with every head replaced by the reference seed's head it
    is matched to (results/stats/all_seeds/{checkpoint}/head_matching.parquet), so that seeds average matched heads."""
    from bertgeom.stats.matching import MATCHING_COLUMNS, apply_matching  # the stats stack, only when used

    return apply_matching(frame, read_parquet(matching_path, MATCHING_COLUMNS))


def pick_split(frame: pd.DataFrame, path="table") -> str:
    """The split a figure shows: `test` when the table has it, else the first one present."""
    splits = sorted(frame["split"].astype(str).unique())
    if not splits:
        raise ValueError(f"{path}: no rows")
    return "test" if "test" in splits else splits[0]


def select(frame: pd.DataFrame, path="table", **equal) -> pd.DataFrame:
    """Rows where every column equals the given value; an empty result is an error naming the filter."""
    mask = np.ones(len(frame), dtype=bool)
    for column, value in equal.items():
        if column not in frame.columns:
            raise ValueError(f"{path}: missing column {column!r}")
        mask &= (frame[column].isin(value) if isinstance(value, (list, tuple, set)) else frame[column] == value).to_numpy()
    if not mask.any():
        raise ValueError(f"{path}: no rows with {equal}")
    return frame[mask]
