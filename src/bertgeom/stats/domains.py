"""Spike-domain attention: a partition of the spike into non-overlapping domains, the attention
share each domain receives per sequence and head, and one-sample t-tests with multiple-testing control.

Partition (docs/methods.md, "Spike-domain attention"): every residue of the spike belongs to exactly
one part: the first domain of variants.yaml `spike.domains` that holds it (a residue two domains
share, such as HR2/TM 1213, goes to the one listed first, the upstream one), else "<subunit>_rest"
for the subunit that holds it (`spike.subunits`). Default: SP, NTD, RBD, S1_rest, FP, HR1, HR2,
TM, CT, S2_rest. A k-mer token belongs to the part holding most of its codons (codons past the
protein, the stop codon and N padding, are not counted; a tie goes to the part of its first tied
codon, the upstream one). The subunits themselves (S1, S2) nest the parts: they are reported
descriptively (share, expected, ratio), never tested.

Test per (layer, head, part): the m subset sequences give m differences share - expected; one-sample
t-test against 0 (t with m - 1 degrees of freedom, two-sided; NaN with m < 2 or no spread), then
over every test of the seed's table Benjamini-Hochberg adjusted p-values (`p_fdr`, flag `significant`
= p_fdr < fdr) and Bonferroni (`p_bonferroni` = min(1, p x tests)).
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from scipy import stats

from bertgeom.data.variants import load_variants
from bertgeom.io import require_columns

log = logging.getLogger(__name__)

REST = "{}_rest"
TEST_MEASURES = ("mean_diff", "t", "df", "p", "p_fdr", "p_bonferroni", "significant")


def partition(variants: str) -> tuple[list[str], list[str], np.ndarray]:
    """(part names in spike order, subunit names, part of each residue [residues + 1], -1 = none).

    Index 0 of the residue array is unused (residues are 1-based).
    """
    spike = load_variants(variants)["spike"]
    domains, subunits = spike["domains"], spike["subunits"]
    length = max(int(d["end"]) for d in domains + subunits)
    names = [d["name"] for d in domains]
    part = np.full(length + 1, -1, dtype=np.int64)
    for i, d in reversed(list(enumerate(domains))):  # reversed: the first-listed domain wins
        part[int(d["start"]) : int(d["end"]) + 1] = i
    for s in subunits:
        inside = np.zeros(length + 1, dtype=bool)
        inside[int(s["start"]) : int(s["end"]) + 1] = True
        rest = inside & (part == -1)
        if rest.any():
            names.append(REST.format(s["name"]))
            part[rest] = len(names) - 1
    first = [int(np.flatnonzero(part == i).min()) if (part == i).any() else length + 1 for i in range(len(names))]
    # Order: each subunit's rest right after the last domain that starts inside that subunit.
    order = sorted(range(len(names)), key=lambda i: (_order_key(i, names, first, subunits)))
    remap = np.full(len(names), -1)
    remap[order] = np.arange(len(order))
    return [names[i] for i in order], [s["name"] for s in subunits], np.where(part >= 0, remap[part], -1)


def _order_key(i: int, names: list[str], first: list[int], subunits: list[dict]) -> tuple[int, int]:
    for s in subunits:
        if names[i] == REST.format(s["name"]):
            return int(s["end"]), 1  # after every domain starting inside the subunit
    return first[i], 0


def token_parts(token_map: str, residue_part: np.ndarray, n_parts: int) -> np.ndarray:
    """Part index of every token position ([positions], -1 = none) from token_map.parquet's codons."""
    require_columns(token_map, ["position", "codon_start", "codon_end"])
    frame = pq.read_table(token_map, columns=["position", "codon_start", "codon_end"]).to_pandas()
    parts = np.full(int(frame["position"].max()) + 1, -1, dtype=np.int64)
    for position, start, end in frame.dropna(subset=["codon_start"]).itertuples(index=False):
        codons = np.arange(int(start), int(end) + 1)
        held = residue_part[codons[codons < len(residue_part)]]
        held = held[held >= 0]
        if held.size:
            counts = np.bincount(held, minlength=n_parts)
            tied = np.flatnonzero(counts == counts.max())
            parts[position] = next(p for p in held if p in tied)  # the first tied part along the token
    return parts


def membership(token_map: str, variants: str) -> tuple[list[str], list[str], np.ndarray]:
    """(part names, subunit names, [position, part + subunit] bool): the parts partition the
    positions; a position lies in a subunit when its part lies inside that subunit's residues."""
    names, subunits, residue_part = partition(variants)
    parts = token_parts(token_map, residue_part, len(names))
    member = np.zeros((len(parts), len(names) + len(subunits)), dtype=bool)
    covered = parts >= 0
    member[np.flatnonzero(covered), parts[covered]] = True
    spans = [(int(np.flatnonzero(residue_part == i).min()), int(np.flatnonzero(residue_part == i).max()))
             for i in range(len(names))]  # fmt: skip
    for j, s in enumerate(load_variants(variants)["spike"]["subunits"]):
        inside = [i for i, (lo, hi) in enumerate(spans) if lo >= int(s["start"]) and hi <= int(s["end"])]
        member[:, len(names) + j] = np.isin(parts, inside)
    return names, subunits, member


