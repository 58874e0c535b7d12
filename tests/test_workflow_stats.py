"""The statistics of issue 14 on the finished tiny run: null model, null-calibrated labels, per-row
labels, heads matched across seeds and the domain tests, as written by the workflow."""

from __future__ import annotations

import pandas as pd
import pytest

from bertgeom.io import read_metadata
from bertgeom.stats.attention import LABELS
from bertgeom.stats.gates import ROW_LABELS, STRUCTURED

pytestmark = pytest.mark.slow


def table(run, path: str) -> pd.DataFrame:
    return pd.read_parquet(run / "results" / "stats" / path)


def test_labels_tests_and_rows_of_every_head(tiny_run):
    for seed in (0, 1):
        gates, tests = table(tiny_run, f"seed{seed}/finetuned/gates.parquet"), table(tiny_run, f"seed{seed}/finetuned/gate_tests.parquet")
        assert set(gates["gate"]) <= set(LABELS) and set(gates["gate_absolute"]) <= set(LABELS)
        assert len(tests) == len(gates) * len(STRUCTURED)
        passed = tests[tests["passed"]].groupby(["layer", "head"])["gate"].apply(lambda g: "+".join(g))
        labelled = gates.set_index(["layer", "head"])["passed"]
        assert labelled[labelled != ""].to_dict() == passed.to_dict()  # the label lists exactly what passed
        assert (tests["n_null"] > 0).all() or (~tests["null_computed"]).any()
        rows = table(tiny_run, f"seed{seed}/finetuned/row_gates.parquet")
        shares = rows[rows["measure"] == "share"].groupby(["layer", "head"])["value"].sum()
        assert shares.to_numpy() == pytest.approx(1.0) and set(rows["label"]) == set(ROW_LABELS)
    untrained = table(tiny_run, "null_model/gates.parquet")
    assert (untrained["n_passed"] == 0).all()  # an untrained model passes no structured gate of its own nulls


def test_heads_are_matched_before_averaging(tiny_run):
    matching = table(tiny_run, "all_seeds/finetuned/head_matching.parquet")
    assert set(matching["reference_seed"]) == {0}
    for (seed, layer), part in matching.groupby(["seed", "layer"]):
        assert sorted(part["matched_head"]) == sorted(part["head"])  # one to one
    reference = matching[matching["seed"] == 0]
    assert (reference["head"] == reference["matched_head"]).all()
    for name in ("attention_patterns", "row_gates", "domain_attention", "directionality", "cone_index"):
        meta = read_metadata(tiny_run / "results" / "stats" / "all_seeds" / "finetuned" / f"{name}.parquet")
        assert meta["heads_matched_to_seed"] == 0, name
    assert "heads_matched_to_seed" not in read_metadata(tiny_run / "results" / "stats" / "all_seeds" / "finetuned" / "distribution.parquet")
    agreement = table(tiny_run, "all_seeds/finetuned/gate_agreement.parquet")
    assert {"matched_agreement", "untrained_agreement", "position_agreement"} <= set(agreement["measure"])


def test_domain_tests_partition_and_flags(tiny_run):
    domains = table(tiny_run, "seed0/finetuned/domain_attention.parquet")
    tested = set(domains.loc[domains["measure"] == "p_fdr", "domain"])
    assert tested == {"SP", "NTD", "RBD", "S1_rest", "FP", "HR1", "HR2", "TM", "CT", "S2_rest"}
    assert set(domains["domain"]) - tested == {"S1", "S2"}
    wide = domains.pivot_table(index=["layer", "head", "domain"], columns="measure", values="value")
    finite = wide.dropna(subset=["p"])
    assert ((finite["p_fdr"] >= finite["p"]) & (finite["p_bonferroni"] >= finite["p_fdr"] - 1e-12)).all()
    assert (finite["significant"] == (finite["p_fdr"] < 0.05)).all()
    assert (finite["df"] == finite["n_seqs"] - 1).all()
