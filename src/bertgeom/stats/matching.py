"""Heads matched across seeds before any across-seed statement (docs/methods.md, "Matching heads").

Heads of independently trained models do not correspond: head 2 of layer 1 in seed 0 has no reason
to do what head 2 of layer 1 does in seed 1. Per layer, every seed's heads are matched one to one
to the heads of a reference seed (the first of train.seeds) by the Hungarian assignment
(scipy.optimize.linear_sum_assignment) that minimises the summed Euclidean distance between the
heads' gate-score vectors (the seven scores of gates.parquet, each a share or a normalised entropy
in [0, 1], not rescaled). Across-seed tables then average matched heads: `head` is the reference
seed's head index.

Agreement of the labels: per pair of seeds, the share of matched heads with the same label, after
matching that pair directly; compared with what matching alone produces: each seed matched to the
null model (an untrained model of the same architecture, rule null_model), the share of its heads
whose label equals their untrained match's.
"""

from __future__ import annotations

import logging
from collections import Counter
from itertools import combinations

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist

from bertgeom.io import provenance, write_parquet
from bertgeom.stats.attention import GATES, LABELS

log = logging.getLogger(__name__)

SCORES = [f"score_{g}" for g in GATES]
MATCHING_COLUMNS = ["seed", "layer", "head", "matched_head", "distance", "reference_seed"]


