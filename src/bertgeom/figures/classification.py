"""Classification figures: training curves per seed, confusion matrix, per-class F1 across seeds,
and the metrics table of the report."""

from __future__ import annotations

import html

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from bertgeom.figures.tables import per_seed, read_csv, read_json
from bertgeom.stats.aggregate import aggregate_seeds
from bertgeom.figures.theme import WIDTH, legend_outside, seed_palette
from bertgeom.io import write_text

LOG_COLUMNS = ("step", "epoch", "loss", "lr")
METRIC_KEYS = ("accuracy", "macro_f1", "micro_f1", "per_class", "confusion_matrix", "classes")


def plot_training_curves(log: pd.DataFrame, val: pd.DataFrame | None = None, smooth: int = 10) -> plt.Figure:
    """Training loss (raw, faint; rolling mean over `smooth` log lines, bold), validation loss after
    each epoch (diamonds) and learning rate per step.

    log: columns `seed, step, epoch, loss, lr`, one row per logged step;
    val: columns `seed, step, val_loss`, one row per epoch (training_info.json "epochs").
    """
    seeds = sorted(log["seed"].unique())
    palette = seed_palette(seeds)
    fig, (ax_loss, ax_lr) = plt.subplots(
        2, 1, figsize=(WIDTH, 4.6), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    for seed in seeds:
        part = log[log["seed"] == seed].sort_values("step")
        ax_loss.plot(part["step"], part["loss"], color=palette[seed], alpha=0.25, linewidth=0.8)
        smoothed = part["loss"].rolling(smooth, min_periods=1).mean()
        ax_loss.plot(part["step"], smoothed, color=palette[seed], linewidth=1.6, label=f"seed {seed}")
        ax_lr.plot(part["step"], part["lr"], color=palette[seed], linewidth=1.2)
    if val is not None and len(val):
        for i, seed in enumerate(seeds):
            part = val[val["seed"] == seed]
            ax_loss.scatter(part["step"], part["val_loss"], marker="D", s=22, color=palette[seed], edgecolor="black",
                            linewidth=0.5, zorder=4, label="validation loss (end of epoch)" if i == 0 else None)
    # Epoch boundaries: the first logged step of each new epoch (same for every seed).
    first = log[log["seed"] == seeds[0]]
    for step in first.groupby("epoch")["step"].min().iloc[1:]:
        for ax in (ax_loss, ax_lr):
            ax.axvline(step, color="0.5", linestyle=":", linewidth=0.8)
    positive = log["loss"][log["loss"] > 0]
    if len(positive) and positive.max() / positive.min() > 10:  # log scale only when it spans decades
        ax_loss.set_yscale("log")
    ax_loss.set_ylabel("loss (cross-entropy, nats)")
    ax_loss.set_title(f"Training curves ({len(seeds)} seeds; bold: rolling mean of {smooth} steps; dotted: epochs)")
    legend_outside(ax_loss)
    ax_lr.set_ylabel("learning rate")
    ax_lr.set_xlabel("optimizer step")
    ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
    return fig


def confusion_mean(metrics: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """Row-normalised confusion matrix averaged over seeds, and the summed counts.

    Rows: true class, columns: predicted class. Returns (mean share [classes, classes], counts).
    """
    counts = np.array([m["confusion_matrix"] for m in metrics], dtype=float)  # [seeds, true, pred]
    rows = counts.sum(axis=2, keepdims=True)
    share = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
    return share.mean(axis=0), counts.sum(axis=0)


def plot_confusion(share: np.ndarray, counts: np.ndarray, classes: list[str], n_seeds: int) -> plt.Figure:
    """Heatmap of the row-normalised confusion matrix (percent of each true class), counts annotated."""
    fig, ax = plt.subplots(figsize=(WIDTH * 0.8, WIDTH * 0.68))
    labels = np.vectorize(lambda s, c: f"{100 * s:.1f}\n({int(c)})" if c else "")(share, counts)
    sns.heatmap(
        100 * share, annot=labels, fmt="", cmap="Blues", vmin=0, vmax=100, square=True, ax=ax,
        xticklabels=classes, yticklabels=classes, annot_kws={"fontsize": "x-small"},
        cbar_kws={"label": "% of true class (mean over seeds)", "shrink": 0.8}, linewidths=0.5, linecolor="white",
    )
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(f"Confusion matrix, test split ({n_seeds} seed{'s' if n_seeds > 1 else ''}; counts summed)")
    ax.tick_params(axis="x", rotation=45)
    ax.tick_params(axis="y", rotation=0)
    return fig


def per_class_table(metrics: list[dict], seeds: list[int]) -> pd.DataFrame:
    """One row per (seed, class): precision, recall, f1, specificity, support."""
    rows = []
    for seed, m in zip(seeds, metrics):
        for name in m["classes"]:
            rows.append({"seed": seed, "class": name, **m["per_class"][name]})
    return pd.DataFrame(rows)


def plot_per_class_f1(table: pd.DataFrame, classes: list[str], ci: float = 0.95) -> plt.Figure:
    """Per-class F1 on the test split: each seed a dot, the mean with its t interval over seeds."""
    fig, ax = plt.subplots(figsize=(WIDTH, 3.4))
    palette = seed_palette(sorted(table["seed"].unique()))
    x = np.arange(len(classes))
    for i, seed in enumerate(sorted(palette)):
        part = table[table["seed"] == seed].set_index("class").reindex(classes)
        ax.scatter(x + (i - (len(palette) - 1) / 2) * 0.08, part["f1"], s=14, color=palette[seed],
                   label=f"seed {seed}", zorder=3)
    summary = aggregate_seeds(table[["seed", "class", "f1"]].rename(columns={"f1": "value"}), ci)
    summary = summary.set_index("class").reindex(classes)
    mean = summary["mean"].to_numpy()
    low, high = (np.clip(summary[c].to_numpy(), 0.0, 1.0) for c in ("ci_low", "ci_high"))  # F1 lives in [0, 1]
    ax.errorbar(x, mean, yerr=[mean - low, high - mean], fmt="_", color="black", markersize=16, capsize=3,
                label=f"mean, {100 * ci:.0f}% CI", zorder=4)
    ax.set_xticks(x, classes)
    ax.set_xlabel("class")
    ax.set_ylabel("F1 score (test split)")
    low = np.nanmin(np.concatenate([table["f1"].to_numpy(), low]))
    ax.set_ylim(max(0.0, low - 0.05), 1.005)
    ax.set_title("Per-class F1 across seeds")
    legend_outside(ax)
    return fig


def metrics_summary(metrics: list[dict], seeds: list[int], ci: float = 0.95) -> pd.DataFrame:
    """Rows: accuracy, macro F1, micro F1 and per-class F1; columns: one per seed, mean, CI bounds."""
    rows = {"accuracy": [m["accuracy"] for m in metrics],
            "macro F1": [m["macro_f1"] for m in metrics],
            "micro F1": [m["micro_f1"] for m in metrics]}
    for name in metrics[0]["classes"]:
        rows[f"F1 {name}"] = [m["per_class"][name]["f1"] for m in metrics]
    table = pd.DataFrame(rows, index=[f"seed {s}" for s in seeds]).T
    tidy = pd.DataFrame([(metric, seed, value) for metric, values in rows.items() for seed, value in zip(seeds, values)],
                        columns=["metric", "seed", "value"])
    summary = aggregate_seeds(tidy, ci).set_index("metric")
    for column in ("mean", "ci_low", "ci_high"):
        table[column] = summary[column]
    table.index.name = "metric"
    return table.reset_index()


def metrics_html(table: pd.DataFrame, ci: float = 0.95) -> str:
    """A small standalone HTML page with the metrics table (shown inline by the Snakemake report)."""
    return table_html(table, f"Test-split metrics per seed (mean and {100 * ci:.0f}% t interval over seeds)")


def table_html(table: pd.DataFrame, title: str) -> str:
    """A small standalone HTML page with `table` under `title` (the report shows it inline)."""
    body = table.to_html(index=False, float_format=lambda v: f"{v:.4f}", border=0, classes="metrics")
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>" + html.escape(title) + "</title><style>"
        "body{font-family:sans-serif;margin:1em}table{border-collapse:collapse}"
        "th,td{padding:4px 10px;text-align:right}th{border-bottom:2px solid #333}"
        "tr:nth-child(even){background:#f2f2f2}td:first-child,th:first-child{text-align:left}"
        f"</style></head><body><h3>{html.escape(title)}</h3>{body}</body></html>\n"
    )


def read_metrics(paths) -> list[dict]:
    return [read_json(path, METRIC_KEYS) for path in paths]


def validation_table(paths, seeds) -> pd.DataFrame:
    """seed, epoch, step, val_loss, ... from each seed's training_info.json ("epochs" list)."""
    rows = []
    for path, seed in zip(paths, seeds):
        for epoch in read_json(path, ["epochs"])["epochs"]:
            if "step" not in epoch or "val_loss" not in epoch:
                raise ValueError(f"{path}: every entry of 'epochs' needs 'step' and 'val_loss', got {sorted(epoch)}")
            rows.append({"seed": seed, **epoch})
    return pd.DataFrame(rows)


def make_training_curves(input, params) -> plt.Figure:
    log = per_seed(input.logs, params.seeds, read_csv, columns=LOG_COLUMNS)
    return plot_training_curves(log, validation_table(input.infos, params.seeds))


def make_confusion_matrix(input, params) -> plt.Figure:
    metrics = read_metrics(input.metrics)
    share, counts = confusion_mean(metrics)
    return plot_confusion(share, counts, metrics[0]["classes"], len(metrics))


def make_per_class_f1(input, params) -> plt.Figure:
    metrics = read_metrics(input.metrics)
    return plot_per_class_f1(per_class_table(metrics, list(params.seeds)), metrics[0]["classes"], params.ci)


def write_metrics_table(metrics_paths: list[str], tsv: str, html: str, seeds: list[int], ci: float) -> None:
    """The report's metrics table: TSV and a standalone HTML page, from every seed's metrics.json."""
    metrics = read_metrics(metrics_paths)
    table = metrics_summary(metrics, list(seeds), ci)
    write_text(tsv, table.to_csv(sep="\t", index=False, float_format="%.6g"))
    write_text(html, metrics_html(table, ci))
