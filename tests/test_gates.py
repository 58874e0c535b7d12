"""Null-calibrated gates: exact row nulls, the labels of planted heads, per-row labels, the null model."""

from itertools import permutations

import numpy as np
import pandas as pd
import pytest

from bertgeom.config import check_config, load_config
from bertgeom.model import scratch_config
from bertgeom.stats import gates
from bertgeom.stats.attention import GATES, head_gates
from bertgeom.stats.null_model import matrices, untrained_model

N = 122


@pytest.fixture(scope="module")
def patterns():
    return load_config()["patterns"]


def planted(kind: str, n: int = N, seed: int = 0, noise: float = 0.1) -> np.ndarray:
    """(1 - noise) x a pattern + noise x random rows (Dirichlet); kinds as in test_attention plus
    `previous10x` (10 x the uniform share on the `window` = 4 previous tokens) and `two` (half the
    rows on the previous token, half uniform)."""
    rng = np.random.default_rng(seed)
    rows = np.arange(n)
    a = np.full((n, n), 1.0 / n)
    if kind == "previous10x":
        share = 10 * 4 / n  # the band's mass: 10 x its uniform share
        a = np.full((n, n), (1 - share) / (n - 4))
        for d in range(1, 5):
            a[rows[d:], rows[d:] - d] = share / 4
        a[:4] = 1.0 / n
    elif kind == "two":
        a[rows[1::2], :] = 0
        a[rows[1::2], rows[1::2] - 1] = 1.0
    elif kind == "directional":
        a[:] = 0
        a[:, [10, 50, 90]] = 1
    elif kind == "backward_contextual":
        a[:] = 0
        a[rows[1:], rows[1:] - 1] = a[rows[2:], rows[2:] - 2] = 1
        a[0, 0] = 1
    elif kind == "forward_contextual":
        a[:] = 0
        a[rows[:-1], rows[:-1] + 1] = a[rows[:-2], rows[:-2] + 2] = 1
        a[-1, -1] = 1
    elif kind == "cluster":
        a[:] = 0
        for start in range(1, n - 1, 30):
            a[start : start + 30, start : start + 30] = 1
        a[[0, -1], :] = 1
    elif kind == "instance":
        a = np.eye(n)
    elif kind == "closed":
        a[:] = 0
        a[:, [0, -1]] = 1
    elif kind == "instance+closed":
        a = np.eye(n) + np.isin(np.arange(n), [0, n - 1])[None, :]
    a = a / a.sum(axis=1, keepdims=True)
    return (1 - noise) * a + noise * rng.dirichlet(np.ones(n), size=n)


def null_scores(n: int = N, layers: int = 1, heads: int = 2, seqs: int = 4) -> pd.DataFrame:
    """A null model's scores table: near-uniform heads (as an untrained BERT's)."""
    rows = []
    for s in range(seqs):
        for layer in range(layers):
            for head in range(heads):
                a = planted("open", n, seed=100 + s * heads + head, noise=0.02)
                rows.append({"seq_id": f"s{s}", "layer": layer, "head": head, "score_closed": (a[:, 0] + a[:, -1]).mean(),
                             "row_closed": a[:, 0] + a[:, -1]})  # fmt: skip
    return pd.DataFrame(rows)


def label_heads(kinds: dict[tuple[int, int], str], patterns: dict, seqs: int = 4, n: int = N) -> dict:
    """The gate tables of heads (layer, head) -> planted kind, `seqs` noisy sequences each."""
    null = null_scores(n, layers=1 + max(k[0] for k in kinds), seqs=seqs)
    labeller = gates.Labeller(patterns, (gates.closed_nulls(null, patterns["min_effect"]["closed"]), set(null["seq_id"])), 7)
    per_matrix, stored = [], []
    for s in range(seqs):
        for (layer, head), kind in kinds.items():
            a = planted(kind, n, seed=10 * s + head + 3 * layer)
            record = {"seq_id": f"s{s}", "layer": layer, "head": head}
            labeller.add(record, a)
            _, scores = head_gates(a, patterns)
            per_matrix.append({**record, **{f"score_{g}": v for g, v in scores.items()}})
            stored.append((record, a))
    return labeller.tables(pd.DataFrame(per_matrix), iter(stored))


