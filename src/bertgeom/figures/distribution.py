"""Distribution figures: PCA Pareto charts, 2-D PCA and t-SNE of [CLS], linear probe and silhouette.

Tables (docs/methods.md, "Geometry statistics"): results/stats/all_seeds/{checkpoint}/distribution.parquet (identifiers
split, layer, stage, pooling, class, measure, index; mean, ci_low, ci_high, n_seeds) and
results/stats/seed{seed}/{checkpoint}/embedding_2d.parquet (seq_id, label, class, correct, layer, stage, pooling,
method, x, y). Positions along the stream: the embeddings (input of layer 0), then the output of
every layer.
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from bertgeom.figures.tables import pick_split, read_parquet, select
from bertgeom.figures.theme import WIDTH, class_palette, legend_outside, seed_palette

DIST_COLUMNS = ("split", "layer", "stage", "pooling", "class", "measure", "index", "mean", "ci_low", "ci_high", "n_seeds")
EMBEDDING_COLUMNS = ("split", "layer", "stage", "pooling", "method", "seq_id", "label", "correct", "x", "y")
POOLING_NAMES = {"cls": "[CLS]", "mean": "mean over tokens"}


def stream_points(frame: pd.DataFrame) -> pd.DataFrame:
    """Keep the embeddings (layer 0 `input`) and every layer's `output`; add `point` 0..L and `name`."""
    embeddings = frame[(frame["layer"] == 0) & (frame["stage"] == "input")].assign(point=0, name="embeddings")
    outputs = frame[frame["stage"] == "output"]
    outputs = outputs.assign(point=outputs["layer"].astype(int) + 1, name="layer " + outputs["layer"].astype(str))
    return pd.concat([embeddings, outputs], ignore_index=True).sort_values("point", kind="stable")


def _panel_grid(n: int, panel: float = 1.9, max_cols: int = 5):
    cols = min(n, max_cols)
    rows = math.ceil(n / cols)
    width = min(WIDTH * 1.35, max(WIDTH, panel * cols + 1.6))
    fig, axes = plt.subplots(rows, cols, figsize=(width, panel * rows + 0.8), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, axes.flat[:n]


def plot_pca_pareto(dist: pd.DataFrame, pooling: str = "cls") -> plt.Figure:
    """Pareto chart per stream point: explained-variance share of each principal component (bars, mean
    over seeds with interval) and the cumulative share (line).

    dist: across-seed rows of measure `pca_explained_variance_ratio`, class `all`, one split;
    `index` = component (0-based).
    """
    dist = stream_points(dist[(dist["pooling"] == pooling) & (dist["measure"] == "pca_explained_variance_ratio")])
    points = dist.drop_duplicates("point")[["point", "name"]].to_numpy()
    fig, axes = _panel_grid(len(points))
    for ax, (point, name) in zip(axes, points):
        part = dist[dist["point"] == point].sort_values("index")
        k = part["index"].to_numpy() + 1
        ax.bar(k, part["mean"], color="#0072B2", width=0.8, label="per component")
        ax.errorbar(k, part["mean"], yerr=[part["mean"] - part["ci_low"], part["ci_high"] - part["mean"]],
                    fmt="none", ecolor="0.2", elinewidth=0.8, capsize=1.5)
        ax.plot(k, np.cumsum(part["mean"]), color="#D55E00", marker="o", markersize=2.5, linewidth=1.2,
                label="cumulative")
        ax.set_ylim(0, 1.02)
        ax.set_title(name)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=5, integer=True))
    fig.supxlabel("principal component", fontsize="medium")
    fig.supylabel("share of variance", fontsize="medium")
    n_seeds = int(dist["n_seeds"].max())
    fig.suptitle(f"PCA of the {POOLING_NAMES[pooling]} vectors along the stream: explained variance "
                 f"(mean of {n_seeds} seeds, CI bars)", fontweight="bold", fontsize="medium")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right center")
    return fig


