"""Attention and geometry explorer: the run's tables as interactive Plotly figures.

The tables -> figure functions; `explore(results_dir)` (bertgeom.explorer_run) returns the figures
for a notebook; rule `explorer` writes them, with the data they need, into one self-contained page
(bertgeom.explorer_page). Views: a head grid per
checkpoint and seed (gate label, gate scores, K90, entropy, directionality index), one head's
attention matrix (class average or one sequence) with spike amino-acid axes, domain bands and its
top keys mapped to amino acids and the lineage's mutations, the head's K90 distribution, the cone
index along the stream per checkpoint, and a model view (every head of a layer as a thumbnail).

Tables read (docs/outputs.md): per checkpoint and seed `activations/.../class_attention.parquet`,
`attention.parquet`, `stats/.../gates.parquet`, `attention_patterns.parquet`,
`directionality.parquet`, `k90.parquet`; per checkpoint `stats/all_seeds/.../cone_index.parquet`;
`tokens/token_map.parquet` and the split tables (lineage of each sequence); variants.yaml.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from bertgeom.data.variants import load_variants
from bertgeom.figures.attention import GATE_COLOURS, MATRIX_COLUMNS
from bertgeom.figures.cone import stream_positions
from bertgeom.figures.tables import pick_split, read_parquet
from bertgeom.stats.attention import GATE_NAMES, GATES

MEASURES = {"gate": "gate label", **{f"score_{g}": f"score: {GATE_NAMES[g]}" for g in GATES},
            "k90": "K90 (keys holding 90% of a row, mean)", "entropy": "row entropy / log n (mean)",
            "directionality": "directionality index"}  # fmt: skip
FLOOR = 1e-4  # weights below it are drawn (and stored) as the floor: log colour scale 1e-4..1
# Stored weights: log10 codes over [FLOOR, 1]; the page takes the finest of these level counts that
# keeps it under MAX_PAGE_BYTES (64 levels: neighbours differ by x1.16; 16: x1.85; 8, the last resort: x3.73).
LEVELS = (64, 48, 32, 24, 16, 12, 8)
MAX_PAGE_BYTES = 30 * 10**6  # the limit, 30 MB
POOL = 8  # matrices not at full resolution: mean over 8 x 8 blocks of positions
FULL_SEQUENCES = 2  # sequences per class shown (full resolution: example seed, last analysed checkpoint)
K90_BINS = 40
SUBUNITS = ("S1", "S2")  # named in the labels, not drawn as bands (they hold the domains)
MAGMA_R = "Magma_r"


def missing_reason(paths: list[Path], checkpoint: str, seed: int | None) -> str | None:
    """Why a view is empty: the tables it lacks, in words; None when all exist."""
    missing = [str(p) for p in paths if not Path(p).exists()]
    if not missing:
        return None
    what = f"checkpoint {checkpoint}" + ("" if seed is None else f", seed {seed}")
    return (f"No data for {what}: {len(missing)} table(s) missing, e.g. {missing[0]}. This checkpoint or "
            f"seed was not analysed in this run (config activations.checkpoints, train.seeds).")


# --- tables -> per-head values ------------------------------------------------------------------
def head_values(gates: pd.DataFrame, patterns: pd.DataFrame, directionality: pd.DataFrame) -> pd.DataFrame:
    """One row per (layer, head): gate, score_<gate>, k90, entropy, directionality (NaN where absent).

    patterns: attention_patterns rows (source `all` is used); directionality: rows of variant `ours`."""
    wide = gates[["layer", "head", "gate", *(f"score_{g}" for g in GATES)]].copy()
    measures = patterns[(patterns["source"] == "all") & patterns["measure"].isin(["k90", "entropy"])]
    index = directionality[(directionality["variant"] == "ours")
                           & (directionality["measure"] == "directionality_index")].assign(measure="directionality")
    extra = pd.concat([measures, index]).pivot_table(index=["layer", "head"], columns="measure", values="value")
    wide = wide.merge(extra.reset_index(), on=["layer", "head"], how="left")
    for name in ("k90", "entropy", "directionality"):
        if name not in wide:
            wide[name] = np.nan
    return wide.astype({"layer": int, "head": int}).sort_values(["layer", "head"], ignore_index=True)


def head_grid_figure(values: pd.DataFrame, measure: str, title: str) -> go.Figure:
    """Layer x head heatmap of one measure of MEASURES; `gate`: coloured by label, named in the cell."""
    layers = sorted(values["layer"].unique())
    heads = list(range(int(values["head"].max()) + 1))
    grid = values.set_index(["layer", "head"])
    cell = [[grid[measure].get((layer, head)) for head in heads] for layer in layers]
    if measure == "gate":
        codes = {g: i for i, g in enumerate(GATE_COLOURS)}
        n = len(codes)
        scale = [[edge, colour] for i, colour in enumerate(GATE_COLOURS.values()) for edge in (i / n, (i + 1) / n)]
        trace = go.Heatmap(z=[[codes.get(g, np.nan) for g in row] for row in cell], text=cell, zmin=-0.5,
                           zmax=n - 0.5, colorscale=scale, texttemplate="%{text}", showscale=False,
                           hovertemplate="layer %{y}, head %{x}<br>gate %{text}<extra></extra>")
    else:
        text = [[f"{v:.3g}" if v is not None and np.isfinite(v) else "NaN" for v in row] for row in cell]
        trace = go.Heatmap(z=cell, text=text, texttemplate="%{text}", colorscale="Viridis",
                           colorbar={"title": {"text": MEASURES[measure]}},
                           hovertemplate=f"layer %{{y}}, head %{{x}}<br>{MEASURES[measure]} %{{text}}<extra></extra>")
    fig = go.Figure(trace.update(x=heads, y=layers, xgap=2, ygap=2))
    fig.update_layout(title={"text": title}, height=120 + 46 * len(layers), margin={"t": 60, "b": 40},
                      xaxis={"title": {"text": "head"}, "dtick": 1}, yaxis={"title": {"text": "layer"}, "dtick": 1,
                                                                            "autorange": "reversed"})
    return fig


def k90_histogram(k90: pd.DataFrame, length: int) -> dict[tuple[int, int], tuple[np.ndarray, np.ndarray]]:
    """{(layer, head): (bin centres, counts)}: K90 of every query row of the subset, K90_BINS equal bins
    over [1, length]."""
    edges = np.linspace(0.5, max(length, 2) + 0.5, K90_BINS + 1)
    centres = (edges[:-1] + edges[1:]) / 2
    return {(int(layer), int(head)): (centres, np.histogram(part["k90"], bins=edges)[0])
            for (layer, head), part in k90.groupby(["layer", "head"])}  # fmt: skip


def k90_figure(centres: np.ndarray, counts: np.ndarray, title: str) -> go.Figure:
    fig = go.Figure(go.Bar(x=centres, y=counts, marker_color="#88CCEE",
                           hovertemplate="K90 ~ %{x:.0f}<br>%{y} query rows<extra></extra>"))
    fig.update_layout(title={"text": title}, height=260, bargap=0.05, margin={"t": 50, "b": 40},
                      xaxis={"title": {"text": "K90 (keys holding 90% of the row)"}},
                      yaxis={"title": {"text": "query rows"}})
    return fig


# --- cone index along the stream --------------------------------------------------------------------
def cone_stream(cone: pd.DataFrame) -> pd.DataFrame:
    """Rows of the across-seed cone table the stream view shows: ours, normalised, mean over sequences,
    class all, whole layers, one split; with `x` (stream position) and `where` (layer.stage)."""
    split = pick_split(cone)
    rows = cone[(cone["split"] == split) & (cone["scope"] == "sequence") & (cone["class"] == "all")
                & (cone["head"] == -1) & (cone["variant"] == "ours") & (cone["measure"] == "cone_normalised")]
    rows = stream_positions(rows)
    return rows.assign(where=rows["layer"].astype(str) + "." + rows["stage"].astype(str))


def cone_figure(streams: dict[str, pd.DataFrame], missing: dict[str, str]) -> go.Figure:
    """One line per checkpoint (mean over seeds) with its interval over seeds as a band."""
    fig = go.Figure()
    colours = ["#332288", "#CC6677", "#117733", "#DDCC77", "#88CCEE"]
    for colour, (checkpoint, rows) in zip(colours, streams.items()):
        bounded = rows.dropna(subset=["ci_low", "ci_high"])
        if len(bounded):
            fig.add_trace(go.Scatter(x=list(bounded["where"]) + list(bounded["where"][::-1]),
                                     y=list(bounded["ci_high"]) + list(bounded["ci_low"][::-1]), fill="toself",
                                     line={"width": 0}, fillcolor=colour, opacity=0.2, hoverinfo="skip",
                                     showlegend=False, legendgroup=checkpoint))  # fmt: skip
        n_seeds = int(rows["n_seeds"].max()) if len(rows) else 0
        fig.add_trace(go.Scatter(x=rows["where"], y=rows["mean"], mode="lines+markers", name=checkpoint,
                                 line={"color": colour}, legendgroup=checkpoint,
                                 customdata=np.stack([rows["ci_low"], rows["ci_high"]], axis=-1),
                                 hovertemplate=f"{checkpoint} %{{x}}: %{{y:.3f}} [%{{customdata[0]:.3f}}, "
                                               f"%{{customdata[1]:.3f}}] ({n_seeds} seeds)<extra></extra>"))
    note = "".join(f"<br><sub>{reason}</sub>" for reason in missing.values())
    fig.update_layout(title={"text": "Cone index along the stream (ours, normalised; mean over sequences, "
                                     f"band: interval over seeds){note}"},
                      height=380, margin={"t": 90}, yaxis={"title": {"text": "cone index c = I / n"}},
                      xaxis={"title": {"text": "layer.stage"}, "type": "category"})
    return fig


# --- attention matrices -----------------------------------------------------------------------------
def pool_matrix(matrix: np.ndarray, factor: int) -> np.ndarray:
    """Mean over factor x factor blocks (the last blocks over what is left); factor 1: unchanged."""
    if factor == 1:
        return matrix
    n = matrix.shape[0]
    starts = np.arange(0, n, factor)
    sums = np.add.reduceat(np.add.reduceat(matrix, starts, axis=0), starts, axis=1)
    sizes = np.minimum(factor, n - starts)
    return sums / np.outer(sizes, sizes)


def quantise(matrix: np.ndarray, levels: int) -> np.ndarray:
    """uint8 codes 0..levels-1 of log10(weight) over [FLOOR, 1]; the page decodes as dequantise does."""
    scaled = (np.log10(np.clip(matrix, FLOOR, 1.0)) - np.log10(FLOOR)) / -np.log10(FLOOR)
    return np.round(scaled * (levels - 1)).astype(np.uint8)


def dequantise(codes: np.ndarray, levels: int) -> np.ndarray:
    return FLOOR ** (1.0 - codes.astype(np.float64) / (levels - 1))


def residual_codes(codes: np.ndarray, base: np.ndarray, levels: int) -> np.ndarray:
    """codes minus base (mod levels) where both have a cell (the top-left min(n, m) block), codes
    elsewhere. A sequence's matrix stored against its class average compresses about twice as well:
    the two differ in few cells. restore_codes (and explorer.js) invert it."""
    k = min(codes.shape[0], base.shape[0])
    out = codes.copy()
    out[:k, :k] = (codes[:k, :k].astype(np.int16) - base[:k, :k]) % levels
    return out


def restore_codes(stored: np.ndarray, base: np.ndarray, levels: int) -> np.ndarray:
    k = min(stored.shape[0], base.shape[0])
    out = stored.copy()
    out[:k, :k] = (stored[:k, :k].astype(np.int16) + base[:k, :k]) % levels
    return out


@dataclass
class Axis:
    """Labels and domain bands of an attention axis of `n` token positions pooled by `factor`."""

    labels: list[str]
    bands: list[tuple[str, float, float]]  # (domain, first index, last index)


def token_axis(token_map: pd.DataFrame, n: int, factor: int = 1) -> Axis:
    """Axis labels: position(s) and the spike amino acids they cover ([CLS]/[SEP] by name, n-1 = [SEP])
    and the domains; bands: index range of each domain but the subunits (the reference-length spike's
    coordinates: token_map.parquet)."""
    rows = token_map.set_index("position")
    labels, domains = [], {}
    for index, start in enumerate(range(0, n, factor)):
        positions = range(start, min(start + factor, n))
        kmers = [p for p in positions if 0 < p < n - 1 and p in rows.index and rows.at[p, "token_kind"] == "kmer"]
        names = ["[CLS]" if p == 0 else "[SEP]" for p in positions if p == 0 or p == n - 1]
        where = "#" + (f"{start}" if len(positions) == 1 else f"{start}-{positions[-1]}")
        if kmers:
            first, last = rows.loc[kmers[0]], rows.loc[kmers[-1]]
            inside = sorted({d for p in kmers for d in rows.at[p, "domains"]}, key=lambda d: d)
            names.append(f"aa {int(first['aa_start'])}-{int(last['aa_end'])} {'/'.join(inside)}".strip())
            for d in (d for d in inside if d not in SUBUNITS):
                low, high = domains.get(d, (index, index))
                domains[d] = (min(low, index), max(high, index))
        labels.append(f"{where} {' '.join(names)}")
    return Axis(labels, [(d, low, high) for d, (low, high) in sorted(domains.items(), key=lambda kv: kv[1])])


def attention_layout(axis: Axis, title: str) -> go.Layout:
    """Layout of a matrix view: domain bands above the keys and left of the queries, queries downwards."""
    shapes, notes = [], []
    for i, (name, low, high) in enumerate(axis.bands):
        colour = ["#88CCEE", "#DDCC77", "#CC6677", "#44AA99", "#AA4499"][i % 5]
        shapes.append({"type": "rect", "xref": "x", "yref": "paper", "x0": low - 0.5, "x1": high + 0.5,
                       "y0": 1.005, "y1": 1.035, "fillcolor": colour, "line": {"width": 0}})
        shapes.append({"type": "rect", "yref": "y", "xref": "paper", "y0": low - 0.5, "y1": high + 0.5,
                       "x0": -0.035, "x1": -0.005, "fillcolor": colour, "line": {"width": 0}})
        notes.append({"x": (low + high) / 2, "y": 1.05, "xref": "x", "yref": "paper", "text": name,
                      "showarrow": False, "font": {"size": 9}})
    return go.Layout(title={"text": title}, shapes=shapes, annotations=notes, height=620,
                     margin={"t": 110, "l": 150}, xaxis={"title": {"text": "key"}, "showticklabels": False},
                     yaxis={"title": {"text": "query"}, "autorange": "reversed", "showticklabels": False})


def weight_text(matrix: np.ndarray) -> list[list[str]]:
    """Hover text of each cell: the weight to 2 significant digits, '<1e-4' under the floor."""
    return [[f"{w:.2g}" if w > FLOOR else "<1e-4" for w in row] for row in matrix.tolist()]


def attention_trace(matrix: np.ndarray, axis: Axis) -> go.Heatmap:
    return go.Heatmap(z=np.log10(np.clip(matrix, FLOOR, 1.0)), x=axis.labels, y=axis.labels, text=weight_text(matrix),
                      zmin=np.log10(FLOOR), zmax=0, colorscale=MAGMA_R,
                      hovertemplate="query %{y}<br>key %{x}<br>weight %{text}<extra></extra>",
                      colorbar={"title": {"text": "weight"}, "tickvals": [-4, -3, -2, -1, 0],
                                "ticktext": ["1e-4", "1e-3", "0.01", "0.1", "1"]})  # fmt: skip


def attention_figure(matrix: np.ndarray, axis: Axis, title: str) -> go.Figure:
    return go.Figure(attention_trace(matrix, axis), attention_layout(axis, title))


def model_view_figure(matrices: list[np.ndarray | None], title: str, columns: int = 4) -> go.Figure:
    """Every head of one layer as a thumbnail (shared log colour scale); None: an empty panel."""
    rows = -(-len(matrices) // columns)
    fig = make_subplots(rows=rows, cols=columns, subplot_titles=[f"head {h}" for h in range(len(matrices))],
                        horizontal_spacing=0.03, vertical_spacing=0.08)
    for head, matrix in enumerate(matrices):
        z = None if matrix is None else np.log10(np.clip(matrix, FLOOR, 1.0))
        fig.add_trace(go.Heatmap(z=z, zmin=np.log10(FLOOR), zmax=0, colorscale=MAGMA_R, showscale=False,
                                 hovertemplate=f"head {head}<extra></extra>"),
                      row=head // columns + 1, col=head % columns + 1)
    fig.update_xaxes(showticklabels=False)
    fig.update_yaxes(showticklabels=False, autorange="reversed")
    fig.update_layout(title={"text": title}, height=80 + 230 * rows, margin={"t": 70})
    return fig


# --- top keys, amino acids and mutations ----------------------------------------------------------
MUTATION_RESIDUE = re.compile(r"^(?:ins)?[A-Z*]?(\d+)")


def lineage_mutations(variants, class_name: str, lineage: str | None = None) -> dict[str, int]:
    """{spike amino-acid change: number of the class's profiles carrying it} for the profile of
    `lineage` when the class has one, else over all the class's profiles."""
    entries = [c for c in load_variants(variants)["classes"] if c["name"] == class_name]
    profiles = entries[0]["profiles"] if entries else []
    chosen = [p for p in profiles if p.get("lineage") == lineage] or profiles
    counts: dict[str, int] = {}
    for profile in chosen:
        for change in profile.get("spike_aa_changes", []):
            counts[change] = counts.get(change, 0) + 1
    return counts


def top_keys(matrix: np.ndarray, k: int) -> list[tuple[int, float]]:
    """The k non-special keys (1..n-2) with the largest column sums over the query rows, and each one's
    share of the matrix's total mass (None for an all-zero matrix): [(position, share)], largest first."""
    columns = matrix.sum(axis=0)
    total = columns.sum()
    inner = np.arange(1, max(matrix.shape[0] - 1, 1))
    best = inner[np.argsort(-columns[inner], kind="stable")[:k]]
    return [(int(p), float(columns[p] / total) if total > 0 else None) for p in best]


def describe_keys(keys, token_map: pd.DataFrame, mutations: dict[str, int], n_profiles: int) -> list[dict]:
    """Each top key with its spike amino acids, domains and the lineage's changes inside them."""
    rows = token_map.set_index("position")
    described = []
    for position, share in keys:
        row = rows.loc[position] if position in rows.index else None
        if row is None or pd.isna(row["aa_start"]):
            described.append({"position": position, "share": share, "aa": "", "domains": "", "mutations": ""})
            continue
        low, high = int(row["aa_start"]), int(row["aa_end"])
        inside = [f"{m}" + (f" ({c}/{n_profiles})" if n_profiles > 1 else "") for m, c in mutations.items()
                  if (hit := MUTATION_RESIDUE.match(m)) and low <= int(hit.group(1)) <= high]
        described.append({"position": position, "share": share, "aa": f"{low}-{high}",
                          "domains": "/".join(row["domains"]), "mutations": ", ".join(inside)})
    return described


# --- matrices of one checkpoint and seed ---------------------------------------------------------
@dataclass
class Source:
    """A matrix source of the view: a class average or one sequence."""

    id: str  # class:<label> or seq:<seq_id>
    name: str
    class_name: str
    lineage: str | None
    n: int
    matrices: dict[tuple[int, int], np.ndarray] = field(repr=False)

    @property
    def is_average(self) -> bool:
        return self.id.startswith("class:")


def read_sources(paths: dict[str, Path], lineages: Mapping[str, str], full_sequences: int,
                 with_matrices: bool = True) -> list[Source]:
    """Class averages (classes with at least one sequence) and the first `full_sequences` subset
    sequences of each class (by seq_id), each with its matrices {(layer, head): [query, key]} (None
    each without with_matrices: only the matrices' keys, read cheaply)."""
    matrix = ["matrix"] if with_matrices else []
    sources = []
    table = read_parquet(paths["class_attention"], [c for c in MATRIX_COLUMNS if c != "matrix"] + matrix)
    classes = dict(zip(table["label"], table["class"]))
    for (label, name), part in table[table["length"] > 0].groupby(["label", "class"], sort=True):
        n = int(part["length"].iloc[0])
        sources.append(Source(f"class:{label}", f"class average: {name} ({int(part['n_seqs'].max())} sequences)",
                              name, None, n, _matrices(part, "length")))
    columns = ["seq_id", "label", "pred", "layer", "head", "n"]
    index = read_parquet(paths["attention"], ["seq_id", "label"]).drop_duplicates("seq_id")
    chosen = list(index.sort_values("seq_id").groupby("label").head(full_sequences)["seq_id"])
    sequences = read_parquet(paths["attention"], columns + matrix, filters=[("seq_id", "in", chosen)])
    for row in sequences.drop_duplicates("seq_id").sort_values(["label", "seq_id"]).itertuples():
        part = sequences[sequences["seq_id"] == row.seq_id]
        truth, pred = classes.get(row.label, str(row.label)), classes.get(row.pred, "none")
        sources.append(Source(f"seq:{row.seq_id}", f"sequence {row.seq_id} ({truth}, predicted {pred})", truth,
                              lineages.get(row.seq_id), int(row.n), _matrices(part, "n")))
    return sources


def _matrices(part: pd.DataFrame, size: str) -> dict[tuple[int, int], np.ndarray | None]:
    if "matrix" not in part:
        return {(int(r.layer), int(r.head)): None for r in part.itertuples()}
    return {(int(r.layer), int(r.head)): np.asarray(r.matrix, dtype=np.float32).reshape(getattr(r, size), -1)
            for r in part.itertuples()}  # fmt: skip