def test_row_null_is_the_permutation_distribution():
    """Band mass of one row under every permutation of its non-special keys, against the draws."""
    a = np.zeros((7, 7))
    a[4] = [0.3, 0.05, 0.1, 0.2, 0.15, 0.12, 0.08]  # row 4; keys 0 and 6 are [CLS], [SEP]
    offs = [-3, -2, -1]  # keys 1, 2, 3: all non-special
    values = a[4, 1:-1]
    exact = sorted(sum(p[:3]) for p in permutations(values))
    samples, mean = gates.row_null(a, offs, 20000, np.random.default_rng(0))
    assert mean[4] == pytest.approx(3 * values.sum() / 5)  # b S / m
    assert samples[:, 4].mean() == pytest.approx(np.mean(exact), abs=0.002)
    for q in (0.1, 0.5, 0.9):
        assert np.quantile(samples[:, 4], q) == pytest.approx(np.quantile(exact, q), abs=0.02)
    first = np.zeros((7, 7))
    first[2] = a[4]  # row 2: keys 0 ([CLS], fixed), 1 (free) for offsets -2, -1; key -1 out of range
    samples, mean = gates.row_null(first, offs, 2000, np.random.default_rng(1))
    assert mean[2] == pytest.approx(0.3 + values.sum() / 5)
    assert set(np.round(samples[:, 2] - 0.3, 12)) == set(np.round(values, 12))  # one free key: any value


def test_distinct_picks_are_uniform_ordered_tuples():
    picks = gates.distinct_picks(np.random.default_rng(2), (60000,), 5, 3)
    assert (np.sort(picks, axis=1)[:, 1:] != np.sort(picks, axis=1)[:, :-1]).all()
    counts = pd.Series(map(tuple, picks)).value_counts()
    assert len(counts) == 60 and counts.min() > 0.8 * 1000 and counts.max() < 1.2 * 1000


def test_previous_token_head_at_ten_times_uniform_is_backward_contextual(patterns):
    tables = label_heads({(0, 0): "previous10x", (0, 1): "open"}, patterns, n=427)  # a real sequence's length
    heads = tables["gates"].set_index("head")
    assert heads.loc[0, "score_backward_contextual"] < 0.1  # today's threshold: 0.5
    assert heads.loc[0, "gate"] == "backward_contextual" and heads.loc[0, "gate_absolute"] == "open"
    assert heads.loc[1, "gate"] == "open" and heads.loc[1, "n_passed"] == 0
    test = tables["gate_tests"].set_index(["head", "gate"]).loc[(0, "backward_contextual")]
    assert test["effect"] == pytest.approx(10, rel=0.15) and test["score"] > test["null_quantile"]


@pytest.mark.parametrize("kind", ["directional", "backward_contextual", "forward_contextual", "instance", "closed"])
def test_planted_heads_get_their_gate(kind, patterns):
    tables = label_heads({(0, 0): kind}, patterns)
    assert tables["gates"]["gate"].item() == kind, tables["gate_tests"]


def test_a_block_head_passes_cluster(patterns):
    """Blocks also put n / B times the uniform share on the band and diagonal: several gates pass."""
    tables = label_heads({(0, 0): "cluster"}, patterns)
    row = tables["gates"].iloc[0]
    assert row["gate"] == "multiple" and "cluster" in row["passed"].split("+")
    cluster = tables["gate_tests"].set_index("gate").loc["cluster"]
    assert cluster["null_computed"] and cluster["effect"] > 3


def test_two_gates_are_multiple_and_listed(patterns):
    row = label_heads({(0, 0): "instance+closed"}, patterns)["gates"].iloc[0]
    assert (row["gate"], row["passed"], row["n_passed"]) == ("multiple", "instance+closed", 2)


