"""How many heads carry each gate label, per checkpoint and seed (rule gate_counts).

Reads the null-calibrated labels of rule attention_patterns (results/stats/seed{seed}/{checkpoint}/
gates.parquet, column `gate`; docs/methods.md) and writes results/stats/all_seeds/gate_counts.tsv:
checkpoint, seed, label, heads (every label of stats.attention.LABELS, zeros included), n_heads.
"""

from __future__ import annotations

import logging

import pandas as pd

from bertgeom.io import require_columns, write_text
from bertgeom.stats.attention import LABELS

log = logging.getLogger("bertgeom.stats.gate_counts")
COLUMNS = ["checkpoint", "seed", "label", "heads", "n_heads"]


def gate_counts(paths: list[str], checkpoints: list[str], seeds: list[int]) -> pd.DataFrame:
    """One row per (checkpoint, seed, label) of the gates tables `paths` (paths[i] is the table of
    checkpoints[i], seeds[i]), in that order and LABELS order."""
    if not len(paths) == len(checkpoints) == len(seeds):
        raise ValueError(f"gate_counts: {len(paths)} tables for {len(checkpoints)} checkpoints and {len(seeds)} seeds")
    rows = []
    for path, checkpoint, seed in zip(paths, checkpoints, seeds):
        require_columns(path, ["layer", "head", "gate"])
        labels = pd.read_parquet(path, columns=["gate"])["gate"]
        unknown = sorted(set(labels) - set(LABELS))
        if unknown:
            raise ValueError(f"{path}: unknown gate label(s) {unknown}; expected some of {list(LABELS)}")
        counts = labels.value_counts()
        rows += [(checkpoint, seed, label, int(counts.get(label, 0)), len(labels)) for label in LABELS]
    return pd.DataFrame(rows, columns=COLUMNS)


def write_gate_counts(paths: list[str], checkpoints: list[str], seeds: list[int], out: str) -> None:
    """Rule gate_counts: the table of gate_counts, as TSV."""
    table = gate_counts(paths, checkpoints, seeds)
    write_text(out, table.to_csv(sep="\t", index=False))
    log.info("gate labels of %d tables counted", len(paths))
