"""Open-set figures and table (bertgeom.figures.openset) on small hand-made tables in the formats of
rule open_set (summary.tsv, calibration.json; docs/outputs.md)."""

from __future__ import annotations

import json

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from test_figures import assert_readable  # noqa: E402

from bertgeom.figures import openset  # noqa: E402
from bertgeom.openset import expected_calibration_error, reliability  # noqa: E402

TYPES = ["test (in class)", "B.1.525", "reference", "random"]


def summaries() -> pd.DataFrame:
    """Two seeds' summary.tsv: seed 3 unassigned 0, 0.2, 1, 1; seed 7 0.1, 0.4, 0, 1."""
    rows = []
    for seed, unassigned, auroc in ((3, [0.0, 0.2, 1.0, 1.0], [np.nan, 0.8, 0.9, 1.0]), (7, [0.1, 0.4, 0.0, 1.0], [np.nan, 0.6, 0.7, 1.0])):
        for kind, u, a in zip(TYPES, unassigned, auroc):
            group = "in_class" if kind.startswith("test") else "out_of_class"
            rows.append({"seed": seed, "group": group, "type": kind, "n": 10, "auroc": a, "unassigned": u,
                         "correct": 0.9 if group == "in_class" else np.nan})  # fmt: skip
    return pd.DataFrame(rows)


def test_open_set_bars_are_the_means_over_seeds():
    fig = openset.plot_open_set(summaries())
    assert_readable(fig)
    top, bottom = fig.axes
    np.testing.assert_allclose([bar.get_height() for bar in top.patches], [0.05, 0.3, 0.5, 1.0])
    heights = [bar.get_height() for bar in bottom.patches]
    assert np.isnan(heights[0]) and heights[1:] == pytest.approx([0.7, 0.8, 1.0])
    assert [t.get_text() for t in bottom.get_xticklabels()] == TYPES


def test_open_set_table_one_row_per_type():
    table = openset.open_set_table(summaries())
    assert table["type"].tolist() == TYPES
    row = table.set_index("type").loc["B.1.525"]
    assert row["unassigned seed 3"] == 0.2 and row["unassigned seed 7"] == 0.4
    assert row["unassigned mean"] == pytest.approx(0.3) and row["auroc mean"] == pytest.approx(0.7)
    assert np.isnan(row["correct mean"]) and table.set_index("type").loc[TYPES[0], "correct mean"] == 0.9


def test_reliability_one_line_per_seed_and_moment(tmp_path):
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(3) * 0.5, size=200)
    labels = rng.integers(0, 3, size=200)
    block = {"n": 200, "ece_before": expected_calibration_error(probs, labels), "ece_after": 0.01,
             "reliability_before": reliability(probs, labels), "reliability_after": reliability(probs, labels)}  # fmt: skip
    data = {seed: {"test": block, "calibration_check": block} for seed in (0, 1)}
    fig = openset.plot_reliability(data)
    assert_readable(fig)
    for ax in fig.axes:
        assert len(ax.lines) == 1 + 2 * 2  # diagonal + (before, after) x 2 seeds
        curve = ax.lines[1].get_xydata()
        np.testing.assert_allclose(curve[:, 0], [row["confidence"] for row in block["reliability_before"]])
    path = tmp_path / "calibration.json"
    path.write_text(json.dumps(data[0]))
    from types import SimpleNamespace

    made = openset.make_reliability(SimpleNamespace(calibrations=[path]), SimpleNamespace(seeds=[5]))
    assert "seed 5 before" in made.axes[0].get_legend().get_texts()[0].get_text()
