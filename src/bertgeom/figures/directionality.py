"""Directionality figures: the index per layer x head, eigenvalue signs and principal angles, and
ours against the original code's column-sliced version.

Table (docs/methods.md, "Attention patterns and directionality"): results/stats/all_seeds/{checkpoint}/directionality.parquet
(rule aggregate_seeds over the per-seed tables), rows layer, head, variant (ours / original_code),
measure, with mean, ci_low, ci_high, n_seeds over seeds. Measures used here:
directionality_index (||N||_F^2 / ||M||_F^2 of M = W_Q^h W_K^h^T / sqrt(d), weights), qk_asymmetry
(the same index of the pre-softmax score matrices Q K^T on data), eig_pos_mass (share of the
absolute eigenvalue mass of S = (M + M^T)/2 that is positive), angle_min / angle_median / angle_max
(principal angles between the query and key subspaces, degrees).
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from bertgeom.figures.tables import read_parquet
from bertgeom.figures.theme import SEQUENTIAL, WIDTH, head_dots, legend_outside

COLUMNS = ("layer", "head", "variant", "measure", "mean", "ci_low", "ci_high", "n_seeds")
OURS, ORIGINAL = "ours", "original_code"


def heads_of(table: pd.DataFrame, measure: str, variant: str = OURS) -> pd.DataFrame:
    """The across-seed rows of one measure and variant, by layer and head."""
    return table[(table["measure"] == measure) & (table["variant"] == variant)].sort_values(["layer", "head"])


def head_means(table: pd.DataFrame, measure: str, variant: str = OURS) -> pd.DataFrame:
    """[layer, head] grid of the mean over seeds of one measure."""
    return heads_of(table, measure, variant).pivot(index="layer", columns="head", values="mean").sort_index()


def layer_means(table: pd.DataFrame, measure: str, variant: str = OURS) -> pd.Series:
    """Per layer, the mean over its heads of their means over seeds."""
    return heads_of(table, measure, variant).groupby("layer")["mean"].mean()


def seeds_title(table: pd.DataFrame) -> str:
    n_seeds = int(table["n_seeds"].max())
    return f"{n_seeds} seeds, heads matched across seeds" if n_seeds > 1 else "1 seed"


def plot_directionality_index(table: pd.DataFrame) -> plt.Figure:
    """Layer x head heatmaps (mean over seeds) of the directionality index of the weights' bilinear
    form (left) and of the score matrices Q K^T on data (right); 0 = symmetric, 1 = skew."""
    panels = [("directionality_index", "weights: M = W_Q W_Kᵀ / √d"), ("qk_asymmetry", "data: scores Q Kᵀ on the subset")]
    panels = [(m, t) for m, t in panels if ((table["measure"] == m) & (table["variant"] == OURS)).any()]
    grids = [head_means(table, m) for m, _ in panels]
    n_layers, n_heads = grids[0].shape
    fig, axes = plt.subplots(1, len(panels), figsize=(max(WIDTH, len(panels) * (0.34 * n_heads + 1.6) + 1.2),
                                                      max(2.8, 0.3 * n_layers + 1.7)), squeeze=False)
    for ax, grid, (_, title) in zip(axes.flat, grids, panels):
        sns.heatmap(grid, ax=ax, vmin=0, vmax=1, cmap=SEQUENTIAL, annot=n_heads <= 12, fmt=".2f",
                    annot_kws={"fontsize": 5.5}, cbar=ax is axes.flat[-1], linewidths=0.3, linecolor="white",
                    cbar_kws={"label": "directionality index ||N||² / ||M||²", "shrink": 0.8})
        ax.set_title(title)
        ax.set_xlabel("head")
        ax.set_ylabel("layer")
        ax.tick_params(axis="y", rotation=0)
    fig.suptitle(f"Directionality of subspace selection per head (ours: row slices of head h; mean over "
                 f"{seeds_title(table)})", fontweight="bold", fontsize="medium")
    return fig


def plot_directionality_spectrum(table: pd.DataFrame, ci: float = 0.95) -> plt.Figure:
    """Left: share of the eigenvalue mass of S that is positive, per head (dots: mean over seeds,
    whiskers: interval at `ci`) and per layer (mean of its heads); right: principal angles between
    query and key subspaces per layer (min, median, max; mean of the heads' means over seeds)."""
    ours = table[table["variant"] == OURS]
    fig, (ax_eig, ax_ang) = plt.subplots(1, 2, figsize=(WIDTH * 1.2, 3.4))
    head_dots(ax_eig, heads_of(table, "eig_pos_mass"), "one head")
    summary = layer_means(table, "eig_pos_mass")
    ax_eig.plot(summary.index, summary.to_numpy(), color="#CC6677", marker="o", markersize=3, label="layer mean")
    ax_eig.axhline(0.5, color="0.5", linestyle="--", linewidth=0.8, label="balanced signs")
    ax_eig.set_ylim(0, 1)
    ax_eig.set_xlabel("layer")
    ax_eig.set_ylabel("positive share of |eigenvalues| of S")
    ax_eig.set_title("Eigenvalue signs of S = (M + Mᵀ)/2")
    ax_eig.legend(loc="lower left", fontsize="x-small")
    for measure, colour, label in (("angle_min", "#117733", "smallest"), ("angle_median", "#332288", "median"),
                                   ("angle_max", "#AA4499", "largest")):
        summary = layer_means(table, measure)
        ax_ang.plot(summary.index, summary.to_numpy(), color=colour, marker="o", markersize=3, label=label)
    ax_ang.set_ylim(0, 92)
    ax_ang.set_yticks([0, 15, 30, 45, 60, 75, 90])
    ax_ang.set_xlabel("layer")
    ax_ang.set_ylabel("principal angle (degrees)")
    ax_ang.set_title("Query vs key subspaces")
    legend_outside(ax_ang, title="angle (mean over heads)")
    for ax in (ax_eig, ax_ang):
        ax.set_xticks(sorted(ours["layer"].unique()))
    whiskers = f"; whiskers: {100 * ci:.0f}% CI over seeds" if int(table["n_seeds"].max()) > 1 else ""
    fig.suptitle(f"Spectrum of the query-key bilinear forms (mean over {seeds_title(table)}{whiskers})",
                 fontweight="bold", fontsize="medium")
    return fig


def plot_directionality_original(table: pd.DataFrame) -> plt.Figure:
    """Per head (mean over seeds), our value against the original code's column-sliced, bias-free
    one: directionality index and median principal angle; the diagonal is agreement."""
    measures = [("directionality_index", "index, 0..1", (0, 1)), ("angle_median", "degrees", (0, 90))]
    fig, axes = plt.subplots(1, 2, figsize=(WIDTH, 3.6))
    wide = table.pivot(index=["layer", "head", "measure"], columns="variant", values="mean").reset_index()
    layers = sorted(wide["layer"].unique())
    colours = dict(zip(layers, sns.color_palette(SEQUENTIAL, len(layers)).as_hex()))
    for ax, (measure, label, limits) in zip(axes, measures):
        part = wide[wide["measure"] == measure]
        ax.plot(limits, limits, color="0.5", linestyle="--", linewidth=0.8, label="equal")
        for layer in layers:
            dots = part[part["layer"] == layer]
            ax.scatter(dots[OURS], dots[ORIGINAL], s=12, color=colours[layer], label=f"layer {layer}",
                       edgecolor="0.2", linewidth=0.2)
        ax.set_xlim(limits)
        ax.set_ylim(limits)
        ax.set_aspect("equal")
        ax.set_xlabel(f"ours ({label})")
        ax.set_ylabel(f"original code ({label})")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right center", title="head of", fontsize="x-small")
    axes[0].set_title("Directionality index")
    axes[1].set_title("Median principal angle, Q vs K")
    fig.suptitle(f"Ours (row slices) vs the original code's column slices W[:, h·d:(h+1)·d]\n(per head, mean over "
                 f"{seeds_title(table)})", fontweight="bold", fontsize="medium")
    return fig


def _table(input, params) -> pd.DataFrame:
    return read_parquet(input.directionality, COLUMNS)


def make_directionality_index(input, params) -> plt.Figure:
    return plot_directionality_index(_table(input, params))


def make_directionality_spectrum(input, params) -> plt.Figure:
    return plot_directionality_spectrum(_table(input, params), params.ci)


def make_directionality_original(input, params) -> plt.Figure:
    return plot_directionality_original(_table(input, params))
