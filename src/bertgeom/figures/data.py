"""Data figures: genomes per class with their QC outcome; ordered k-mer occurrences."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from bertgeom.figures.theme import WIDTH, legend_outside
from bertgeom.figures.tables import read_parquet, read_tsv

QC_COLUMNS = ("seq_id", "class", "status", "reason")
KMER_COLUMNS = ("kmer", "count", "in_vocab", "rank")


def plot_qc(qc: pd.DataFrame, classes: list[str]) -> plt.Figure:
    """Horizontal stacked bars: per class, genomes that passed QC and those rejected, by reason.

    qc: one row per genome, columns `class, status (pass/reject), reason`.
    """
    qc = qc.copy()
    unknown = sorted(set(qc["class"]) - set(classes))
    if unknown:
        raise ValueError(f"qc table: class(es) {unknown} not in config classes {classes}")
    qc["outcome"] = np.where(qc["status"] == "pass", "pass", "reject: " + qc["reason"].fillna("").astype(str))
    counts = qc.pivot_table(index="class", columns="outcome", values="seq_id", aggfunc="count", fill_value=0)
    counts = counts.reindex(index=classes, fill_value=0)
    outcomes = ["pass"] if "pass" in counts else []
    outcomes += sorted(c for c in counts.columns if c != "pass")
    counts = counts.reindex(columns=outcomes, fill_value=0)
    colours = ["#0072B2"] + sns.color_palette("colorblind", 10).as_hex()[1:]

    fig, ax = plt.subplots(figsize=(WIDTH, 0.35 * len(classes) + 1.4))
    left = np.zeros(len(classes))
    for outcome, colour in zip(outcomes, colours):
        ax.barh(classes, counts[outcome].to_numpy(), left=left, color=colour, label=outcome, height=0.7)
        left += counts[outcome].to_numpy()
    for y, (total, passed) in enumerate(zip(left, counts.get("pass", pd.Series(0, index=classes)))):
        ax.text(total, y, f"  {passed}/{int(total)}", va="center", fontsize="small")
    ax.invert_yaxis()  # label order top to bottom
    ax.set_xlim(0, left.max() * 1.15 if left.max() else 1)
    ax.set_xlabel("genomes (count)")
    ax.set_ylabel("class")
    ax.set_title(f"Genomes per class and QC outcome (passed/total; {int(counts['pass'].sum()) if 'pass' in counts else 0} passed)")
    ax.grid(axis="y", visible=False)
    legend_outside(ax, title="QC outcome")
    return fig


def plot_kmer_occurrences(kmers: pd.DataFrame) -> plt.Figure:
    """k-mers ordered by their number of occurrences in the training split (log-log), vocabulary marked.

    kmers: one row per distinct k-mer, columns `count, in_vocab, rank` (rank 1 = most frequent).
    """
    kmers = kmers.sort_values("rank")
    fig, ax = plt.subplots(figsize=(WIDTH, 3.6))
    for in_vocab, colour, label in ((True, "#0072B2", "in vocabulary"), (False, "#D55E00", "below min_count")):
        part = kmers[kmers["in_vocab"] == in_vocab]
        if len(part):
            ax.scatter(part["rank"], part["count"], s=4, color=colour, label=f"{label} ({len(part):,})", linewidths=0)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("k-mer rank (1 = most frequent)")
    ax.set_ylabel("occurrences in training split")
    ax.set_title(f"Ordered k-mer occurrences ({len(kmers):,} distinct k-mers)")
    legend_outside(ax, markerscale=3)
    return fig


def make_data_qc(input, params) -> plt.Figure:
    return plot_qc(read_tsv(input.qc, QC_COLUMNS), list(params.classes))


def make_kmer_occurrences(input, params) -> plt.Figure:
    return plot_kmer_occurrences(read_parquet(input.kmers, KMER_COLUMNS))
