"""Attention-pattern figures: gate taxonomy grid, row labels per head, K90 violins, class-averaged
attention gallery, row entropy per layer, attention per spike domain.

Tables (docs/outputs.md; definitions docs/methods.md), per seed in results/stats/seed{seed}/{checkpoint}/:
gates.parquet (layer, head, gate, score_<gate>, ...), k90.parquet (layer, head, seq_id, position,
k90), domain_attention.parquet (layer, head, domain, measure, value); across seeds (rules
aggregate_seeds, gate_agreement, match_heads; heads matched across seeds) results/stats/all_seeds/
attention_patterns.parquet and row_gates.parquet (..., mean, ci_low, ci_high, n_seeds),
gate_agreement.parquet and head_matching.parquet (per-seed heads -> the reference seed's);
results/activations/seed{seed}/{checkpoint}/class_attention.parquet (docs/outputs.md) and
results/tokens/token_map.parquet (position -> spike amino acids and domains).
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import seaborn as sns
from matplotlib.colors import ListedColormap, LogNorm
from matplotlib.patches import Patch

from bertgeom.figures.tables import matched_heads, per_seed, read_parquet, select
from bertgeom.figures.theme import DIVERGING, WIDTH, category_palette, head_dots, legend_outside
from bertgeom.stats.attention import GATE_NAMES, GATES, LABELS, NONE
from bertgeom.stats.domains import partition
from bertgeom.stats.gates import ROW_LABELS

GATE_COLOURS = category_palette(list(LABELS), neutral=NONE)
AGREEMENT_COLUMNS = ("layer", "head", "gate", "measure", "value", "n_seeds")
GATES_COLUMNS = ("layer", "head", "gate", *(f"score_{g}" for g in GATES))
ROW_COLUMNS = ("layer", "head", "label", "measure", "mean", "n_seeds")
K90_COLUMNS = ("layer", "head", "seq_id", "position", "k90")
PATTERN_COLUMNS = ("layer", "head", "source", "measure", "mean", "ci_low", "ci_high", "n_seeds")
DOMAIN_COLUMNS = ("seed", "layer", "head", "domain", "measure", "value")
TOKEN_MAP_COLUMNS = ("position", "token_kind", "aa_start", "aa_end", "domains")
MATRIX_COLUMNS = ["label", "class", "layer", "head", "n_seqs", "length", "matrix"]
TICK_DOMAINS = ("NTD", "RBD", "FP", "HR1", "HR2")  # labelled on the gallery's top axis


def draw_gate_cells(ax: plt.Axes, agreement: pd.DataFrame) -> dict:
    """Layer x matched-head cells on `ax`: colour = the head's gate (modal label over seeds of the
    heads matched to it), number = share of seeds with that label (with more than one seed).

    agreement: gate_agreement rows (modal_share per matched head). Returns layers, n_heads, n_seeds
    and the labels present.
    """
    heads = agreement[agreement["measure"] == "modal_share"].dropna(subset=["head"])
    heads = heads.astype({"layer": int, "head": int})
    layers = sorted(heads["layer"].unique())
    n_heads = int(heads["head"].max()) + 1
    codes = {g: i for i, g in enumerate(GATE_COLOURS)}
    grid = np.full((len(layers), n_heads), np.nan)
    share = np.full_like(grid, np.nan)
    for row in heads.itertuples():
        grid[layers.index(row.layer), row.head] = codes[row.gate]
        share[layers.index(row.layer), row.head] = row.value
    ax.imshow(grid, cmap=ListedColormap(list(GATE_COLOURS.values())), vmin=-0.5, vmax=len(codes) - 0.5,
              aspect="auto", interpolation="nearest")
    n_seeds = int(heads["n_seeds"].max())
    if n_seeds > 1:
        for (i, j), value in np.ndenumerate(share):
            if np.isfinite(value):
                ax.text(j, i, f"{value:.0%}" if value < 1 else "all", ha="center", va="center", fontsize=6.5,
                        color="white" if grid[i, j] in (codes["directional"], codes["open"]) else "black")
    ax.set_xticks(range(n_heads))
    ax.set_yticks(range(len(layers)), layers)
    ax.set_xticks(np.arange(n_heads + 1) - 0.5, minor=True)
    ax.set_yticks(np.arange(len(layers) + 1) - 0.5, minor=True)
    ax.grid(which="minor", color="white", linewidth=1.2)
    ax.grid(which="major", visible=False)
    ax.tick_params(which="minor", length=0)
    present = [g for g in GATE_COLOURS if g in set(heads["gate"])]
    return {"layers": layers, "n_heads": n_heads, "n_seeds": n_seeds, "present": present}


def gate_legend(fig: plt.Figure, present: list[str]) -> None:
    fig.legend([Patch(color=GATE_COLOURS[g]) for g in present], [GATE_NAMES.get(g, g) for g in present],
               loc="outside right center", title="gate")


def plot_gate_grid(agreement: pd.DataFrame, reference_seed: int | None = None) -> plt.Figure:
    """Layer x matched-head grid of gates (draw_gate_cells); right: per layer, the agreement of
    labels between seeds after matching heads, and in brackets each seed's agreement with an
    untrained model after matching (what matching alone gives).

    agreement: gate_agreement rows (modal_share per matched head; matched/untrained_agreement per layer).
    """
    heads = agreement[agreement["measure"] == "modal_share"].dropna(subset=["head"])
    n_layers, n_heads = heads["layer"].nunique(), int(heads["head"].max()) + 1
    fig, ax = plt.subplots(figsize=(min(WIDTH * 1.4, max(WIDTH, 0.42 * n_heads + 5.4)),
                                    max(2.8, 0.36 * n_layers + 1.7)))
    cells = draw_gate_cells(ax, agreement)
    layers, n_seeds = cells["layers"], cells["n_seeds"]
    ax.set_xlabel("head" if reference_seed is None else f"head (matched to seed {reference_seed}'s)")
    ax.set_ylabel("layer")
    matched = agreement[agreement["measure"] == "matched_agreement"].set_index("layer")["value"]
    untrained = agreement[agreement["measure"] == "untrained_agreement"].set_index("layer")["value"]
    if n_seeds > 1 and len(matched):
        right = ax.secondary_yaxis("right")
        right.set_yticks(range(len(layers)), [f"{matched.get(layer, np.nan):.0%} ({untrained.get(layer, np.nan):.0%})"
                                              for layer in layers])  # fmt: skip
        right.set_ylabel("seeds agreeing, heads matched\n(each seed vs untrained model)", labelpad=8)
    gate_legend(fig, cells["present"])
    ax.set_title(f"Attention gates per head\n(modal label of {n_seeds} seeds, heads matched; "
                 f"cell: share of seeds agreeing)" if n_seeds > 1 else "Attention gates per head")
    return fig


def plot_row_gates(rows: pd.DataFrame) -> plt.Figure:
    """Per head (bars, grouped by layer), the share of its query rows with each row label, stacked:
    the row-defined gates (contextual, instance, closed), open, multiple, none.

    rows: all_seeds/row_gates rows of measure `share` (mean over seeds of matched heads).
    """
    shares = rows[rows["measure"] == "share"]
    wide = shares.pivot_table(index=["layer", "head"], columns="label", values="mean").reindex(columns=ROW_LABELS)
    wide = wide.fillna(0.0).sort_index()
    layers = sorted(wide.index.get_level_values("layer").unique())
    n_heads = int(wide.index.get_level_values("head").max()) + 1
    fig, axes = plt.subplots(1, len(layers), figsize=(min(WIDTH * 1.4, max(WIDTH, (0.22 * n_heads + 0.5) * len(layers) + 2)),
                                                      3.2), sharey=True, squeeze=False)  # fmt: skip
    for ax, layer in zip(axes.flat, layers):
        part = wide.loc[layer]
        bottom = np.zeros(len(part))
        for label in ROW_LABELS:
            ax.bar(part.index, part[label], bottom=bottom, color=GATE_COLOURS[label], width=0.8,
                   label=GATE_NAMES.get(label, label), linewidth=0)
            bottom += part[label].to_numpy()
        ax.set_title(f"layer {layer}")
        ax.set_xticks(range(0, n_heads, max(1, n_heads // 6)))
        ax.set_ylim(0, 1)
    handles, names = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles[::-1], names[::-1], loc="outside right center", title="query rows")
    fig.supxlabel("head (matched across seeds)", fontsize="medium")
    fig.supylabel("share of query rows", fontsize="medium")
    n_seeds = int(shares["n_seeds"].max())
    fig.suptitle(f"What each query row of a head does (mean over {n_seeds} seed{'s' if n_seeds > 1 else ''}, "
                 "heads matched)", fontweight="bold", fontsize="medium")
    return fig


def plot_k90_violins(k90: pd.DataFrame, seed: int, max_cols: int = 4) -> plt.Figure:
    """Per layer (panel) and head (x), the distribution over query rows of K90, the number of keys
    holding 90% of a row's attention; one seed's token-level subset."""
    layers = sorted(k90["layer"].unique())
    cols = min(max_cols, len(layers))
    rows = math.ceil(len(layers) / cols)
    n_heads = int(k90["head"].max()) + 1
    width = min(WIDTH * 1.4, max(WIDTH * 0.85, (0.3 * n_heads + 0.9) * cols + 0.6))
    fig, axes = plt.subplots(rows, cols, figsize=(width, 1.9 * rows + 0.6), squeeze=False, sharey=True)
    top = k90["k90"].max()
    for ax, layer in zip(axes.flat, layers):
        part = k90[k90["layer"] == layer]
        sns.violinplot(part, x="head", y="k90", ax=ax, cut=0, density_norm="width", inner="quart",
                       color="#88CCEE", linewidth=0.6, order=list(range(n_heads)))
        ax.set_title(f"layer {layer}")
        ax.set_xlabel("")
        ax.set_ylabel("")
        ax.set_ylim(0, top * 1.03)
        if n_heads > 8:
            ax.set_xticks(range(0, n_heads, 2))
    for ax in axes.flat[len(layers):]:
        ax.set_visible(False)
    fig.supxlabel("head", fontsize="medium")
    fig.supylabel("K90 (number of keys)", fontsize="medium")
    n_seqs = k90["seq_id"].nunique()
    fig.suptitle(f"K90: keys holding 90% of a query row's attention (seed {seed}, {n_seqs} sequences, "
                 f"every real query row)", fontweight="bold", fontsize="medium")
    return fig


def pick_gallery_heads(gates: pd.DataFrame) -> pd.DataFrame:
    """For each gate, the head that shows it best: the highest score among heads labelled with it,
    else the highest score overall (the panel then says which label that head carries).

    Returns rows gate, layer, head, score, label.
    """
    picks = []
    for gate in GATES:
        labelled = gates[gates["gate"] == gate]
        pool = labelled if len(labelled) else gates
        best = pool.loc[pool[f"score_{gate}"].idxmax()]
        picks.append({"gate": gate, "layer": int(best["layer"]), "head": int(best["head"]),
                      "score": float(best[f"score_{gate}"]), "label": best["gate"]})
    return pd.DataFrame(picks)


def gallery_label(path, classes: list[str], requested: str | None) -> int:
    """The label whose class-averaged matrices the gallery shows: `requested` (figures.gallery_class),
    else the first class in label order with at least one correctly classified sequence."""
    counts = read_parquet(path, ["label", "n_seqs"]).groupby("label")["n_seqs"].min()
    if requested is not None:
        if requested not in classes:
            raise ValueError(f"config figures.gallery_class: {requested!r} is not one of classes {classes}")
        label = classes.index(requested)
        if counts.get(label, 0) < 1:
            raise ValueError(f"{path}: class {requested} (figures.gallery_class) has no correctly classified "
                             "sequence, so no class-averaged attention matrix")
        return label
    usable = [label for label in range(len(classes)) if counts.get(label, 0) >= 1]
    if not usable:
        raise ValueError(f"{path}: no class has a correctly classified sequence (every n_seqs is 0)")
    return usable[0]


def read_class_matrices(path, label: int, heads: list[tuple[int, int]]) -> dict[tuple[int, int], np.ndarray]:
    """{(layer, head): A [query, key]} of one class from class_attention.parquet, reading only those rows."""
    filters = [[("label", "=", label), ("layer", "=", layer), ("head", "=", head)] for layer, head in set(heads)]
    table = read_parquet(path, MATRIX_COLUMNS, filters=filters)
    matrices = {}
    for row in table.itertuples():
        flat = np.asarray(row.matrix, dtype=np.float64)
        if row.length < 1 or flat.size != row.length**2:
            raise ValueError(f"{path}: label {label} layer {row.layer} head {row.head}: matrix has {flat.size} "
                             f"values, expected length^2 = {row.length**2}")
        matrices[(int(row.layer), int(row.head))] = flat.reshape(row.length, row.length)
    missing = sorted(set(heads) - set(matrices))
    if missing:
        raise ValueError(f"{path}: no class-averaged matrix for label {label} at (layer, head) {missing}")
    return matrices


def aa_ticks(token_map: pd.DataFrame, length: int, step: int = 200) -> tuple[list[int], list[str], list[tuple[float, str]]]:
    """Token positions to mark on an attention axis: every `step` amino acids, and domain centres.

    Returns (positions, amino-acid labels, [(position, domain name)]) for positions < length.
    """
    kmers = token_map[(token_map["token_kind"] == "kmer") & (token_map["position"] < length)].sort_values("position")
    if kmers.empty:
        return [], [], []
    aa = kmers["aa_start"].to_numpy()
    positions = kmers["position"].to_numpy()
    marks = [aa_value for aa_value in [1, *range(step, int(aa.max()) + 1, step)]]
    ticks = [int(positions[np.searchsorted(aa, m, side="left").clip(0, len(aa) - 1)]) for m in marks]
    domains = []
    for name in TICK_DOMAINS:
        inside = positions[[name in list(d) for d in kmers["domains"]]]
        if len(inside):
            domains.append((float(inside.mean()), name))
    return ticks, [str(m) for m in marks], domains


def plot_attention_gallery(matrices: dict, picks: pd.DataFrame, token_map: pd.DataFrame, class_name: str,
                           seed: int) -> plt.Figure:
    """One class-averaged attention matrix per gate type (log colour scale, shared), spike amino
    acids on the axes and the main domains on top."""
    cols = 4
    rows = math.ceil(len(picks) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(WIDTH * 1.35, 2.45 * rows + 0.5), squeeze=False)
    norm = LogNorm(vmin=1e-4, vmax=1.0)
    image = None
    for ax, pick in zip(axes.flat, picks.itertuples()):
        a = matrices[(pick.layer, pick.head)]
        image = ax.imshow(np.clip(a, norm.vmin, None), norm=norm, cmap="magma_r", interpolation="nearest",
                          rasterized=True)
        ticks, labels, domains = aa_ticks(token_map, len(a))
        ax.set_xticks(ticks, labels, fontsize=6)
        ax.set_yticks(ticks, labels, fontsize=6)
        ax.grid(False)
        top = ax.secondary_xaxis("top")
        top.set_xticks([p for p, _ in domains], [n for _, n in domains], fontsize=5.5)
        top.tick_params(length=0, pad=1)
        extra = "" if pick.label == pick.gate else f"\n(head labelled {GATE_NAMES.get(pick.label, pick.label)})"
        ax.set_title(f"{GATE_NAMES[pick.gate]}\nlayer {pick.layer}, head {pick.head}, score {pick.score:.2f}{extra}",
                     fontsize="small", fontweight="normal")
    for ax in axes.flat[len(picks):]:
        ax.set_visible(False)
    fig.colorbar(image, ax=list(axes.flat[: len(picks)]), shrink=0.6, label="attention weight (mean over class)")
    fig.supxlabel("key (spike amino acid)", fontsize="medium")
    fig.supylabel("query (spike amino acid)", fontsize="medium")
    fig.suptitle(f"Class-averaged attention matrices, one head per gate type (class {class_name}, seed {seed})",
                 fontweight="bold", fontsize="medium")
    return fig


def plot_attention_entropy(patterns: pd.DataFrame, ci: float = 0.95) -> plt.Figure:
    """Normalised row entropy H / log n per layer: each head (dot: mean over seeds of the heads
    matched to it; whisker: its interval over seeds) and the mean of a layer's heads (line).
    1 = uniform rows (open gates), 0 = one key.

    patterns: across-seed rows (all_seeds/attention_patterns, heads matched) of measure `entropy`,
    source `all` (every dumped sequence), the interval at level `ci`.
    """
    per_head = patterns.sort_values(["layer", "head"])
    per_layer = per_head.groupby("layer", as_index=False)["mean"].mean()
    n_seeds = int(per_head["n_seeds"].max())
    fig, ax = plt.subplots(figsize=(WIDTH, 3.4))
    head_dots(ax, per_head, f"one head: mean over seeds{f', {100 * ci:.0f}% CI' if n_seeds > 1 else ''}")
    ax.plot(per_layer["layer"], per_layer["mean"], color="#CC6677", marker="o", markersize=3,
            label="mean over the layer's heads")
    ax.set_ylim(0, 1.02)
    ax.set_xticks(sorted(per_layer["layer"].unique()))
    ax.set_xlabel("layer")
    ax.set_ylabel("row entropy / log n")
    ax.set_title(f"Entropy of the attention rows per layer ({n_seeds} seed{'s' if n_seeds > 1 else ''}, heads matched)")
    legend_outside(ax)
    return fig


def plot_domain_attention(domains: pd.DataFrame, order: list[str], max_cols: int = 5) -> plt.Figure:
    """Per spike domain of the partition (panel), layer x head heatmap of log2(observed / expected
    attention share), mean over seeds of the matched heads; a dot marks heads flagged significant
    (Benjamini-Hochberg, `significant`) in every seed."""
    domains = domains[domains["domain"].isin(order)]
    ratio = domains[domains["measure"] == "ratio"].assign(value=lambda f: np.log2(f["value"]))
    mean = ratio.groupby(["domain", "layer", "head"])["value"].mean()
    flag = domains[domains["measure"] == "significant"]
    significant = flag.assign(sig=flag["value"] == 1).groupby(["domain", "layer", "head"])["sig"].all()
    names = [d for d in order if d in set(ratio["domain"])]
    limit = float(np.nanmax(np.abs(mean.to_numpy()))) if len(mean) else 1.0
    limit = min(max(limit, 0.5), 4.0)
    cols = min(max_cols, len(names))
    rows = math.ceil(len(names) / cols)
    n_layers, n_heads = ratio["layer"].nunique(), ratio["head"].nunique()
    fig, axes = plt.subplots(rows, cols, figsize=(WIDTH * 1.35, (0.14 * n_layers + 0.9) * rows + 0.8),
                             squeeze=False, sharex=True, sharey=True)
    for ax, name in zip(axes.flat, names):
        grid = mean[name].unstack("head").sort_index()
        image = ax.imshow(grid.to_numpy(), cmap=DIVERGING, vmin=-limit, vmax=limit, aspect="auto",
                          interpolation="nearest")
        if name in significant.index.get_level_values(0):
            sig = significant[name].unstack("head").reindex_like(grid).fillna(False).to_numpy(dtype=bool)
            ys, xs = np.nonzero(sig)
            ax.scatter(xs, ys, s=4, color="black", marker="o", linewidths=0)
        ax.set_title(name)
        ax.grid(False)
        ax.set_xticks(range(0, n_heads, max(1, n_heads // 4)))
        ax.set_yticks(range(0, n_layers, max(1, n_layers // 4)), grid.index[:: max(1, n_layers // 4)])
    for ax in axes.flat[len(names):]:
        ax.set_visible(False)
    fig.colorbar(image, ax=axes, shrink=0.8, label="log2(attention share / token share)")
    fig.supxlabel("head (matched across seeds)", fontsize="medium")
    fig.supylabel("layer", fontsize="medium")
    n_seeds = domains["seed"].nunique()
    fig.suptitle(f"Attention received by each spike domain, relative to its share of tokens ({n_seeds} seed"
                 f"{'s' if n_seeds > 1 else ''}; dot: t-test significant at the FDR in every seed)",
                 fontweight="bold", fontsize="medium")
    return fig


def make_gate_grid(input, params) -> plt.Figure:
    reference = int(read_parquet(input.matching, ["reference_seed"])["reference_seed"].iloc[0])
    return plot_gate_grid(read_parquet(input.agreement, AGREEMENT_COLUMNS), reference)


def make_row_gates(input, params) -> plt.Figure:
    return plot_row_gates(read_parquet(input.rows, ROW_COLUMNS))


def make_k90_violins(input, params) -> plt.Figure:
    return plot_k90_violins(read_parquet(input.k90, K90_COLUMNS), params.seed)


def make_attention_gallery(input, params) -> plt.Figure:
    gates = read_parquet(input.gates, GATES_COLUMNS)
    picks = pick_gallery_heads(gates)
    classes = list(params.classes)
    label = gallery_label(input.class_attention, classes, params.gallery_class)
    matrices = read_class_matrices(input.class_attention, label, list(zip(picks["layer"], picks["head"])))
    token_map = read_parquet(input.token_map, TOKEN_MAP_COLUMNS)
    return plot_attention_gallery(matrices, picks, token_map, classes[label], params.seed)


def make_attention_entropy(input, params) -> plt.Figure:
    patterns = read_parquet(input.patterns, PATTERN_COLUMNS, filters=[("measure", "=", "entropy")])
    return plot_attention_entropy(select(patterns, input.patterns, measure="entropy", source="all"), params.ci)


def make_domain_attention(input, params) -> plt.Figure:
    domains = per_seed(input.domains, params.seeds, read_parquet, columns=DOMAIN_COLUMNS[1:])
    return plot_domain_attention(matched_heads(domains, input.matching), partition(input.variants)[0])

