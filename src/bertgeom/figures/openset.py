"""Open-set figures: share unassigned and AUROC per type of genome, and the reliability diagram before
and after temperature scaling (rules open_set_fit and open_set; bertgeom.openset_stage)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from bertgeom.figures.tables import per_seed, read_json, read_tsv
from bertgeom.figures.theme import WIDTH, legend_outside, seed_palette

SUMMARY_COLUMNS = ("group", "type", "n", "auroc", "unassigned", "correct")
CALIBRATION_SETS = {"calibration_check": "held-out hard calibration genomes", "test": "test split"}


def plot_open_set(summary: pd.DataFrame) -> plt.Figure:
    """Per type (test split first, then the out-of-class types in their order): the share unassigned at
    the threshold (top) and the AUROC of ood_score against the test split (bottom); one dot per seed,
    a bar for the mean over seeds. summary: columns seed + SUMMARY_COLUMNS (summary.tsv per seed)."""
    types = list(dict.fromkeys(summary["type"]))
    seeds = sorted(summary["seed"].unique())
    palette = seed_palette(seeds)
    x = np.arange(len(types))
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(WIDTH, 5.2), sharex=True)
    for ax, column in ((top, "unassigned"), (bottom, "auroc")):
        means = summary.groupby("type", sort=False)[column].mean().reindex(types)
        ax.bar(x, means.to_numpy(), color="0.85", edgecolor="0.5", width=0.7, label="mean over seeds")
        for i, seed in enumerate(seeds):
            part = summary[summary["seed"] == seed].set_index("type").reindex(types)
            offset = (i - (len(seeds) - 1) / 2) * 0.12
            ax.scatter(x + offset, part[column], s=14, color=palette[seed], label=f"seed {seed}", zorder=3)
        ax.set_ylim(0, 1.05)
    top.set_ylabel("share unassigned")
    bottom.set_ylabel("AUROC vs test split")
    bottom.axhline(0.5, color="0.5", linestyle=":", linewidth=0.8)
    bottom.set_xticks(x, types, rotation=45, ha="right")
    bottom.set_xlabel("genomes (synthetic out-of-class lineages and controls)")
    top.set_title("Open set: share unassigned at the stored threshold and separation by ood_score")
    legend_outside(top)
    return fig


def plot_reliability(calibration: dict[int, dict]) -> plt.Figure:
    """Reliability diagrams (accuracy against mean confidence per confidence bin), before (dashed) and
    after (solid) temperature scaling, one panel per set of CALIBRATION_SETS, one colour per seed;
    ECE in the legend. calibration: {seed: calibration.json of rule open_set}."""
    seeds = sorted(calibration)
    palette = seed_palette(seeds)
    fig, axes = plt.subplots(1, len(CALIBRATION_SETS), figsize=(WIDTH, 3.6), sharey=True)
    for ax, (key, title) in zip(axes, CALIBRATION_SETS.items()):
        ax.plot([0, 1], [0, 1], color="0.6", linestyle=":", linewidth=0.8)
        for seed in seeds:
            data = calibration[seed][key]
            for when, style in (("before", "--"), ("after", "-")):
                bins = pd.DataFrame(data[f"reliability_{when}"], columns=["confidence", "accuracy", "n"])
                ece = data[f"ece_{when}"]
                label = f"seed {seed} {when} (ECE {100 * ece:.1f}%)"
                ax.plot(bins["confidence"], bins["accuracy"], style, marker="o", markersize=3,
                        color=palette[seed], label=label)  # fmt: skip
        ax.set_title(f"{title} (n = {calibration[seeds[0]][key]['n']})", fontsize="small")
        ax.set_xlabel("mean confidence in bin")
        ax.set_xlim(0, 1.02)
        ax.set_ylim(0, 1.02)
        ax.legend(fontsize="xx-small", loc="upper left")
    axes[0].set_ylabel("accuracy in bin")
    fig.suptitle("Reliability before (dashed) and after (solid) temperature scaling, 15 bins")
    return fig


def make_open_set(input, params) -> plt.Figure:
    return plot_open_set(per_seed(input.summaries, params.seeds, read_tsv, columns=SUMMARY_COLUMNS))


def make_reliability(input, params) -> plt.Figure:
    keys = list(CALIBRATION_SETS)
    return plot_reliability({seed: read_json(path, keys) for seed, path in zip(params.seeds, input.calibrations)})


def open_set_table(summary: pd.DataFrame) -> pd.DataFrame:
    """One row per type: n, then per seed and as the mean over seeds the share unassigned and the AUROC,
    and the share correct (in class). summary: columns seed + SUMMARY_COLUMNS."""
    types = list(dict.fromkeys(summary["type"]))
    wide = summary.pivot(index="type", columns="seed", values=["unassigned", "auroc"]).reindex(types)
    table = pd.DataFrame({"type": types, "n": summary.groupby("type", sort=False)["n"].first().reindex(types).to_numpy()})
    for column in ("unassigned", "auroc"):
        for seed in sorted(summary["seed"].unique()):
            table[f"{column} seed {seed}"] = wide[(column, seed)].to_numpy()
        table[f"{column} mean"] = wide[column].mean(axis=1).to_numpy()
    table["correct mean"] = summary.groupby("type", sort=False)["correct"].mean().reindex(types).to_numpy()
    return table


def write_open_set_table(summaries, seeds, tsv, html) -> None:
    """Rule open_set_table: open_set_table() of every seed's summary.tsv as TSV and a standalone HTML page."""
    from bertgeom.figures.classification import table_html
    from bertgeom.io import write_text

    table = open_set_table(per_seed(summaries, seeds, read_tsv, columns=SUMMARY_COLUMNS))
    write_text(tsv, table.to_csv(sep="\t", index=False, float_format="%.6g"))
    title = "Open set per type: share unassigned at the stored threshold, AUROC of ood_score vs the test split"
    write_text(html, table_html(table, title))
