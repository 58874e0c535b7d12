"""Across-seed aggregation: known t intervals, generic grouping, NaN handling, bad inputs."""


import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from bertgeom.io import read_metadata, write_parquet
from bertgeom.stats.aggregate import aggregate_seeds, read_seed_tables, write_aggregate


def seed_table(seed, values, **extra):
    frame = pd.DataFrame(
        {
            "seed": seed,
            "class": ["all", "A", "B"],
            "layer": np.array([0, 0, 1], np.int16),
            "measure": "cone_normalised",
            "value": values,
        }
    )
    return frame.assign(**extra)


def test_known_t_interval():
    table = pd.concat([seed_table(s, [v, 10.0, np.nan]) for s, v in zip((0, 1, 2), (1.0, 2.0, 3.0))])
    out = aggregate_seeds(table, ci=0.95).set_index("class")
    assert list(out.reset_index().columns) == ["class", "layer", "measure", "mean", "ci_low", "ci_high", "n_seeds"]
    half = 4.302652729911275 / np.sqrt(3)  # t_{0.975, 2} * sd / sqrt(k), sd = 1
    assert out.loc["all", "mean"] == 2.0
    assert out.loc["all", ["ci_low", "ci_high"]].tolist() == pytest.approx([2 - half, 2 + half])
    assert out.loc["A", ["mean", "ci_low", "ci_high"]].tolist() == pytest.approx([10.0, 10.0, 10.0])  # no spread
    assert out.loc["B", "n_seeds"] == 0 and np.isnan(out.loc["B", "mean"])  # every seed NaN
    narrower = aggregate_seeds(table, ci=0.5).set_index("class").loc["all"]
    assert narrower["ci_high"] - narrower["ci_low"] < out.loc["all", "ci_high"] - out.loc["all", "ci_low"]


def test_nan_values_and_single_seeds():
    table = pd.concat([seed_table(0, [1.0, 2.0, 3.0]), seed_table(1, [np.nan, 4.0, 5.0])])
    out = aggregate_seeds(table).set_index("class")
    assert out.loc["all", "n_seeds"] == 1 and out.loc["all", "mean"] == 1.0
    assert np.isnan(out.loc["all", "ci_low"]) and np.isnan(out.loc["all", "ci_high"])
    assert out.loc["B", "n_seeds"] == 2 and out.loc["B", "mean"] == 4.0


def test_groups_by_every_identifier_column():
    # any identifiers, including ones this module never heard of (the attention tables' own)
    table = pd.concat(
        [seed_table(s, [1.0 + s, 2.0, 3.0], head=np.int16(h), gate="open") for s in (0, 1) for h in (-1, 3)]
    )
    out = aggregate_seeds(table)
    assert len(out) == 6 and set(out["head"]) == {-1, 3} and (out["n_seeds"] == 2).all()
    assert out["layer"].dtype == np.int16  # identifiers keep their type


def test_read_seed_tables_checks_its_inputs(tmp_path):
    paths = []
    for seed in (0, 1):
        paths.append(str(tmp_path / f"seed{seed}.parquet"))
        write_parquet(seed_table(seed, [1.0, 2.0, 3.0]), paths[-1])
    assert len(read_seed_tables(paths)) == 6
    write_parquet(seed_table(0, [1.0, 2.0, 3.0]), tmp_path / "again.parquet")
    with pytest.raises(ValueError, match="expected one seed per file"):
        read_seed_tables([paths[0], str(tmp_path / "again.parquet")])
    write_parquet(seed_table(2, [1.0, 2.0, 3.0]).drop(columns="value"), tmp_path / "bad.parquet")
    with pytest.raises(ValueError, match=r"bad\.parquet: not a per-seed stats table \(missing column\(s\) \['value'\]\)"):
        read_seed_tables([paths[0], str(tmp_path / "bad.parquet")])
    write_parquet(seed_table(3, [1.0, 2.0, 3.0], extra="x"), tmp_path / "wide.parquet")
    with pytest.raises(ValueError, match="wide.parquet: columns"):
        read_seed_tables([paths[0], str(tmp_path / "wide.parquet")])
    with pytest.raises(ValueError, match="stats.ci must be in"):
        aggregate_seeds(read_seed_tables(paths), ci=1.5)


def test_run_writes_the_across_seed_table(tmp_path):
    paths = []
    for seed, v in ((0, 1.0), (1, 3.0)):
        paths.append(str(tmp_path / f"seed{seed}.parquet"))
        write_parquet(seed_table(seed, [v, v, v]), paths[-1])
    out = tmp_path / "all_seeds" / "t.parquet"
    write_aggregate(paths, str(out), name="t", ci=0.9)
    written = pq.read_table(out).to_pandas()
    assert (written["mean"] == 2.0).all() and (written["n_seeds"] == 2).all()
    assert written["ci_high"].iloc[0] - 2.0 == pytest.approx(6.313751514675)  # t_{0.95, 1} * sd / sqrt(2), sd = sqrt(2)
    assert read_metadata(out)["seeds"] == [0, 1] and read_metadata(out)["ci"] == 0.9
