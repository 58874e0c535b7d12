"""Figures: theme and atomic save, every plotting function on small hand-made tables in the documented
schemas (docs/outputs.md, README stage sections), and the figure registry against the catalogue,
captions, rules and config."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from bertgeom.config import execution_only, leaf_keys, load_schema  # noqa: E402
from bertgeom.data.variants import spike_domains  # noqa: E402
from bertgeom.figures import attention, classification, cone, data, directionality, distribution, gallery, registry, tables, theme  # noqa: E402
from bertgeom.figures.draw import draw_figure  # noqa: E402
from bertgeom.io import write_parquet  # noqa: E402
from bertgeom.stats.aggregate import aggregate_seeds  # noqa: E402
from bertgeom.stats.attention import GATES  # noqa: E402
from bertgeom.stats.matching import gate_agreement, head_matching  # noqa: E402
from bertgeom.tokens import token_map  # noqa: E402
from workflow import snakemake  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ["GH", "Lambda", "Mu", "Alpha"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def _theme():
    theme.apply_theme("paper")
    yield
    plt.close("all")


def catalogue() -> list[dict]:
    """Rows of the catalogue table in docs/figures.md: id, rule, output (PNG path)."""
    rows = []
    for line in (ROOT / "docs" / "figures.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 5 and re.fullmatch(r"`[a-z0-9_]+`", cells[0]):
            rows.append({"id": cells[0].strip("`"), "rule": cells[-2].strip("`"), "output": cells[-1]})
    return rows


def assert_readable(fig: plt.Figure) -> None:
    """The figure has a title; every axes that shows data has labelled x and y axes (or shares them)."""
    assert fig.axes, "figure without axes"
    plotted = [ax for ax in fig.axes if ax.has_data() and ax.get_label() != "<colorbar>"]
    assert plotted
    # Grids of panels label their axes once for the figure (supxlabel / supylabel).
    sup_x = fig._supxlabel is not None and fig._supxlabel.get_text()
    sup_y = fig._supylabel is not None and fig._supylabel.get_text()
    for ax in plotted:
        # A shared axis is labelled once (bottom row / left column).
        assert sup_x or any(a.get_xlabel() for a in ax.get_shared_x_axes().get_siblings(ax)), "x axis without label"
        assert sup_y or any(a.get_ylabel() for a in ax.get_shared_y_axes().get_siblings(ax)), "y axis without label"
    titles = [ax.get_title() for ax in fig.axes] + [fig._suptitle.get_text() if fig._suptitle else ""]
    assert any(titles), "figure without a title"


# ---- theme and save ---------------------------------------------------------------------------------
def test_save_writes_png_at_dpi_and_pdf(tmp_path):
    fig, ax = plt.subplots(figsize=(2, 1))
    ax.plot([0, 1], [0, 1])
    theme.save(fig, tmp_path / "f.png", tmp_path / "f.pdf", dpi=123)
    png, pdf = (tmp_path / "f.png").read_bytes(), (tmp_path / "f.pdf").read_bytes()
    assert png.startswith(PNG_SIGNATURE) and pdf.startswith(b"%PDF")
    with Image.open(tmp_path / "f.png") as image:
        assert image.info["dpi"][0] == pytest.approx(123, abs=0.5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.pdf", "f.png"]  # no temporary files left
    assert not plt.fignum_exists(fig.number)  # closed


def test_save_is_atomic_when_drawing_fails(tmp_path):
    fig, ax = plt.subplots()
    ax.imshow(np.zeros((2, 2)), norm=matplotlib.colors.LogNorm(vmin=0, vmax=1))  # fails at draw time
    with pytest.raises(ValueError):
        theme.save(fig, tmp_path / "g.png", tmp_path / "g.pdf")
    assert list(tmp_path.iterdir()) == []


def test_class_palette_distinct_and_ordered():
    eight = theme.class_palette(["a", "b", "c", "d", "e", "f", "g", "h"])
    assert list(eight) == ["a", "b", "c", "d", "e", "f", "g", "h"]
    assert list(eight.values()) == theme.OKABE_ITO
    twelve = theme.class_palette([str(i) for i in range(12)])
    assert len(set(twelve.values())) == 12
    gates = theme.category_palette(["a", "none", "b"], neutral="none")
    assert gates == {"a": theme.TOL_MUTED[0], "b": theme.TOL_MUTED[1], "none": theme.GREY}
    with pytest.raises(ValueError, match="10 categories"):
        theme.category_palette([str(i) for i in range(10)])


def test_readers_name_the_file_and_columns(tmp_path):
    path = tmp_path / "qc.tsv"
    path.write_text("seq_id\tclass\n a\tGH\n")
    with pytest.raises(ValueError, match=r"qc\.tsv.*status"):
        tables.read_tsv(path, data.QC_COLUMNS)
    with pytest.raises(FileNotFoundError, match="nope.parquet"):
        tables.read_parquet(tmp_path / "nope.parquet")
    with pytest.raises(ValueError, match="2 files for 3 seeds"):
        tables.per_seed(["a", "b"], [0, 1, 2], tables.read_csv)
    info = tmp_path / "training_info.json"
    info.write_text('{"epochs": [{"epoch": 1, "val_loss": 0.3}]}')
    with pytest.raises(ValueError, match=r"training_info\.json.*'step'"):
        classification.validation_table([info], [0])


# ---- data ---------------------------------------------------------------------------------------
def qc_table() -> pd.DataFrame:
    rows = []
    for i, name in enumerate(CLASSES):
        for j in range(10 + i):
            reject = j < i  # class i has i rejects
            rows.append({"seq_id": f"s-{name}-{j}", "class": name, "status": "reject" if reject else "pass",
                         "reason": ("n_fraction" if j % 2 else "partial_spike") if reject else "", "detail": ""})
    return pd.DataFrame(rows)


def test_plot_qc_bars_add_up_to_the_table():
    qc = qc_table()
    fig = data.plot_qc(qc, CLASSES)
    assert_readable(fig)
    ax = fig.axes[0]
    totals = {}
    for patch in ax.patches:
        y = round(patch.get_y() + patch.get_height() / 2)
        totals[y] = totals.get(y, 0) + patch.get_width()
    assert [totals[i] for i in range(len(CLASSES))] == [10 + i for i in range(len(CLASSES))]
    assert {t.get_text() for t in ax.get_legend().get_texts()} == {"pass", "reject: n_fraction", "reject: partial_spike"}


def test_plot_qc_rejects_unknown_class():
    qc = qc_table()
    qc.loc[0, "class"] = "Zeta"
    with pytest.raises(ValueError, match="Zeta"):
        data.plot_qc(qc, CLASSES)


def test_plot_kmer_occurrences_one_point_per_kmer():
    counts = np.array([50, 20, 20, 7, 3, 1, 1, 1])
    kmers = pd.DataFrame({"kmer": [f"k{i}" for i in range(8)], "count": counts,
                          "in_vocab": counts >= 2, "rank": np.arange(1, 9)})
    fig = data.plot_kmer_occurrences(kmers)
    assert_readable(fig)
    offsets = np.concatenate([c.get_offsets() for c in fig.axes[0].collections])
    assert sorted(map(tuple, offsets)) == sorted(zip(kmers["rank"].astype(float), counts.astype(float)))
    assert fig.axes[0].get_xscale() == "log" and fig.axes[0].get_yscale() == "log"


# ---- classification -------------------------------------------------------------------------------
def metrics_for(confusion: np.ndarray, f1: list[float]) -> dict:
    return {"accuracy": float(np.trace(confusion) / confusion.sum()), "macro_f1": float(np.mean(f1)),
            "micro_f1": float(np.trace(confusion) / confusion.sum()), "classes": CLASSES,
            "per_class": {c: {"precision": v, "recall": v, "f1": v, "specificity": 1.0, "support": 10}
                          for c, v in zip(CLASSES, f1)},
            "confusion_matrix": confusion.tolist()}


def two_seeds() -> list[dict]:
    a = np.diag([10, 10, 10, 10])
    b = np.diag([10, 10, 10, 8])
    b[3, 0] = 2
    return [metrics_for(a, [1.0, 1.0, 1.0, 1.0]), metrics_for(b, [0.9, 1.0, 1.0, 0.8])]


def test_confusion_mean_known_answer():
    share, counts = classification.confusion_mean(two_seeds())
    np.testing.assert_allclose(share.sum(axis=1), 1.0)
    assert share[3, 3] == pytest.approx(0.9) and share[3, 0] == pytest.approx(0.1)
    assert counts[3, 3] == 18 and counts[0, 0] == 20
    fig = classification.plot_confusion(share, counts, CLASSES, 2)
    assert_readable(fig)
    texts = {t.get_text() for t in fig.axes[0].texts}
    assert "90.0\n(18)" in texts and "10.0\n(2)" in texts and "100.0\n(20)" in texts


def test_per_class_f1_and_metrics_table():
    metrics = two_seeds()
    table = classification.per_class_table(metrics, [3, 7])
    assert len(table) == 8 and set(table["seed"]) == {3, 7}
    fig = classification.plot_per_class_f1(table, CLASSES)
    assert_readable(fig)
    summary = classification.metrics_summary(metrics, [3, 7]).set_index("metric")
    assert list(summary.columns) == ["seed 3", "seed 7", "mean", "ci_low", "ci_high"]
    assert summary.loc["F1 Alpha", "mean"] == pytest.approx(0.9)
    # two seeds, F1 of Alpha 1.0 and 0.8: mean 0.9, half width t(0.975, 1) * sd / sqrt(2) = 12.706 * 0.1
    assert summary.loc["F1 Alpha", "ci_high"] - 0.9 == pytest.approx(12.7062 * 0.1, rel=1e-4)
    assert summary.loc["F1 GH", "ci_low"] == pytest.approx(0.95 - 12.7062 * 0.05, rel=1e-4)
    page = classification.metrics_html(summary.reset_index())
    assert page.startswith("<!DOCTYPE html>") and "F1 Omicron" not in page and "F1 Alpha" in page


def test_training_curves_one_line_per_seed_and_panel():
    steps = np.arange(1, 41)
    log = pd.concat([pd.DataFrame({"seed": s, "step": steps, "epoch": (steps - 1) // 20,
                                   "loss": np.exp(-steps / 10) + s, "lr": 1e-3 * (1 - steps / 40)}) for s in (0, 1)])
    val = pd.DataFrame({"seed": [0, 0, 1, 1], "step": [20, 40, 20, 40], "val_loss": [0.5, 0.2, 1.5, 1.2]})
    fig = classification.plot_training_curves(log, val, smooth=5)
    assert_readable(fig)
    ax_loss, ax_lr = fig.axes
    assert [t.get_text() for t in ax_loss.get_legend().get_texts()] == ["seed 0", "seed 1", "validation loss (end of epoch)"]
    diamonds = np.concatenate([c.get_offsets() for c in ax_loss.collections])
    np.testing.assert_allclose(diamonds, val[["step", "val_loss"]].to_numpy())
    smoothed = [line for line in ax_loss.get_lines() if line.get_label() == "seed 1"][0]
    expected = pd.Series(np.exp(-steps / 10) + 1).rolling(5, min_periods=1).mean()
    np.testing.assert_allclose(smoothed.get_ydata(), expected)


# ---- cone index ---------------------------------------------------------------------------------------
def cone_all_seeds(layers=2, heads=3, seeds=(0, 1, 2)) -> pd.DataFrame:
    """An across-seed cone table built the way the workflow builds it: per-seed rows -> aggregate_seeds."""
    rng = np.random.default_rng(1)
    rows = []
    for seed in seeds:
        for layer in range(layers):
            for i, stage in enumerate(cone.STAGES):
                base = (layer * len(cone.STAGES) + i) / (layers * len(cone.STAGES))
                for scope in ("sequence", "pooled"):
                    rows.append((seed, "test", scope, "all", layer, stage, -1, "ours", "cone_normalised",
                                 base + 0.01 * rng.random()))
                rows.append((seed, "test", "sequence", "all", layer, stage, -1, "reference", "cone_index", 100 * base))
            for head in range(heads):
                rows.append((seed, "test", "sequence", "all", layer, "attention", head, "ours", "cone_normalised",
                             (layer * heads + head) / (layers * heads)))
                rows.append((seed, "test", "sequence", "all", layer, "attention", head, "reference", "cone_index",
                             float(layer * heads + head)))
    table = pd.DataFrame(rows, columns=["seed", "split", "scope", "class", "layer", "stage", "head", "variant",
                                        "measure", "value"])
    return aggregate_seeds(table, 0.95)


def test_cone_stream_follows_the_stream_order():
    table = cone_all_seeds()
    fig = cone.plot_cone_stream(table)
    assert_readable(fig)
    ax_ours, ax_ref = fig.axes
    line = [l for l in ax_ours.get_lines() if l.get_label() == "per sequence (mean)"][0]
    expected = table[(table["scope"] == "sequence") & (table["variant"] == "ours") & (table["head"] == -1)]
    expected = cone.stream_positions(expected)
    np.testing.assert_allclose(line.get_xdata(), np.arange(2 * len(cone.STAGES)))
    np.testing.assert_allclose(line.get_ydata(), expected["mean"])
    assert np.all(np.diff(line.get_ydata()) > 0)  # built increasing along the stream
    ref = [l for l in ax_ref.get_lines() if l.get_label() == "per sequence (mean)"][0]
    np.testing.assert_allclose(ref.get_ydata()[-1], 100 * (2 * len(cone.STAGES) - 1) / (2 * len(cone.STAGES)))
    assert [t.get_text() for t in ax_ref.get_xticklabels()] == ["0", "1"]


def test_cone_heads_grid_is_layer_by_head():
    table = cone_all_seeds()
    fig = cone.plot_cone_heads(table[table["stage"] == "attention"])
    assert_readable(fig)
    panels = {ax.get_title(): ax for ax in fig.axes if ax.get_title()}
    ours = panels["ours (real rows)"].collections[0].get_array().reshape(2, 3)
    np.testing.assert_allclose(ours, np.arange(6).reshape(2, 3) / 6)
    reference = panels["reference-compatible (all rows)"].collections[0].get_array().reshape(2, 3)
    np.testing.assert_allclose(reference, np.arange(6).reshape(2, 3))


# ---- distribution ----------------------------------------------------------------------------------
def distribution_all_seeds(layers=2) -> pd.DataFrame:
    rows = []
    ratios = np.array([0.5, 0.3, 0.1, 0.05])
    for seed in (0, 1):
        for layer in range(layers):
            for stage in ("input", "attn_ln", "output"):
                for pooling in ("cls", "mean"):
                    ids = (seed, "test", layer, stage, pooling, "all")
                    rows += [(*ids, "pca_explained_variance_ratio", k, r) for k, r in enumerate(ratios)]
                    rows += [(*ids, "probe_accuracy", -1, 0.5 + 0.2 * layer + 0.01 * seed),
                             (*ids, "probe_chance", -1, 0.25), (*ids, "silhouette", -1, 0.1 * layer)]
    table = pd.DataFrame(rows, columns=["seed", "split", "layer", "stage", "pooling", "class", "measure", "index",
                                        "value"])
    return aggregate_seeds(table, 0.95)


def test_pca_pareto_bars_and_cumulative_line():
    table = distribution_all_seeds()
    fig = distribution.plot_pca_pareto(table)
    assert_readable(fig)
    panels = [ax for ax in fig.axes if ax.get_visible() and ax.has_data()]
    assert [ax.get_title() for ax in panels] == ["embeddings", "layer 0", "layer 1"]
    for ax in panels:
        np.testing.assert_allclose([b.get_height() for b in ax.patches], [0.5, 0.3, 0.1, 0.05])
        cumulative = [line for line in ax.get_lines() if line.get_label() == "cumulative"][0]
        np.testing.assert_allclose(cumulative.get_ydata(), [0.5, 0.8, 0.9, 0.95])


def test_probe_silhouette_lines_are_the_means_along_the_stream():
    fig = distribution.plot_probe_silhouette(distribution_all_seeds())
    assert_readable(fig)
    ax_probe, ax_sil = fig.axes
    cls = [l for l in ax_probe.get_lines() if l.get_label() == "[CLS]"][0]
    np.testing.assert_allclose(cls.get_xdata(), [0, 1, 2])
    np.testing.assert_allclose(cls.get_ydata(), [0.505, 0.505, 0.705])  # embeddings = layer-0 input
    chance = [l for l in ax_probe.get_lines() if l.get_label() == "chance"][0]
    np.testing.assert_allclose(chance.get_ydata(), 0.25)
    assert [t.get_text() for t in ax_sil.get_xticklabels()] == ["emb", "0", "1"]
    undefined = distribution_all_seeds()
    undefined.loc[(undefined["stage"] == "input") & (undefined["pooling"] == "cls"), ["mean", "ci_low", "ci_high"]] = np.nan
    cls = [l for l in distribution.plot_probe_silhouette(undefined).axes[0].get_lines() if l.get_label() == "[CLS]"][0]
    assert np.isnan(cls.get_ydata()[0]) and cls.get_ydata()[1] == pytest.approx(0.505)  # a gap, not 0
    without_input = distribution_all_seeds().query("stage != 'input'")  # stats.distribution_stages may omit it
    ax_sil = distribution.plot_probe_silhouette(without_input).axes[1]
    assert [t.get_text() for t in ax_sil.get_xticklabels()] == ["0", "1"]


def test_embedding_scatter_every_sequence_once_per_panel():
    rng = np.random.default_rng(0)
    frames = []
    for layer in range(2):
        for stage in ("input", "output"):
            n = 12
            frames.append(pd.DataFrame({
                "split": "test", "layer": layer, "stage": stage, "pooling": "cls", "method": "pca",
                "seq_id": [f"s{i}" for i in range(n)], "label": np.arange(n) % 4, "correct": np.arange(n) != 5,
                "x": rng.normal(size=n), "y": rng.normal(size=n)}))
    fig = distribution.plot_embedding(pd.concat(frames), CLASSES, "pca", seed=7)
    assert_readable(fig)
    panels = [ax for ax in fig.axes if ax.get_visible() and ax.has_data()]
    assert len(panels) == 3  # embeddings, layer 0 output, layer 1 output (layer 1 input is not a stream point)
    for ax in panels:
        assert sum(len(c.get_offsets()) for c in ax.collections) == 12
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == CLASSES + ["misclassified"]
    assert "seed 7" in fig._suptitle.get_text()
    undefined = pd.concat(frames, ignore_index=True)
    undefined.loc[(undefined["layer"] == 0) & (undefined["stage"] == "input"), ["x", "y"]] = np.nan
    fig = distribution.plot_embedding(undefined, CLASSES, "pca", seed=7)  # embeddings: a degenerate cloud
    first = fig.axes[0]
    assert first.get_title() == "embeddings" and "undefined" in first.texts[0].get_text()
    assert not any(np.isfinite(np.ma.filled(c.get_offsets(), np.nan)).any() for c in first.collections)


# ---- attention -------------------------------------------------------------------------------------
def gates_table(seeds=(0, 1, 2), layers=2, heads=4) -> pd.DataFrame:
    rows = []
    labels = list(GATES) + ["none"]
    for seed in seeds:
        for layer in range(layers):
            for head in range(heads):
                gate = labels[(layer * heads + head) % len(labels)]
                if seed == 2 and (layer, head) == (0, 0):
                    gate = "open"  # one disagreement
                scores = {f"score_{g}": 0.1 for g in GATES}
                if gate in GATES:
                    scores[f"score_{gate}"] = 0.5 + 0.01 * head
                rows.append({"seed": seed, "layer": layer, "head": head, "gate": gate, **scores})
    return pd.DataFrame(rows)


def test_gate_grid_colours_and_agreement():
    table = gates_table()
    agreement = gate_agreement(table, head_matching(table, 0), table[table["seed"] == 0])
    fig = attention.plot_gate_grid(agreement, reference_seed=0)
    assert_readable(fig)
    ax = fig.axes[0]
    codes = np.asarray(ax.images[0].get_array())
    order = list(attention.GATE_COLOURS)
    assert order[int(codes[0, 0])] == "directional"  # 2 of 3 seeds
    assert order[int(codes[1, 3])] == "none"
    texts = {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_text() for t in ax.texts}
    assert texts[(0, 0)] == "67%" and texts[(1, 1)] == "all"
    assert "matched to seed 0" in ax.get_xlabel()


def test_row_gates_stacked_shares_per_head():
    labels = ["backward_contextual", "forward_contextual", "instance", "closed", "open", "multiple", "none"]
    rows = [{"layer": layer, "head": head, "label": label, "measure": "share", "n_seeds": 2,
             "mean": {"backward_contextual": 0.25, "open": 0.75}.get(label, 0.0) if head == 1 else float(label == "open")}
            for layer in range(2) for head in range(3) for label in labels]  # fmt: skip
    rows.append({"layer": 0, "head": 0, "label": "closed", "measure": "null_share", "mean": 0.5, "n_seeds": 2})
    fig = attention.plot_row_gates(pd.DataFrame(rows))
    assert_readable(fig)
    first = fig.axes[0]
    bars = {(round(p.get_x() + p.get_width() / 2), round(p.get_y(), 3), round(p.get_height(), 3)) for p in first.patches}
    assert (1, 0.0, 0.25) in bars and (1, 0.25, 0.75) in bars  # head 1: a quarter backward, then open
    assert (0, 0.0, 1.0) in bars and not any(b[0] == 0 and b[1] > 0 and b[2] > 0 for b in bars)


def test_k90_violins_one_violin_per_head():
    rng = np.random.default_rng(0)
    k90 = pd.concat([pd.DataFrame({"layer": layer, "head": head, "seq_id": "s0", "position": np.arange(30),
                                   "k90": rng.integers(1, 20, 30)}) for layer in range(3) for head in range(4)])
    fig = attention.plot_k90_violins(k90, seed=0)
    assert_readable(fig)
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert len(panels) == 3
    for ax in panels:
        assert len([c for c in ax.collections if c.get_paths()]) >= 4  # one violin body per head


def test_gallery_picks_the_best_head_of_each_gate():
    gates = gates_table(seeds=(0,))
    picks = attention.pick_gallery_heads(gates).set_index("gate")
    assert (picks.loc["directional", ["layer", "head"]] == [0, 0]).all()
    assert (picks.loc["open", ["layer", "head"]] == [0, 1]).all()
    assert picks.loc["closed", "label"] == "closed"
    no_label = gates.assign(gate="none")
    picks = attention.pick_gallery_heads(no_label).set_index("gate")
    assert (picks["label"] == "none").all()  # falls back to the highest score overall


def test_aa_ticks_known_positions():
    tmap = token_map(512, 12, 9, spike_domains(ROOT / "resources" / "variants.yaml")).to_pandas()
    ticks, labels, domains = attention.aa_ticks(tmap, 427)
    assert labels[:3] == ["1", "200", "400"] and ticks[:3] == [1, 68, 134]  # first t with aa_start(t) = 3(t - 1) + 1 >= mark
    centre = dict((name, position) for position, name in domains)
    assert set(centre) == set(attention.TICK_DOMAINS)
    assert 107 < centre["RBD"] < 181  # RBD = aa 319-541 = tokens 107..180


def test_gallery_from_files(tmp_path):
    gates = gates_table(seeds=(0,))
    write_parquet(gates, tmp_path / "gates.parquet")
    length = 20
    rows = [{"label": 2, "class": "Mu", "layer": layer, "head": head, "n_seqs": 0, "length": 0, "matrix": []}
            for layer in range(2) for head in range(4)]  # as the activations stage writes an empty class
    for label in range(2):
        for layer in range(2):
            for head in range(4):
                a = np.full((length, length), 1.0 / length, dtype=np.float32)
                a[:, head] += 1.0
                a /= a.sum(axis=1, keepdims=True)
                rows.append({"label": label, "class": CLASSES[label], "layer": layer, "head": head, "n_seqs": 3,
                             "length": length, "matrix": a.reshape(-1).tolist()})
    write_parquet(pd.DataFrame(rows), tmp_path / "class_attention.parquet")
    write_parquet(token_map(32, 12, 9, spike_domains(ROOT / "resources" / "variants.yaml")), tmp_path / "tm.parquet")
    inputs = SimpleNamespace(gates=str(tmp_path / "gates.parquet"), token_map=str(tmp_path / "tm.parquet"),
                             class_attention=str(tmp_path / "class_attention.parquet"))
    params = SimpleNamespace(classes=CLASSES, gallery_class=None, seed=0)
    assert "class GH" in attention.make_attention_gallery(inputs, params)._suptitle.get_text()  # first usable
    params.gallery_class = "Lambda"
    fig = attention.make_attention_gallery(inputs, params)
    assert_readable(fig)
    shown = [ax for ax in fig.axes if ax.images]
    assert len(shown) == len(GATES)
    first = np.asarray(shown[0].images[0].get_array())  # directional: layer 0 head 0 -> key 0 boosted
    assert first.shape == (length, length) and first[:, 0].min() > first[:, 1].max()
    assert "class Lambda" in fig._suptitle.get_text()
    params.gallery_class = "Zeta"
    with pytest.raises(ValueError, match="gallery_class"):
        attention.make_attention_gallery(inputs, params)
    params.gallery_class = "Mu"  # label 2: no matrices (no correctly classified sequence)
    with pytest.raises(ValueError, match="class Mu"):
        attention.make_attention_gallery(inputs, params)
    matrices = attention.read_class_matrices(inputs.class_attention, 1, [(1, 2)])
    assert list(matrices) == [(1, 2)]
    with pytest.raises(ValueError, match=r"\(5, 0\)"):
        attention.read_class_matrices(inputs.class_attention, 1, [(5, 0)])


def test_attention_entropy_layer_mean_over_heads_and_seeds(tmp_path):
    """From the across-seed table the workflow writes (aggregate_seeds), read as rule fig_attention_entropy reads it."""
    rows = [{"seed": s, "layer": layer, "head": h, "source": source, "measure": measure, "value": 0.1 * layer + 0.01 * h + 0.001 * s}
            for s in (0, 1, 2) for layer in range(3) for h in range(4) for source in ("all", "subset") for measure in ("entropy", "k90")]
    write_parquet(aggregate_seeds(pd.DataFrame(rows), 0.9), tmp_path / "attention_patterns.parquet")
    fig = attention.make_attention_entropy(SimpleNamespace(patterns=tmp_path / "attention_patterns.parquet"), SimpleNamespace(ci=0.9))
    assert_readable(fig)
    ax = fig.axes[0]
    line = [line for line in ax.get_lines() if line.get_label() == "mean over the layer's heads"][0]
    np.testing.assert_allclose(line.get_ydata(), [0.016, 0.116, 0.216])
    dots = [c for c in ax.collections if len(c.get_offsets()) == 12]  # one dot per head
    np.testing.assert_allclose(np.sort(dots[0].get_offsets()[:, 1]), np.sort([0.1 * layer + 0.01 * h + 0.001 for layer in range(3) for h in range(4)]))
    assert "3 seeds" in ax.get_title() and "90% CI" in ax.get_legend_handles_labels()[1][0]


def test_domain_attention_marks_heads_significant_in_every_seed():
    names = ["NTD", "RBD"]
    rows = []
    for seed in (0, 1):
        for layer in range(2):
            for head in range(3):
                for name in names:
                    significant = (name, layer, head) == ("RBD", 1, 2) or (seed == 0 and (layer, head) == (0, 0))
                    rows.append((seed, layer, head, name, "ratio", 2.0 if name == "RBD" else 0.5))
                    rows.append((seed, layer, head, name, "significant", 1.0 if significant else 0.0))
    table = pd.DataFrame(rows, columns=["seed", "layer", "head", "domain", "measure", "value"])
    fig = attention.plot_domain_attention(table, ["SP", "RBD", "NTD"])
    assert_readable(fig)
    rbd, ntd = [ax for ax in fig.axes if ax.get_visible() and ax.images]
    assert rbd.get_title() == "RBD" and ntd.get_title() == "NTD"  # the given order; SP absent
    np.testing.assert_allclose(np.asarray(rbd.images[0].get_array()), 1.0)  # log2(2)
    dots = rbd.collections[0].get_offsets()
    assert [tuple(d) for d in dots] == [(2.0, 1.0)]  # head 2, layer 1; (0, 0) only in one seed
    assert sum(len(c.get_offsets()) for c in ntd.collections) == 0


# ---- directionality -------------------------------------------------------------------------------------
def directionality_table(seeds=(0, 1), layers=2, heads=3) -> pd.DataFrame:
    """An across-seed directionality table as the workflow builds it: per-seed rows -> aggregate_seeds."""
    rows = []
    for seed in seeds:
        for layer in range(layers):
            for head in range(heads):
                x = (layer * heads + head) / (layers * heads)
                for variant, shift in (("ours", 0.0), ("original_code", 0.1)):
                    values = {"directionality_index": x + shift, "qk_asymmetry": x / 2, "eig_pos_mass": 0.5 + 0.01 * seed,
                              "angle_min": 10.0 + seed, "angle_median": 45.0 + shift * 100, "angle_max": 80.0}
                    rows += [(seed, layer, head, variant, m, v) for m, v in values.items()]
    return aggregate_seeds(pd.DataFrame(rows, columns=["seed", "layer", "head", "variant", "measure", "value"]), 0.95)


def test_directionality_index_heatmaps():
    fig = directionality.plot_directionality_index(directionality_table())
    assert_readable(fig)
    weights = fig.axes[0].collections[0].get_array().reshape(2, 3)
    np.testing.assert_allclose(weights, np.arange(6).reshape(2, 3) / 6)
    data_grid = fig.axes[1].collections[0].get_array().reshape(2, 3)
    np.testing.assert_allclose(data_grid, np.arange(6).reshape(2, 3) / 12)


def test_directionality_spectrum_layer_summaries():
    fig = directionality.plot_directionality_spectrum(directionality_table())
    assert_readable(fig)
    ax_eig, ax_ang = fig.axes
    mean = [l for l in ax_eig.get_lines() if l.get_label() == "layer mean"][0]
    np.testing.assert_allclose(mean.get_ydata(), [0.505, 0.505])
    smallest = [l for l in ax_ang.get_lines() if l.get_label() == "smallest"][0]
    np.testing.assert_allclose(smallest.get_ydata(), [10.5, 10.5])


def test_directionality_original_one_point_per_head():
    fig = directionality.plot_directionality_original(directionality_table())
    assert_readable(fig)
    points = np.concatenate([c.get_offsets() for c in fig.axes[0].collections])
    assert len(points) == 6
    np.testing.assert_allclose(points[:, 1] - points[:, 0], 0.1)  # original = ours + 0.1 by construction


# ---- entry point ------------------------------------------------------------------------------------
def test_draw_figure_writes_png_and_pdf(tmp_path):
    qc_path = tmp_path / "qc.tsv"
    qc_table().to_csv(qc_path, sep="\t", index=False)
    png, pdf = str(tmp_path / "out" / "data_qc.png"), str(tmp_path / "out" / "data_qc.pdf")
    draw = dict(inputs={"qc": str(qc_path)}, options={"classes": CLASSES}, png=png, pdf=pdf, dpi=60, context="paper",
                source="synthetic")  # fmt: skip
    draw_figure("data_qc", **draw)
    assert Path(png).read_bytes().startswith(PNG_SIGNATURE)
    assert Path(pdf).read_bytes().startswith(b"%PDF")
    with pytest.raises(ValueError, match="unknown figure id 'no_such_figure'"):
        draw_figure("no_such_figure", **draw)


# ---- README gallery -------------------------------------------------------------------------------------
def test_gallery_thumbnails(tmp_path):
    figures_dir = tmp_path / "figures"
    figures_dir.mkdir()
    for i, figure_id in enumerate(gallery.GALLERY):
        Image.new("RGB", (1800 + i, 600), "white").save(figures_dir / f"{figure_id}.png")
    written = gallery.make_gallery(figures_dir, tmp_path / "img", width=300)
    assert [p.stem for p in written] == gallery.GALLERY
    with Image.open(written[1]) as image:
        assert image.size == (300, round(600 * 300 / 1801))
    (figures_dir / "cone_stream.png").unlink()
    with pytest.raises(FileNotFoundError, match="cone_stream"):
        gallery.make_gallery(figures_dir, tmp_path / "img")
    assert set(gallery.GALLERY) <= {row["id"] for row in catalogue()}


# ---- registry and catalogue ------------------------------------------------------------------------
def non_figure_captions() -> set[str]:
    """Captions in report/ that are not a figure's: the report's front page and the captions of the
    hand-written rules (e.g. metrics_table)."""
    rules_text = "\n".join(p.read_text() for p in [ROOT / "Snakefile", *(ROOT / "rules").glob("*.smk")])
    return set(re.findall(r'(?:caption=|report: )"(?:\.\./)?report/(\w+)\.rst"', rules_text))


def test_registry_catalogue_and_captions_agree():
    ids = [figure.id for figure in registry.FIGURES]
    assert len(ids) == len(set(ids)) >= 19
    rows = catalogue()
    assert sorted(row["id"] for row in rows) == sorted(ids), "docs/figures.md and the registry differ"
    for row in rows:
        assert row["rule"] == f"fig_{row['id']}", row
        assert row["output"] == f"`results/figures/{row['id']}.png` `.pdf`", row
    captions = {p.stem for p in (ROOT / "report").glob("*.rst")}
    assert {"workflow", "metrics_table"} <= non_figure_captions()
    assert captions - non_figure_captions() == set(ids), "report/ captions and the registry differ"
    for figure in registry.FIGURES:
        assert (ROOT / figure.caption).stat().st_size > 100, figure.caption


def test_registry_entries_name_real_functions_keys_and_placeholders():
    schema = load_schema()
    keys = set(leaf_keys(schema))
    for figure in registry.FIGURES:
        assert re.fullmatch(r"[a-z0-9_]+", figure.id), figure
        assert callable(registry.drawing_function(figure.id)), figure
        assert re.fullmatch(r"\d\. [A-Z][\w -]+", figure.category) and figure.subcategory, figure
        for name, key in figure.params.items():
            assert key in keys and not execution_only(schema, key), (figure.id, name, key)
        asked = []
        inputs = registry.rule_inputs(figure, seeds=[3, 7], example_seed=7, config_file=asked.append)
        assert set(inputs) == set(figure.inputs), figure
        assert set(asked) <= keys, figure
    with pytest.raises(ValueError, match="unknown figure id 'no_such_figure'"):
        registry.drawing_function("no_such_figure")


def test_rule_inputs_fill_the_patterns():
    by_id = registry.REGISTRY
    files = {"data.variants": "/abs/variants.yaml"}
    inputs = registry.rule_inputs(by_id["domain_attention"], [3, 7], 7, files.get)
    assert inputs == {"domains": ["results/stats/seed3/finetuned/domain_attention.parquet",
                                  "results/stats/seed7/finetuned/domain_attention.parquet"],
                      "variants": "/abs/variants.yaml",
                      "matching": "results/stats/all_seeds/finetuned/head_matching.parquet"}  # fmt: skip
    inputs = registry.rule_inputs(by_id["attention_gallery"], [3, 7], 7, files.get)
    assert inputs["gates"] == "results/stats/seed7/finetuned/gates.parquet"
    assert inputs["token_map"] == "results/tokens/token_map.parquet"
    typo = registry.Figure("typo", "data.make_data_qc", "1. Data", "Data set", inputs={"qc": "seed{seeds}/qc.tsv"})
    with pytest.raises(ValueError, match=r"figure typo: input qc .*\['seeds'\]"):
        registry.rule_inputs(typo, [3], 3, files.get)


def test_figure_rules_are_generated_from_the_registry(tmp_path):
    result = snakemake(tmp_path, "--list-rules")
    rules = set(re.findall(r"^(\w+)", result.stdout, re.M))
    assert {r for r in rules if r.startswith("fig_")} == {f"fig_{i}" for i in registry.FIGURE_IDS}
    assert {"metrics_table", "all"} <= rules