def plot_embedding(points: pd.DataFrame, classes: list[str], method: str, seed: int, pooling: str = "cls") -> plt.Figure:
    """2-D coordinates (PCA or t-SNE) of every sequence at each stream point, coloured by class;
    misclassified sequences drawn as black-edged crosses.

    points: embedding_2d rows of one seed, one split, one method.
    """
    points = stream_points(points[points["pooling"] == pooling])
    palette = class_palette(classes)
    names = points.drop_duplicates("point")[["point", "name"]].to_numpy()
    fig, axes = _panel_grid(len(names), panel=2.0)
    axis_name = {"pca": "PC", "tsne": "t-SNE"}[method]
    for ax, (point, name) in zip(axes, names):
        part = points[points["point"] == point]
        if part[["x", "y"]].isna().all().all():  # a degenerate cloud: the map is undefined, a gap
            ax.text(0.5, 0.5, "undefined\n(all points equal)", ha="center", va="center", color="0.45",
                    fontsize="small", transform=ax.transAxes)
        for label, colour in enumerate(palette.values()):
            cls = part[(part["label"] == label) & part["correct"]]
            ax.scatter(cls["x"], cls["y"], s=6, color=colour, linewidths=0, alpha=0.85, label=classes[label])
        wrong = part[~part["correct"].astype(bool)]
        if len(wrong):
            ax.scatter(wrong["x"], wrong["y"], s=18, marker="X", c=[palette[classes[i]] for i in wrong["label"]],
                       edgecolors="black", linewidths=0.6, label="misclassified")
        ax.set_title(name)
        ax.set_xticks([])
        ax.set_yticks([])
    handles, labels = [], []
    for ax in axes:  # every class once, even if a panel lacks one
        for handle, label in zip(*ax.get_legend_handles_labels()):
            if label not in labels:
                handles.append(handle)
                labels.append(label)
    order = [labels.index(c) for c in classes if c in labels]
    handles, labels = [handles[i] for i in order], [labels[i] for i in order]
    if len(points) and not points["correct"].astype(bool).all():
        handles.append(Line2D([], [], marker="X", linestyle="", markerfacecolor="white", markeredgecolor="black"))
        labels.append("misclassified")
    fig.legend(handles, labels, loc="outside right center", title="class", markerscale=2)
    fig.supxlabel(f"{axis_name} 1", fontsize="medium")
    fig.supylabel(f"{axis_name} 2", fontsize="medium")
    title = {"pca": "2-D PCA", "tsne": "t-SNE"}[method]
    fig.suptitle(f"{title} of the {POOLING_NAMES[pooling]} vectors of {points['seq_id'].nunique()} "
                 f"sequences along the stream (seed {seed})", fontweight="bold", fontsize="medium")
    return fig


def plot_probe_silhouette(dist: pd.DataFrame, ci: float = 0.95) -> plt.Figure:
    """Linear-probe accuracy (cross-validated) and silhouette of the classes at each stream point,
    for [CLS] and mean pooling: mean over seeds with interval bands; the probe's chance level dashed.
    """
    dist = stream_points(dist[dist["class"] == "all"])
    fig, (ax_probe, ax_sil) = plt.subplots(2, 1, figsize=(WIDTH, 4.8), sharex=True)
    colours = seed_palette(list(POOLING_NAMES))
    for pooling, name in POOLING_NAMES.items():
        for ax, measure in ((ax_probe, "probe_accuracy"), (ax_sil, "silhouette")):
            part = dist[(dist["pooling"] == pooling) & (dist["measure"] == measure)]
            if len(part):
                ax.fill_between(part["point"], part["ci_low"], part["ci_high"], color=colours[pooling], alpha=0.25,
                                linewidth=0)
                ax.plot(part["point"], part["mean"], color=colours[pooling], marker="o", markersize=3, label=name)
    chance = dist[dist["measure"] == "probe_chance"].groupby("point")["mean"].mean()
    if len(chance):
        ax_probe.plot(chance.index, chance.to_numpy(), color="0.4", linestyle="--", linewidth=1, label="chance")
    ax_probe.set_ylim(0, 1.02)
    ax_probe.set_ylabel("linear-probe accuracy\n(cross-validated)")
    ax_sil.axhline(0, color="0.6", linewidth=0.8)
    sil = dist.loc[dist["measure"] == "silhouette", ["ci_low", "ci_high"]].to_numpy()
    if sil.size:  # the silhouette lives in [-1, 1]; zoom on the data but keep 0 in view
        ax_sil.set_ylim(max(-1.0, min(0.0, np.nanmin(sil)) - 0.05), min(1.0, max(0.0, np.nanmax(sil)) + 0.05))
    ax_sil.set_ylabel("silhouette of classes\n(euclidean, -1..1)")
    points = sorted(dist["point"].unique())
    ax_sil.set_xticks(points, ["emb" if p == 0 else str(p - 1) for p in points])
    ax_sil.set_xlabel("stream point (emb = embeddings; n = output of layer n)")
    n_seeds = int(dist["n_seeds"].max())
    ax_probe.set_title(f"Class separation along the stream ({n_seeds} seeds, {100 * ci:.0f}% CI bands)")
    legend_outside(ax_probe, title="vectors")
    return fig


def _all_seeds_distribution(path) -> pd.DataFrame:
    frame = read_parquet(path, DIST_COLUMNS)
    return select(frame, path, split=pick_split(frame, path))


def make_pca_pareto(input, params) -> plt.Figure:
    frame = _all_seeds_distribution(input.distribution)
    return plot_pca_pareto(select(frame, input.distribution, **{"class": "all"}))


def _embedding(input, params, method) -> plt.Figure:
    frame = read_parquet(input.embedding, EMBEDDING_COLUMNS)
    frame = select(frame, input.embedding, split=pick_split(frame, input.embedding), method=method)
    return plot_embedding(frame, list(params.classes), method, params.seed)


def make_embedding_pca(input, params) -> plt.Figure:
    return _embedding(input, params, "pca")


def make_embedding_tsne(input, params) -> plt.Figure:
    return _embedding(input, params, "tsne")


def make_probe_silhouette(input, params) -> plt.Figure:
    return plot_probe_silhouette(_all_seeds_distribution(input.distribution), params.ci)