def domain_shares(attention: np.ndarray, member: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(observed, expected) share of attention per domain, over the non-special keys 1..n-2.

    observed_d = attention received by keys in d / attention received by all non-special keys;
    expected_d = keys in d / non-special keys. Positions past the token map lie in no domain.
    """
    a = np.asarray(attention, dtype=np.float64)
    n = a.shape[0]
    keys = np.zeros((n - 2, member.shape[1]), dtype=bool)
    covered = min(n - 1, member.shape[0]) - 1
    keys[:covered] = member[1 : covered + 1]
    received = a[:, 1:-1].sum(axis=0)
    return received @ keys / received.sum(), keys.mean(axis=0)


def t_tests(diffs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One-sample two-sided t-tests of each row of diffs [tests, m] against 0: (t, df, p).

    NaN where m < 2 or all m values of the row are equal (no spread: t is undefined; testing
    equality, not sd > 0, because the sd of equal values can come out ~1e-17, not 0).
    """
    m = diffs.shape[1]
    if m < 2:
        nan = np.full(len(diffs), np.nan)
        return nan, nan, nan
    undefined = np.ptp(diffs, axis=1) == 0
    with np.errstate(invalid="ignore", divide="ignore"):
        result = stats.ttest_1samp(np.where(undefined[:, None], 0.0, diffs), 0.0, axis=1)
    t = np.where(undefined, np.nan, result.statistic)
    p = np.where(undefined, np.nan, result.pvalue)
    return t, np.full(len(diffs), float(m - 1)), p


def adjust(p: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """(Benjamini-Hochberg adjusted p, Bonferroni p, tests run) over the finite p-values; NaN stays NaN."""
    finite = np.isfinite(p)
    fdr = np.full(p.shape, np.nan)
    bonferroni = np.full(p.shape, np.nan)
    tests = int(finite.sum())
    if tests:
        fdr[finite] = stats.false_discovery_control(p[finite], method="bh")
        bonferroni[finite] = np.minimum(1.0, p[finite] * tests)
    return fdr, bonferroni, tests


def domain_table(
    per_matrix: pd.DataFrame, class_rows: pd.DataFrame, parts: list[str], fdr: float, seed: int
) -> pd.DataFrame:
    """Tidy domain attention per (layer, head, domain) from per-sequence rows (layer, head, seq_id,
    domain, share, expected); only the domains in `parts` are tested (module docstring).

    share_classes: the mean over classes of the share in each class's mean attention matrix.
    """
    keys = ["layer", "head", "domain"]
    frame = per_matrix.assign(diff=per_matrix["share"] - per_matrix["expected"]).sort_values([*keys, "seq_id"])
    grouped = frame.groupby(keys, sort=True)
    table = grouped[["share", "expected"]].mean()
    table["ratio"] = table["share"] / table["expected"].where(table["expected"] > 0)
    table["n_seqs"] = grouped.size().astype(float)
    tested = table.index.get_level_values("domain").isin(parts)
    diffs = frame[frame["domain"].isin(parts)].pivot_table(index=keys, columns="seq_id", values="diff")
    diffs = diffs.reindex(table.index[tested])
    if diffs.isna().to_numpy().any():
        raise ValueError("domain attention: every (layer, head, domain) needs a share for every subset sequence")
    t, df, p = t_tests(diffs.to_numpy())
    p_fdr, p_bonferroni, tests = adjust(p)
    log.info("domain attention: %d t-tests, %d with p_fdr < %g", tests, int(np.nansum(p_fdr < fdr)), fdr)
    columns = {"mean_diff": diffs.mean(axis=1).to_numpy(), "t": t, "df": df, "p": p, "p_fdr": p_fdr,
               "p_bonferroni": p_bonferroni, "significant": np.where(np.isfinite(p_fdr), p_fdr < fdr, np.nan)}  # fmt: skip
    for name, values in columns.items():
        table.loc[tested, name] = values
    if len(class_rows):
        table["share_classes"] = class_rows.groupby(keys)["share"].mean().reindex(table.index)
    tidy = table.reset_index().melt(id_vars=keys, var_name="measure", value_name="value")
    tidy = tidy[~(tidy["measure"].isin(TEST_MEASURES) & ~tidy["domain"].isin(parts))]
    return tidy.assign(seed=seed)
