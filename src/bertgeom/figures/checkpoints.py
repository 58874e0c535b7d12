"""Figures across checkpoints: how pre-training and fine-tuning change the geometry.

Each reads one across-seed table per analysed checkpoint (results/stats/all_seeds/{checkpoint}/,
heads matched across seeds within a checkpoint; the reference seed's heads are the same physical
heads in every checkpoint, since each stage starts from the one before), given in the order of
params.checkpoints (init, mlm, finetuned), and the masked-LM log of every seed
(results/pretrained/seed{seed}/pretrain_log.csv).
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd

from bertgeom.figures.attention import AGREEMENT_COLUMNS, GATE_COLOURS, PATTERN_COLUMNS, draw_gate_cells, gate_legend
from bertgeom.figures.cone import _all_seeds_cone, _band, _stream_axes, stream_positions
from bertgeom.figures.directionality import COLUMNS as DIRECTIONALITY_COLUMNS
from bertgeom.figures.directionality import heads_of
from bertgeom.figures.tables import per_seed, read_csv, read_parquet, select
from bertgeom.figures.theme import WIDTH, legend_outside, seed_palette

CHECKPOINT_COLOURS = {"init": "#888888", "mlm": "#117733", "finetuned": "#AA3377"}
CHECKPOINT_NAMES = {"init": "init (start of training)", "mlm": "mlm (pre-trained)", "finetuned": "fine-tuned"}
MLM_LOG_COLUMNS = ("step", "loss", "accuracy")


def by_checkpoint(paths, checkpoints, reader) -> dict[str, pd.DataFrame]:
    """{checkpoint: reader(path)} of one table per checkpoint, paths in the order of `checkpoints`."""
    paths, checkpoints = list(paths), list(checkpoints)
    if len(paths) != len(checkpoints):
        raise ValueError(f"{len(paths)} files for {len(checkpoints)} checkpoints {checkpoints}")
    return {checkpoint: reader(path) for path, checkpoint in zip(paths, checkpoints)}


def plot_gate_grid_checkpoints(agreements: dict[str, pd.DataFrame]) -> plt.Figure:
    """One gate grid per checkpoint side by side (attention.draw_gate_cells): colour = modal label
    over seeds of the heads matched to the reference seed's, number = share of seeds agreeing."""
    first = next(iter(agreements.values()))
    heads = first[first["measure"] == "modal_share"].dropna(subset=["head"])
    n_layers, n_heads = heads["layer"].nunique(), int(heads["head"].max()) + 1
    panel = 0.42 * n_heads + 1.0
    fig, axes = plt.subplots(1, len(agreements), squeeze=False, sharey=True,
                             figsize=(min(WIDTH * 2, panel * len(agreements) + 2.4), max(2.6, 0.36 * n_layers + 1.7)))
    present, n_seeds = set(), 1
    for ax, (checkpoint, agreement) in zip(axes.flat, agreements.items()):
        cells = draw_gate_cells(ax, agreement)
        present |= set(cells["present"])
        n_seeds = max(n_seeds, cells["n_seeds"])
        ax.set_title(CHECKPOINT_NAMES.get(checkpoint, checkpoint))
        ax.set_xlabel("head (matched)")
    axes.flat[0].set_ylabel("layer")
    gate_legend(fig, [g for g in GATE_COLOURS if g in present])
    fig.suptitle(f"Attention gates per head at each checkpoint (modal label of {n_seeds} seed"
                 f"{'s' if n_seeds > 1 else ''}; cell: share of seeds agreeing)", fontweight="bold", fontsize="medium")
    return fig


def plot_cone_checkpoints(cones: dict[str, pd.DataFrame], ci: float = 0.95) -> plt.Figure:
    """Cone index (ours, normalised, mean over sequences of each sequence's index) along the
    information stream, one line per checkpoint with its interval over seeds as a band."""
    fig, ax = plt.subplots(figsize=(WIDTH, 3.4))
    n_seeds, per_layer, layers = 1, 1, []
    for checkpoint, cone in cones.items():
        part = stream_positions(cone[cone["head"] == -1])
        ours = (part["variant"] == "ours") & (part["measure"] == "cone_normalised") & (part["scope"] == "sequence")
        part = part[ours]
        _band(ax, part, CHECKPOINT_COLOURS.get(checkpoint, "0.3"), CHECKPOINT_NAMES.get(checkpoint, checkpoint))
        n_seeds = max(n_seeds, int(part["n_seeds"].max()))
        per_layer = part["stage"].nunique()
        layers = sorted(part["layer"].unique())
    _stream_axes(ax, layers, per_layer)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("layer (stages input ... output within each)")
    ax.set_ylabel("cone index c = I / n\n(ours, PAD excluded)")
    ax.set_title(f"Cone index along the stream per checkpoint ({n_seeds} seed{'s' if n_seeds > 1 else ''}, "
                 f"{100 * ci:.0f}% CI bands)")
    legend_outside(ax, title="checkpoint")
    return fig


