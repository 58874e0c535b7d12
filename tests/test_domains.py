"""Spike-domain attention: the non-overlapping partition, token assignment by codon majority, shares,
and the t-tests with Benjamini-Hochberg and Bonferroni control (known answers and scipy)."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from bertgeom.data.variants import spike_domains
from bertgeom.io import write_parquet
from bertgeom.stats import domains as dom
from bertgeom.tokens import token_map

PARTS = ["SP", "NTD", "RBD", "S1_rest", "FP", "HR1", "HR2", "TM", "CT", "S2_rest"]


@pytest.fixture(scope="module")
def variants(root):
    return str(root / "resources" / "variants.yaml")


@pytest.fixture(scope="module")
def reference_map(variants, tmp_path_factory):
    path = tmp_path_factory.mktemp("tokens") / "token_map.parquet"
    write_parquet(token_map(512, 12, 9, spike_domains(variants)), path)
    return str(path)


def test_partition_covers_every_residue_once(variants):
    names, subunits, part = dom.partition(variants)
    assert names == PARTS and subunits == ["S1", "S2"]
    assert (part[1:] >= 0).all() and len(part) == 1274  # residues 1..1273
    at = {r: names[part[r]] for r in (13, 14, 305, 306, 318, 319, 541, 542, 685, 686, 1213, 1214, 1237, 1238, 1273)}
    assert at == {13: "SP", 14: "NTD", 305: "NTD", 306: "S1_rest", 318: "S1_rest", 319: "RBD", 541: "RBD",
                  542: "S1_rest", 685: "S1_rest", 686: "S2_rest", 1213: "HR2", 1214: "TM", 1237: "TM",
                  1238: "CT", 1273: "CT"}  # fmt: skip  (shared boundary residues go to the upstream domain)


def test_tokens_take_the_domain_of_most_codons(variants, reference_map):
    names, subunits, member = dom.membership(reference_map, variants)
    parts = member[:, : len(names)]
    assert (parts.sum(axis=1)[1:426] == 1).all() and parts[[0, 426, 427, 511]].sum() == 0  # specials, PAD: none
    position_of = lambda codon: (codon - 1) // 3 + 1  # noqa: E731 (token t covers codons 3(t-1)+1..3(t-1)+4)
    # token 5: codons 13..16, one SP (13) and three NTD -> NTD; token 106: codons 316..319, three
    # S1_rest and one RBD -> S1_rest; token 105: codons 313..316, all S1_rest
    assert names[parts[5].argmax()] == "NTD" and position_of(13) == 5
    assert names[parts[106].argmax()] == "S1_rest"
    # HR2/TM: token 404 covers codons 1210..1213 (all HR2), token 405 codons 1213..1216: 1213 is HR2
    # (upstream side), 1214..1216 TM -> TM
    assert names[parts[404].argmax()] == "HR2" and names[parts[405].argmax()] == "TM"
    # the last k-mer (codons 1273..1276: CT, the stop codon, N padding) -> CT
    assert names[parts[425].argmax()] == "CT"
    s1, s2 = member[:, len(names)], member[:, len(names) + 1]
    assert not (s1 & s2).any() and (s1 == parts[:, 1:4].any(axis=1)).all() and (s2 == parts[:, 4:].any(axis=1)).all()


def test_a_two_two_tie_goes_upstream(tmp_path, variants):
    frame = pd.DataFrame({"position": [0, 1], "codon_start": [None, 304], "codon_end": [None, 307]})
    write_parquet(frame.astype({"codon_start": "Int32", "codon_end": "Int32"}), tmp_path / "map.parquet")
    names, _, member = dom.membership(str(tmp_path / "map.parquet"), variants)
    assert names[member[1, : len(names)].argmax()] == "NTD"  # codons 304, 305 NTD; 306, 307 S1_rest


def test_domain_shares_known_answers():
    member = np.zeros((12, 2), dtype=bool)
    member[1:6, 0] = True
    member[6:11, 1] = True
    uniform = np.full((12, 12), 1 / 12)
    observed, expected = dom.domain_shares(uniform, member)
    assert np.allclose(observed, expected) and np.allclose(expected, 0.5)
    focused = np.zeros((12, 12))
    focused[:, 7] = 1
    assert dom.domain_shares(focused, member)[0].tolist() == [0, 1]
    short = np.full((7, 7), 1 / 7)  # keys 1..5: all in domain 0
    assert dom.domain_shares(short, member)[1].tolist() == [1, 0]


def test_benjamini_hochberg_and_bonferroni_known_answers():
    p = np.array([0.01, 0.04, 0.03, 0.005, np.nan])
    fdr, bonferroni, tests = dom.adjust(p)
    # sorted 0.005, 0.01, 0.03, 0.04 -> x 4/1, 4/2, 4/3, 4/4 = 0.02, 0.02, 0.04, 0.04 (then monotone)
    assert tests == 4
    assert np.allclose(fdr[:4], [0.02, 0.04, 0.04, 0.02]) and np.isnan(fdr[4])
    assert np.allclose(bonferroni[:4], [0.04, 0.16, 0.12, 0.02]) and np.isnan(bonferroni[4])


def test_domain_table_t_tests_match_scipy():
    rng = np.random.default_rng(4)
    rows = []
    for head in (0, 1):
        for domain, shift in (("RBD", 0.05), ("NTD", 0.0), ("S1", 0.02)):
            for s in range(6):
                share = 0.3 + shift * (head + 1) + rng.normal(0, 0.02)
                rows.append({"layer": 0, "head": head, "seq_id": f"s{s}", "domain": domain, "share": share,
                             "expected": 0.3})  # fmt: skip
    for s in range(6):  # no spread: undefined, not a test
        rows.append({"layer": 1, "head": 0, "seq_id": f"s{s}", "domain": "RBD", "share": 0.4, "expected": 0.3})
    frame = pd.DataFrame(rows)
    table = dom.domain_table(frame, pd.DataFrame(), ["RBD", "NTD"], fdr=0.05, seed=3)
    value = table.set_index(["layer", "head", "domain", "measure"])["value"]
    p_values = []
    for head in (0, 1):
        for domain in ("RBD", "NTD"):
            part = frame[(frame["layer"] == 0) & (frame["head"] == head) & (frame["domain"] == domain)]
            expected = stats.ttest_1samp(part["share"] - part["expected"], 0.0)
            assert value[(0, head, domain, "t")] == pytest.approx(expected.statistic)
            assert value[(0, head, domain, "p")] == pytest.approx(expected.pvalue)
            assert value[(0, head, domain, "df")] == 5
            p_values.append(expected.pvalue)
    bh = stats.false_discovery_control(p_values, method="bh")
    assert [value[(0, h, d, "p_fdr")] for h in (0, 1) for d in ("RBD", "NTD")] == pytest.approx(list(bh))
    assert value[(0, 1, "RBD", "p_bonferroni")] == pytest.approx(min(1, 4 * p_values[2]))
    assert value[(0, 1, "RBD", "significant")] == 1 and value[(0, 0, "NTD", "significant")] == (bh[1] < 0.05)
    assert np.isnan(value[(1, 0, "RBD", "t")]) and np.isnan(value[(1, 0, "RBD", "p")])
    assert value[(0, 1, "RBD", "ratio")] == pytest.approx(value[(0, 1, "RBD", "share")] / 0.3)
    s1 = table[table["domain"] == "S1"]  # nested: descriptive only
    assert set(s1["measure"]) == {"share", "expected", "ratio", "n_seqs"}
