"""Any tidy per-seed statistics table -> mean and t confidence interval across seeds (issue 6).

Input: one table per seed with a `seed` column, a float `value` column and identifier columns.
Output: one row per distinct combination of identifiers (every column except `seed` and `value`)
with `mean`, `ci_low`, `ci_high`, `n_seeds`:

    mean +- t_{(1 + ci) / 2, k - 1} * s / sqrt(k)

over the k seeds whose value is not NaN (s: sample standard deviation). With k = 1 the interval is
NaN (one seed says nothing about the spread); with k = 0 the mean is NaN too.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from scipy import stats as scipy_stats

from bertgeom.io import provenance, write_parquet
from bertgeom.stats.matching import apply_matching

log = logging.getLogger(__name__)

RESULT_COLUMNS = ["mean", "ci_low", "ci_high", "n_seeds"]


def aggregate_seeds(table: pd.DataFrame, ci: float = 0.95) -> pd.DataFrame:
    """Mean and t interval at level `ci` of `value` over seeds, grouped by every other column."""
    if not 0 < ci < 1:
        raise ValueError(f"stats.ci must be in (0, 1), got {ci}")
    ids = [c for c in table.columns if c not in ("seed", "value")]
    clash = [c for c in RESULT_COLUMNS if c in ids]
    if clash:
        raise ValueError(f"identifier column(s) {clash} clash with the across-seed columns {RESULT_COLUMNS}")
    grouped = table.groupby(ids, dropna=False, sort=False, observed=True)["value"]
    out = grouped.agg(mean="mean", sd="std", n_seeds="count").reset_index()
    k = out["n_seeds"].to_numpy(dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        half = scipy_stats.t.ppf((1 + ci) / 2, k - 1) * out["sd"].to_numpy() / np.sqrt(k)
    half = np.where(k >= 2, half, np.nan)
    out["ci_low"] = out["mean"] - half
    out["ci_high"] = out["mean"] + half
    out["n_seeds"] = out["n_seeds"].astype("int32")
    return out[ids + RESULT_COLUMNS]


def read_seed_tables(paths: list[str]) -> pd.DataFrame:
    """The per-seed tables stacked; each must have `seed` and `value` and the same columns."""
    frames = []
    for path in paths:
        names = pq.read_schema(path).names
        missing = [c for c in ("seed", "value") if c not in names]
        if missing:
            raise ValueError(f"{path}: not a per-seed stats table (missing column(s) {missing})")
        frame = pq.read_table(path).to_pandas()
        if frames and list(frame.columns) != list(frames[0].columns):
            raise ValueError(f"{path}: columns {list(frame.columns)} differ from {paths[0]}'s {list(frames[0].columns)}")
        frames.append(frame)
    if not frames:
        raise ValueError("aggregate_seeds: no per-seed tables given (config train.seeds is empty?)")
    table = pd.concat(frames, ignore_index=True)
    if table["seed"].nunique() != len(frames) or any(f["seed"].nunique() != 1 for f in frames):
        raise ValueError(f"aggregate_seeds: expected one seed per file, got seeds {sorted(table['seed'].unique())} in {paths}")
    return table


def write_aggregate(paths: list[str], out: str, name: str, ci: float, matching: str | None = None) -> None:
    """Rule aggregate_seeds: the per-seed tables `paths` of table `name` -> mean and CI in `out`.

    matching: the head matching across seeds (rule match_heads); a table with a `head` column is
    aggregated over matched heads (`head` becomes the reference seed's head index).
    """
    table = read_seed_tables(list(paths))
    extra = {}
    if matching is not None and "head" in table.columns:
        frame = pq.read_table(matching).to_pandas()
        table = apply_matching(table, frame)
        extra["heads_matched_to_seed"] = int(frame["reference_seed"].iloc[0])
    result = aggregate_seeds(table, ci)
    meta = provenance({"ci": ci}, table=name, seeds=sorted(int(s) for s in table["seed"].unique()), ci=ci, **extra)
    write_parquet(result, out, meta=meta)
    log.info("wrote %s (%d rows from %d seeds)", out, len(result), table["seed"].nunique())