def layer_lines(ax: plt.Axes, frames: dict[str, pd.DataFrame], value: str = "mean") -> None:
    """Per checkpoint: a dot per head (beside its layer, offset per checkpoint) and the mean of a
    layer's heads (line); frames: {checkpoint: rows layer, head, `value`}."""
    width = 0.6 / max(len(frames), 1)
    for i, (checkpoint, frame) in enumerate(frames.items()):
        colour = CHECKPOINT_COLOURS.get(checkpoint, "0.3")
        offset = (i - (len(frames) - 1) / 2) * width
        ax.scatter(frame["layer"] + offset, frame[value], s=9, color=colour, alpha=0.6, linewidth=0)
        means = frame.groupby("layer")[value].mean()
        ax.plot(means.index + offset, means.to_numpy(), color=colour, marker="o", markersize=3,
                label=CHECKPOINT_NAMES.get(checkpoint, checkpoint))
    layers = sorted({int(layer) for frame in frames.values() for layer in frame["layer"]})
    ax.set_xticks(layers)
    ax.set_xlabel("layer")


def plot_attention_checkpoints(patterns: dict[str, pd.DataFrame]) -> plt.Figure:
    """Normalised row entropy H / log n (left) and K90, the keys holding 90% of a row's attention
    (right), per layer and checkpoint: dots = heads (mean over seeds of matched heads, over every
    dumped sequence), lines = mean over a layer's heads."""
    fig, (ax_h, ax_k) = plt.subplots(1, 2, figsize=(WIDTH, 3.2))
    for ax, measure, label in ((ax_h, "entropy", "row entropy / log n"), (ax_k, "k90", "K90 (keys)")):
        layer_lines(ax, {c: frame[frame["measure"] == measure] for c, frame in patterns.items()})
        ax.set_ylabel(label)
    ax_h.set_ylim(0, 1.02)
    ax_k.set_ylim(bottom=0)
    n_seeds = int(max(frame["n_seeds"].max() for frame in patterns.values()))
    legend_outside(ax_k, title="checkpoint")
    fig.suptitle(f"Attention rows per layer and checkpoint ({n_seeds} seed{'s' if n_seeds > 1 else ''}, heads "
                 "matched; dot: one head)", fontweight="bold", fontsize="medium")
    return fig


def plot_directionality_checkpoints(tables: dict[str, pd.DataFrame]) -> plt.Figure:
    """Directionality index of the weights' bilinear form M = W_Q W_K^T / sqrt(d) (0 symmetric,
    1 skew) per layer and checkpoint: dots = heads (mean over seeds), lines = mean over a layer's heads."""
    fig, ax = plt.subplots(figsize=(WIDTH, 3.2))
    layer_lines(ax, {c: heads_of(table, "directionality_index") for c, table in tables.items()})
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("directionality index ||N||² / ||M||²")
    n_seeds = int(max(table["n_seeds"].max() for table in tables.values()))
    ax.set_title(f"Directionality of subspace selection per checkpoint ({n_seeds} seed{'s' if n_seeds > 1 else ''})")
    legend_outside(ax, title="checkpoint")
    return fig


def plot_mlm_curves(log: pd.DataFrame, smooth: int = 20) -> plt.Figure:
    """Masked-LM loss (top; raw faint, rolling mean over `smooth` steps bold) and masked-token
    accuracy (bottom, rolling mean) per optimizer step, one colour per seed.

    log: columns seed, step, loss, accuracy (pretrain_log.csv of every seed).
    """
    seeds = sorted(log["seed"].unique())
    palette = seed_palette(seeds)
    fig, (ax_loss, ax_acc) = plt.subplots(2, 1, figsize=(WIDTH, 4.4), sharex=True)
    for seed in seeds:
        part = log[log["seed"] == seed].sort_values("step")
        ax_loss.plot(part["step"], part["loss"], color=palette[seed], alpha=0.25, linewidth=0.8)
        ax_loss.plot(part["step"], part["loss"].rolling(smooth, min_periods=1).mean(), color=palette[seed],
                     linewidth=1.6, label=f"seed {seed}")
        ax_acc.plot(part["step"], part["accuracy"].rolling(smooth, min_periods=1).mean(), color=palette[seed],
                    linewidth=1.4)
    ax_loss.set_ylabel("masked-LM loss (nats)")
    ax_loss.set_title(f"Masked-LM pre-training ({len(seeds)} seed{'s' if len(seeds) > 1 else ''}; bold: rolling mean "
                      f"of {smooth} steps)")
    legend_outside(ax_loss)
    ax_acc.set_ylim(0, 1)
    ax_acc.set_ylabel("masked-token accuracy")
    ax_acc.set_xlabel("optimizer step")
    return fig


def make_mlm_curves(input, params) -> plt.Figure:
    log = per_seed(input.logs, params.seeds, read_csv, columns=MLM_LOG_COLUMNS)
    return plot_mlm_curves(log, smooth=max(1, min(20, int(log["step"].max()) // 10)))


def make_gate_grid_checkpoints(input, params) -> plt.Figure:
    return plot_gate_grid_checkpoints(
        by_checkpoint(input.agreement, params.checkpoints, lambda path: read_parquet(path, AGREEMENT_COLUMNS))
    )


def make_cone_checkpoints(input, params) -> plt.Figure:
    return plot_cone_checkpoints(by_checkpoint(input.cone, params.checkpoints, _all_seeds_cone), params.ci)


def make_attention_checkpoints(input, params) -> plt.Figure:
    def read(path):
        frame = read_parquet(path, PATTERN_COLUMNS, filters=[("measure", "in", ["entropy", "k90"])])
        return select(frame, path, source="all")

    return plot_attention_checkpoints(by_checkpoint(input.patterns, params.checkpoints, read))


def make_directionality_checkpoints(input, params) -> plt.Figure:
    return plot_directionality_checkpoints(
        by_checkpoint(input.directionality, params.checkpoints, lambda p: read_parquet(p, DIRECTIONALITY_COLUMNS))
    )