def match(reference: pd.DataFrame, other: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """One layer: (reference head matched to each head of `other`, distance) by the Hungarian
    assignment on the score vectors. Both frames are indexed by head, columns SCORES."""
    cost = cdist(other[SCORES].to_numpy(np.float64), reference[SCORES].to_numpy(np.float64))
    rows, cols = linear_sum_assignment(cost)
    matched = np.full(len(other), -1)
    matched[rows] = reference.index.to_numpy()[cols]
    distance = np.full(len(other), np.nan)
    distance[rows] = cost[rows, cols]
    return matched, distance


def head_matching(gates: pd.DataFrame, reference_seed: int) -> pd.DataFrame:
    """Every seed's heads matched, layer by layer, to the reference seed's (MATCHING_COLUMNS)."""
    if reference_seed not in set(gates["seed"]):
        raise ValueError(f"head matching: reference seed {reference_seed} has no gates table (seeds {sorted(set(gates['seed']))})")
    rows = []
    for (seed, layer), part in gates.groupby(["seed", "layer"], sort=True):
        reference = gates[(gates["seed"] == reference_seed) & (gates["layer"] == layer)].set_index("head")
        if reference.empty:
            raise ValueError(f"head matching: seed {seed} has layer {layer}, the reference seed {reference_seed} has not")
        part = part.set_index("head").sort_index()
        matched, distance = match(reference, part)
        rows += [(seed, layer, head, m, d, reference_seed) for head, m, d in zip(part.index, matched, distance)]
    frame = pd.DataFrame(rows, columns=MATCHING_COLUMNS)
    return frame.astype({"seed": "int32", "layer": "int16", "head": "int16", "matched_head": "int16",
                         "reference_seed": "int32"})  # fmt: skip


def apply_matching(table: pd.DataFrame, matching: pd.DataFrame) -> pd.DataFrame:
    """`table` (with seed, layer, head) with each head replaced by its matched reference head; rows
    with head < 0 (whole-layer rows) are kept as they are. Seeds or heads without a match: error."""
    lookup = matching.set_index(["seed", "layer", "head"])["matched_head"]
    heads = table["head"].to_numpy()
    per_head = heads >= 0
    keys = pd.MultiIndex.from_arrays([table["seed"].to_numpy()[per_head], table["layer"].to_numpy()[per_head],
                                      heads[per_head]])  # fmt: skip
    matched = lookup.reindex(keys)
    if matched.isna().any():
        raise ValueError(f"head matching has no entry for (seed, layer, head) {list(keys[matched.isna().to_numpy()][:3])}")
    out = table.copy()
    out.loc[per_head, "head"] = matched.to_numpy().astype(heads.dtype)
    return out


def label_agreement(a: pd.DataFrame, b: pd.DataFrame) -> tuple[float, float]:
    """(share of heads with the same label, mean distance) after matching b's heads to a's (one layer)."""
    matched, distance = match(a, b)
    labels = a["gate"].reindex(matched).to_numpy()
    return float(np.mean(labels == b["gate"].to_numpy())), float(np.nanmean(distance))


def layer_agreement(per_seed: dict[int, pd.DataFrame], untrained: pd.DataFrame | None) -> dict[str, float]:
    """Agreement measures of one layer (per_seed: each seed's gates rows indexed by head)."""
    pairs = list(combinations(sorted(per_seed), 2))
    matched = [label_agreement(per_seed[s], per_seed[t]) for s, t in pairs]
    counts = {s: Counter(frame["gate"]) for s, frame in per_seed.items()}
    heads = len(next(iter(per_seed.values())))
    out = {
        "position_agreement": np.mean([np.mean(per_seed[s]["gate"].to_numpy() == per_seed[t]["gate"].to_numpy())
                                       for s, t in pairs]) if pairs else np.nan,  # fmt: skip
        "matched_agreement": np.mean([m[0] for m in matched]) if pairs else np.nan,
        "matched_distance": np.mean([m[1] for m in matched]) if pairs else np.nan,
        "chance_agreement": np.mean([sum(counts[s][g] * counts[t][g] for g in LABELS) / heads**2 for s, t in pairs])
        if pairs else np.nan,  # fmt: skip
    }
    if untrained is not None:
        baseline = [label_agreement(untrained, frame) for frame in per_seed.values()]
        out["untrained_agreement"] = float(np.mean([b[0] for b in baseline]))
        out["untrained_distance"] = float(np.mean([b[1] for b in baseline]))
    return out


def gate_agreement(gates: pd.DataFrame, matching: pd.DataFrame, untrained: pd.DataFrame | None = None) -> pd.DataFrame:
    """Agreement of the gate labels across seeds (module docstring), from every seed's gates table.

    Rows: per matched head (`head` = the reference seed's) the modal label (`gate`) and its share of
    seeds (`modal_share`); per layer (head null) position_agreement (same (layer, head) position),
    matched_agreement and matched_distance (pairs matched directly), chance_agreement (positional
    agreement expected from the label counts alone), untrained_agreement and untrained_distance
    (each seed matched to the untrained model); per layer and label (head null) share_mean and
    share_sd over seeds. Columns: layer, head, gate, measure, value, n_seeds.
    """
    seeds = sorted(gates["seed"].unique())
    matched = apply_matching(gates, matching)
    rows = []
    for layer, in_layer in gates.groupby("layer"):
        for head, labels in matched[matched["layer"] == layer].groupby("head")["gate"]:
            counts = Counter(labels)
            modal = min(counts, key=lambda g: (-counts[g], g))
            rows.append((layer, head, modal, "modal_share", counts[modal] / len(labels), len(labels)))
        per_seed = {s: part.set_index("head").sort_index() for s, part in in_layer.groupby("seed")}
        reference = None if untrained is None else untrained[untrained["layer"] == layer].set_index("head").sort_index()
        rows += [(layer, None, None, m, v, len(seeds)) for m, v in layer_agreement(per_seed, reference).items()]
        heads = len(next(iter(per_seed.values())))
        for gate in LABELS:
            shares = [float((per_seed[s]["gate"] == gate).sum()) / heads for s in seeds]
            rows.append((layer, None, gate, "share_mean", float(np.mean(shares)), len(seeds)))
            rows.append((layer, None, gate, "share_sd", float(np.std(shares, ddof=1)) if len(seeds) > 1 else np.nan,
                         len(seeds)))  # fmt: skip
    table = pd.DataFrame(rows, columns=["layer", "head", "gate", "measure", "value", "n_seeds"])
    return table.astype({"layer": "int16", "head": "Int16", "value": "float64", "n_seeds": "int32"})


def read_gates(paths: list[str]) -> pd.DataFrame:
    return pd.concat([pq.read_table(path, columns=["seed", "layer", "head", "gate", *SCORES]).to_pandas()
                      for path in paths], ignore_index=True)  # fmt: skip


def write_head_matching(paths: list[str], out: str, reference_seed: int) -> None:
    """Rule match_heads: every seed's heads matched to the reference seed's, from the gates tables."""
    table = head_matching(read_gates(paths), reference_seed)
    write_parquet(table, out, meta=provenance(None, reference_seed=reference_seed, seeds=sorted(set(table["seed"]))))
    log.info("wrote %s (%d heads; mean distance to the reference %.4f)", out, len(table), table["distance"].mean())


def write_gate_agreement(paths: list[str], matching: str, untrained: str, out: str) -> None:
    """Rule gate_agreement: label agreement across seeds and against the untrained model."""
    gates = read_gates(paths)
    table = gate_agreement(gates, pq.read_table(matching).to_pandas(), read_gates([untrained]))
    write_parquet(table, out, meta=provenance(None, seeds=sorted(int(s) for s in gates["seed"].unique())))
    log.info("wrote %s (%d rows)", out, len(table))