def test_a_two_behaviour_head_gets_two_row_shares(patterns):
    rows = label_heads({(0, 0): "two"}, patterns)["row_gates"]
    shares = rows[rows["measure"] == "share"].set_index("label")["value"]
    assert shares.sum() == pytest.approx(1)
    assert shares["backward_contextual"] == pytest.approx(0.5, abs=0.03)  # the odd rows: on i - 1
    assert shares["open"] == pytest.approx(0.5, abs=0.03)  # the even rows: near uniform
    assert shares["multiple"] + shares["none"] + shares["instance"] + shares["closed"] < 0.03
    null = rows[rows["measure"] == "null_share"].set_index("label")["value"]
    assert set(null.index) == set(gates.ROW_GATES) and (null < 0.05).all()


def test_permutations_are_skipped_only_where_the_effect_fails(patterns):
    tests = label_heads({(0, 0): "open", (0, 1): "directional"}, patterns)["gate_tests"].set_index(["head", "gate"])
    assert not tests.loc[(0, "directional"), "null_computed"] and tests.loc[(0, "directional"), "effect"] < 2
    assert not tests.loc[(0, "cluster"), "null_computed"]
    assert tests.loc[(1, "directional"), "null_computed"] and tests.loc[(1, "directional"), "n_null"] == 4 * 20
    assert tests.loc[(1, "backward_contextual"), "n_null"] == 4 * patterns["nulls"]["row_draws"]


def test_untrained_model_of_another_seed_passes_no_structured_gate(tmp_path, patterns):
    """An untrained BERT attends uniformly: no structured gate, label open (rows at or above the
    entropy threshold); with the open gate set aside (threshold above every row) the label is none."""
    config = scratch_config("tiny", ["A", "B"], vocab_size=60, pad_id=0, max_length=128)
    config.to_json_file(tmp_path / "config.json")
    rng = np.random.default_rng(3)
    sequences = [(f"s{i}", rng.integers(5, 60, size=100 + i)) for i in range(4)]
    null = list(matrices(untrained_model(str(tmp_path / "config.json"), 1000), sequences))
    frame = pd.DataFrame([{**r, "score_closed": (a[:, 0] + a[:, -1]).mean(), "row_closed": a[:, 0] + a[:, -1]}
                          for r, a in null])  # fmt: skip
    closed = (gates.closed_nulls(frame, patterns["min_effect"]["closed"]), set(frame["seq_id"]))
    model = untrained_model(str(tmp_path / "config.json"), 5)  # another seed
    for open_threshold, expected in ((patterns["thresholds"]["open"], "open"), (1.0, "none")):
        settings = {**patterns, "thresholds": {**patterns["thresholds"], "open": open_threshold}}
        labeller = gates.Labeller(settings, closed, 5)
        per_matrix = []
        for record, a in matrices(model, sequences):
            labeller.add(record, a)
            per_matrix.append({**record, **{f"score_{g}": v for g, v in gates.scores_of(a, settings).items()}})
        tables = labeller.tables(pd.DataFrame(per_matrix), matrices(model, sequences))
        assert (tables["gates"]["n_passed"] == 0).all() and (tables["gates"]["gate"] == expected).all(), tables["gates"]
    rows = tables["row_gates"][tables["row_gates"]["measure"] == "share"].set_index("label")["value"]
    assert (rows.loc["none"] > 0.95).all()


def test_null_seed_must_differ_from_training_seeds():
    config = load_config()
    check_config(config)  # the default null seed, 1000, is no training seed
    config["patterns"]["nulls"]["seed"] = 1
    with pytest.raises(ValueError, match=r"patterns\.nulls\.seed 1 is one of train\.seeds \[0, 1, 2\]"):
        check_config(config)


def test_scores_of_agrees_with_the_full_metrics(patterns):
    for kind in ("directional", "cluster", "closed", "open"):
        a = planted(kind)
        assert gates.scores_of(a, patterns) == pytest.approx(head_gates(a, patterns)[1]), kind
    assert set(gates.scores_of(planted("open"), patterns)) == set(GATES)
