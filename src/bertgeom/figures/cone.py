"""Cone-index figures: along the information stream (layer x stage) and per attention head.

Both read the across-seed table results/stats/all_seeds/{checkpoint}/cone_index.parquet (docs/methods.md, "Geometry
statistics": identifiers split, scope, class, layer, stage, head, variant, measure; mean, ci_low,
ci_high, n_seeds), rows of scope `sequence` (the mean over sequences of each sequence's index) and
`pooled` (all tokens of the split as one cloud), class `all`.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from bertgeom.figures.tables import pick_split, read_parquet, select
from bertgeom.figures.theme import MARKERS, SEQUENTIAL, WIDTH, legend_outside

# Order of the hook points inside one layer (docs/outputs.md, activations).
STAGES = ["input", "q", "k", "v", "context", "attn_output", "attn_ln", "ffn", "output"]
CONE_COLUMNS = ("split", "scope", "class", "layer", "stage", "head", "variant", "measure", "mean", "ci_low", "ci_high", "n_seeds")


def stream_positions(frame: pd.DataFrame) -> pd.DataFrame:
    """Add `x`, the position along the information stream: layer * stages + the stage's place in a layer."""
    stages = [s for s in STAGES if s in set(frame["stage"])]
    order = {s: i for i, s in enumerate(stages)}
    frame = frame[frame["stage"].isin(stages)].copy()
    frame["x"] = frame["layer"].astype(int) * len(stages) + frame["stage"].map(order)
    return frame.sort_values("x")


def _stream_axes(ax: plt.Axes, layers: list[int], per_layer: int) -> None:
    for layer in layers[1:]:
        ax.axvline(layer * per_layer - 0.5, color="0.75", linewidth=0.8, zorder=0)
    ax.set_xticks([layer * per_layer + (per_layer - 1) / 2 for layer in layers], [str(layer) for layer in layers])
    ax.grid(axis="x", visible=False)


def _band(ax, part: pd.DataFrame, colour, label, linestyle="-") -> None:
    ax.fill_between(part["x"], part["ci_low"], part["ci_high"], color=colour, alpha=0.2, linewidth=0)
    ax.plot(part["x"], part["mean"], color=colour, linestyle=linestyle, linewidth=1.2, label=label)


def plot_cone_stream(cone: pd.DataFrame, ci: float = 0.95) -> plt.Figure:
    """Cone index at every stage of every layer, mean over seeds with its interval as a band.

    cone: across-seed rows of class `all`, whole-layer stages (head -1), one split. Top: ours,
    normalised (c = I/n, PAD excluded), per sequence and pooled over the split; bottom: the
    reference-compatible variant (all max_length rows, PAD included, unnormalised), per sequence.
    """
    cone = stream_positions(cone[cone["head"] == -1])
    stages = [s for s in STAGES if s in set(cone["stage"])]
    layers = sorted(cone["layer"].unique())
    colours = dict(zip(stages, sns.color_palette("colorblind", len(stages)).as_hex()))
    markers = dict(zip(stages, MARKERS))
    n_seeds = int(cone["n_seeds"].max())
    fig, (ax_ours, ax_ref) = plt.subplots(2, 1, figsize=(WIDTH, 5.2), sharex=True)
    ours = cone[(cone["variant"] == "ours") & (cone["measure"] == "cone_normalised")]
    for scope, colour, style, label in (("sequence", "0.3", "-", "per sequence (mean)"),
                                        ("pooled", "#D55E00", "--", "all tokens of the split pooled")):
        part = ours[ours["scope"] == scope]
        if len(part):
            _band(ax_ours, part, colour, label, style)
    per_seq = ours[ours["scope"] == "sequence"]
    for stage in stages:
        dots = per_seq[per_seq["stage"] == stage]
        ax_ours.scatter(dots["x"], dots["mean"], color=colours[stage], marker=markers[stage], s=18, zorder=3,
                        label=stage, edgecolor="0.2", linewidth=0.3)
    ax_ours.set_ylim(0, 1.02)
    ax_ours.set_ylabel("cone index c = I / n\n(ours, PAD excluded)")
    ax_ours.set_title(f"Cone index along the information stream ({n_seeds} seeds, {100 * ci:.0f}% CI bands)")
    legend_outside(ax_ours, title="line / stage")
    ref = cone[(cone["variant"] == "reference") & (cone["measure"] == "cone_index") & (cone["scope"] == "sequence")]
    _band(ax_ref, ref, "0.3", "per sequence (mean)")
    for stage in stages:
        dots = ref[ref["stage"] == stage]
        ax_ref.scatter(dots["x"], dots["mean"], color=colours[stage], marker=markers[stage], s=18, zorder=3,
                       edgecolor="0.2", linewidth=0.3)
    ax_ref.set_ylim(bottom=0)
    ax_ref.set_ylabel("cone index I\n(reference: all rows, PAD incl.)")
    ax_ref.set_xlabel("layer (stages in stream order within each layer)")
    for ax in (ax_ours, ax_ref):
        _stream_axes(ax, layers, len(stages))
    return fig


def _head_grid(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.pivot_table(index="layer", columns="head", values="mean", aggfunc="mean").sort_index()


def plot_cone_heads(cone: pd.DataFrame) -> plt.Figure:
    """Cone index of each head's attention rows (rows as vectors over the keys), layer x head heatmaps.

    cone: across-seed rows of stage `attention`, scope `sequence`, class `all`, one split.
    Left: ours, c = I/n over the real query rows; right: reference-compatible I over all rows.
    """
    ours = _head_grid(cone[(cone["variant"] == "ours") & (cone["measure"] == "cone_normalised")])
    ref = _head_grid(cone[(cone["variant"] == "reference") & (cone["measure"] == "cone_index")])
    n_layers, n_heads = ours.shape
    annotate = n_heads <= 12
    size = max(2.6, 0.32 * n_heads + 1.4)
    fig, axes = plt.subplots(1, 2, figsize=(max(WIDTH, 2 * size + 2), max(2.8, 0.3 * n_layers + 1.6)))
    for ax, grid, fmt, label, cmap, limits in (
        (axes[0], ours, ".2f", "c = I / n (ours)", SEQUENTIAL, (0, 1)),
        (axes[1], ref, ".0f", "I (reference, PAD incl.)", SEQUENTIAL, (0, None)),
    ):
        sns.heatmap(grid, ax=ax, annot=annotate, fmt=fmt, cmap=cmap, vmin=limits[0], vmax=limits[1],
                    annot_kws={"fontsize": 6}, cbar_kws={"label": label, "shrink": 0.8}, linewidths=0.3,
                    linecolor="white")
        ax.set_xlabel("head")
        ax.set_ylabel("layer")
        ax.tick_params(axis="y", rotation=0)
    axes[0].set_title("ours (real rows)")
    axes[1].set_title("reference-compatible (all rows)")
    n_seeds = int(cone["n_seeds"].max())
    fig.suptitle(f"Cone index of the self-attention matrices per head (mean over {n_seeds} seeds, heads matched)",
                 fontweight="bold", fontsize="medium")
    return fig


def _all_seeds_cone(path) -> pd.DataFrame:
    frame = read_parquet(path, CONE_COLUMNS)
    return select(frame, path, split=pick_split(frame, path), **{"class": "all"})


def make_cone_stream(input, params) -> plt.Figure:
    return plot_cone_stream(_all_seeds_cone(input.cone), params.ci)


def make_cone_heads(input, params) -> plt.Figure:
    frame = _all_seeds_cone(input.cone)
    return plot_cone_heads(select(frame, input.cone, stage="attention", scope="sequence"))
