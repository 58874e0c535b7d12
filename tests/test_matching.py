"""Heads matched across seeds: Hungarian assignment on gate scores, matched aggregation, label
agreement against an untrained model."""

import numpy as np
import pandas as pd
import pytest

from bertgeom.io import write_parquet
from bertgeom.stats import matching
from bertgeom.stats.aggregate import write_aggregate
from bertgeom.stats.attention import GATES

LABELS = ["open", "closed", "instance", "directional"]


def seeds_as_permutations(seeds=(0, 1, 2), layers=2, heads=4, seed=0) -> tuple[pd.DataFrame, dict]:
    """Gates tables of seeds whose heads are the reference's (seed 0) in another order per layer."""
    rng = np.random.default_rng(seed)
    base = {layer: rng.random((heads, len(GATES))) for layer in range(layers)}
    orders, rows = {}, []
    for s in seeds:
        for layer in range(layers):
            order = np.arange(heads) if s == seeds[0] else rng.permutation(heads)  # seed head h = reference order[h]
            orders[(s, layer)] = order
            for head in range(heads):
                ref = order[head]
                rows.append({"seed": s, "layer": layer, "head": head, "gate": LABELS[(ref + layer) % len(LABELS)],
                             **{f"score_{g}": v for g, v in zip(GATES, base[layer][ref])}})  # fmt: skip
    return pd.DataFrame(rows), orders


def test_permuted_seeds_match_perfectly_and_agree():
    gates, orders = seeds_as_permutations()
    table = matching.head_matching(gates, reference_seed=0)
    for (s, layer), order in orders.items():
        part = table[(table["seed"] == s) & (table["layer"] == layer)].sort_values("head")
        assert part["matched_head"].tolist() == order.tolist()
    assert table["distance"].max() == pytest.approx(0, abs=1e-12)
    agreement = matching.gate_agreement(gates, table)
    layer = agreement[agreement["head"].isna() & agreement["gate"].isna()].groupby("measure")["value"].mean()
    assert layer["matched_agreement"] == 1.0 and layer["matched_distance"] == pytest.approx(0, abs=1e-12)
    assert layer["position_agreement"] < 1.0  # the same labels at other positions
    modal = agreement[agreement["measure"] == "modal_share"]
    assert (modal["value"] == 1.0).all() and len(modal) == 8
    assert "untrained_agreement" not in set(agreement["measure"])


def test_agreement_with_an_untrained_model_is_the_baseline():
    gates, _ = seeds_as_permutations()
    untrained = gates[gates["seed"] == 0].assign(seed=1000, gate="open")  # every head of an untrained model is open
    agreement = matching.gate_agreement(gates, matching.head_matching(gates, 0), untrained)
    per_layer = agreement[agreement["head"].isna() & agreement["gate"].isna()].set_index(["layer", "measure"])["value"]
    for layer in (0, 1):
        opens = (gates[(gates["seed"] == 0) & (gates["layer"] == layer)]["gate"] == "open").mean()
        assert per_layer[(layer, "untrained_agreement")] == pytest.approx(opens)
        assert per_layer[(layer, "untrained_distance")] == pytest.approx(0, abs=1e-12)  # the same score vectors


def test_apply_matching_keeps_whole_layer_rows_and_rejects_unknown_heads():
    gates, orders = seeds_as_permutations()
    table = matching.head_matching(gates, 0)
    frame = pd.DataFrame({"seed": [1, 1, 2], "layer": [0, 0, 1], "head": [-1, 2, 3], "value": [1.0, 2.0, 3.0]})
    out = matching.apply_matching(frame, table)
    assert out["head"].tolist() == [-1, orders[(1, 0)][2], orders[(2, 1)][3]]
    with pytest.raises(ValueError, match=r"no entry for \(seed, layer, head\)"):
        matching.apply_matching(frame.assign(seed=7), table)


def test_aggregate_over_matched_heads(tmp_path):
    gates, orders = seeds_as_permutations()
    paths = []
    for s in (0, 1, 2):
        part = gates[gates["seed"] == s]
        tidy = part.melt(id_vars=["seed", "layer", "head"], value_vars=["score_closed"], var_name="measure")
        paths.append(str(tmp_path / f"seed{s}.parquet"))
        write_parquet(tidy.astype({"seed": "int32", "layer": "int16", "head": "int16"}), paths[-1])
    write_parquet(matching.head_matching(gates, 0), tmp_path / "matching.parquet")
    write_aggregate(paths, str(tmp_path / "out.parquet"), "t", 0.95, matching=str(tmp_path / "matching.parquet"))
    out = pd.read_parquet(tmp_path / "out.parquet").set_index(["layer", "head"])
    reference = gates[gates["seed"] == 0].set_index(["layer", "head"])["score_closed"]
    assert out["mean"].to_numpy() == pytest.approx(reference.reindex(out.index).to_numpy())  # matched: no averaging away
    assert (out["ci_high"] - out["ci_low"]).max() == pytest.approx(0, abs=1e-12)
    write_aggregate(paths, str(tmp_path / "positions.parquet"), "t", 0.95)
    positions = pd.read_parquet(tmp_path / "positions.parquet")
    assert (positions["ci_high"] - positions["ci_low"]).max() > 0.01  # positions mix different heads


def test_run_writes_matching_and_agreement(tmp_path):
    gates, _ = seeds_as_permutations(seeds=(3, 5))
    paths = []
    for s in (3, 5):
        paths.append(str(tmp_path / f"gates{s}.parquet"))
        write_parquet(gates[gates["seed"] == s].astype({"seed": "int32", "layer": "int16", "head": "int16"}), paths[-1])
    write_parquet(gates[gates["seed"] == 3].assign(seed=1000, gate="none"), tmp_path / "untrained.parquet")
    matching.write_head_matching(paths, str(tmp_path / "matching.parquet"), reference_seed=3)
    matching.write_gate_agreement(paths, str(tmp_path / "matching.parquet"), str(tmp_path / "untrained.parquet"),
                                  str(tmp_path / "agreement.parquet"))  # fmt: skip
    table = pd.read_parquet(tmp_path / "agreement.parquet")
    measures = table.groupby("measure")["value"].mean()
    assert measures["matched_agreement"] == 1.0 and measures["untrained_agreement"] == 0.0
    assert (table["n_seeds"] == 2).all()
    with pytest.raises(ValueError, match="reference seed 9"):
        matching.write_head_matching(paths, str(tmp_path / "m.parquet"), reference_seed=9)
