"""Distribution of the pooled vectors: probe, PCA, silhouette, invariances, the per-seed tables."""

from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from threadpoolctl import threadpool_limits

from bertgeom.config import load_config
from bertgeom.io import fixed_size_list, read_metadata, write_parquet
from bertgeom.stats import distribution as dist

CLASSES = ["A", "B", "C", "D"]


@pytest.fixture(autouse=True)
def one_thread():
    """BLAS/OpenMP on one thread: the test machine is shared (as distribution_tables does itself)."""
    with threadpool_limits(limits=1):
        yield


def clusters(rng, per_class=30, d=12, spread=0.3):
    """Four well separated Gaussian clusters: x [4 * per_class, d], y [4 * per_class]."""
    centres = rng.normal(size=(len(CLASSES), d)) * 4
    y = np.repeat(np.arange(len(CLASSES)), per_class)
    return centres[y] + rng.normal(scale=spread, size=(len(y), d)), y


def test_probe_separates_clusters_and_is_at_chance_on_shuffled_labels():
    rng = np.random.default_rng(0)
    x, y = clusters(rng, per_class=50)
    accuracy, _, folds = dist.probe_accuracy(x, y, folds=5)
    assert accuracy == 1.0 and folds == 5
    shuffled = []
    for _ in range(4):
        accuracy, _, _ = dist.probe_accuracy(x, rng.permutation(y), folds=5)
        shuffled.append(accuracy)
    assert np.mean(shuffled) == pytest.approx(dist.chance_accuracy(y), abs=0.1)  # 0.25


def test_probe_folds_shrink_to_the_smallest_class():
    rng = np.random.default_rng(1)
    x, y = clusters(rng, per_class=3)
    assert dist.probe_accuracy(x, y, folds=5)[2] == 3
    assert np.isnan(dist.probe_accuracy(x[:5], np.array([0, 0, 0, 0, 1]), folds=5)[0])  # a class of one point


def test_pca_explained_variance_known_answer():
    # Points +-3 e1, +-2 e2, +-1 e3: variances 9 : 4 : 1 along the axes.
    axes = np.diag([3.0, 2.0, 1.0])
    x = np.vstack([axes, -axes])
    np.testing.assert_allclose(dist.pca_explained(x, 10), [9 / 14, 4 / 14, 1 / 14], rtol=1e-12)


def test_silhouette_and_norms():
    rng = np.random.default_rng(2)
    x, y = clusters(rng, spread=0.01)
    scores = dist.silhouette_by_class(x, y)
    assert set(scores) == {"all", 0, 1, 2, 3} and scores["all"] > 0.99
    mixed = dist.silhouette_by_class(rng.normal(size=(120, 12)), y)
    assert abs(mixed["all"]) < 0.05
    stats = dist.norm_stats(np.array([[3.0, 4.0], [0.0, 1.0], [6.0, 8.0]]))
    assert stats["norm_mean"] == pytest.approx(16 / 3) and stats["norm_q50"] == 5.0


def test_cloud_measures_are_rotation_invariant_except_per_dimension_ones():
    rng = np.random.default_rng(3)
    x, y = clusters(rng, spread=2.0)  # overlapping, so the probe is not trivially perfect
    q, r = np.linalg.qr(rng.normal(size=(12, 12)))
    options = {**load_config()["stats"], "probe_folds": 3}
    table = {(c, m, i): v for c, m, i, v in dist.cloud_measures(x, y, CLASSES, options)}
    rotated = {(c, m, i): v for c, m, i, v in dist.cloud_measures(x @ (q * np.sign(np.diag(r))), y, CLASSES, options)}
    per_dimension = {"dim_mean", "dim_var", "outlier_z", "n_outlier_dims"}
    for key, v in table.items():
        if key[1] not in per_dimension:
            assert rotated[key] == pytest.approx(v, rel=1e-6, abs=1e-9), key
    assert any(rotated.get(k) != pytest.approx(v) for k, v in table.items() if k[1] == "dim_mean")


def write_summary(path, rng, n_seqs=24, layers=2, stages=("input", "attn_ln", "output"), d=16):
    """A summary.parquet with the columns distribution reads; dimension 3 of mean_vec is an outlier,
    the [CLS] vectors of layer 0's input are all equal."""
    rows = {k: [] for k in ("seq_id", "split", "label", "pred", "correct", "layer", "stage")}
    cls, mean = [], []
    labels = np.arange(n_seqs) % len(CLASSES)
    for s in rng.permutation(n_seqs):  # file order differs from seq_id order
        for layer in range(layers):
            for stage in stages:
                for key, v in zip(rows, (f"seq{s:03d}", "test", labels[s], labels[s], True, layer, stage)):
                    rows[key].append(v)
                # layer 0's [CLS] input is one embedding for every sequence, as in a real model
                same = layer == 0 and stage == "input"
                cls.append(np.full(d, 0.5) if same else rng.normal(size=d) + 3 * labels[s] * (layer + 1))
                mean.append(rng.normal(size=d) * 0.1 + np.eye(d)[3] * 50)
    table = {k: pa.array(v, pa.int16()) if k in ("label", "pred", "layer") else pa.array(v) for k, v in rows.items()}
    table["cls_vec"] = fixed_size_list(np.array(cls, np.float16), pa.float16())
    table["mean_vec"] = fixed_size_list(np.array(mean, np.float32), pa.float32())
    write_parquet(pa.table(table), path, meta={"model_sha256": "m"})


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    path = tmp_path_factory.mktemp("dist") / "summary.parquet"
    write_summary(path, np.random.default_rng(4))
    options = {**load_config()["stats"], "tsne_perplexity": 5, "probe_folds": 3, "batch_rows": 17,
               "distribution_stages": ["input", "output"]}  # fmt: skip
    return str(path), options, *dist.distribution_tables(str(path), CLASSES, 3, options)


def test_distribution_table(tables):
    _, _, table, _ = tables
    assert list(table.columns) == dist.COLUMNS
    assert set(table["stage"]) == {"input", "output"} and set(table["layer"]) == {0, 1}
    assert set(table["pooling"]) == {"cls", "mean"}
    assert not table.duplicated(dist.COLUMNS[:-1]).any()
    pick = table[(table["layer"] == 1) & (table["stage"] == "output")]
    cls, mean = pick[pick["pooling"] == "cls"], pick[pick["pooling"] == "mean"]
    get = lambda t, m, c="all": t[(t["measure"] == m) & (t["class"] == c)]["value"]  # noqa: E731
    assert get(cls, "probe_accuracy").item() == 1.0  # labels shifted by 6 units per class
    assert get(cls, "n").item() == 24 and get(cls, "n", "B").item() == 6
    ratios = get(cls, "pca_explained_variance_ratio")
    assert len(ratios) == 10 and ratios.is_monotonic_decreasing and 0.9 < ratios.sum() < 1.0  # 10 of 16 PCs
    assert mean[mean["measure"] == "outlier_z"]["index"].tolist() == [3]  # the planted outlier dimension
    assert get(mean, "n_outlier_dims").item() == 1
    assert get(mean, "dim_mean").iloc[3] == pytest.approx(50, abs=0.1)


def test_embedding_table(tables):
    path, options, _, embedding = tables
    assert list(embedding.columns) == dist.EMBEDDING_COLUMNS
    one = embedding[(embedding["layer"] == 1) & (embedding["stage"] == "input") & (embedding["pooling"] == "cls")]
    for method in ("pca", "tsne"):
        part = one[one["method"] == method]
        assert part["seq_id"].tolist() == sorted(f"seq{s:03d}" for s in range(24))  # every sequence once
        assert (part["class"] == [CLASSES[i] for i in part["label"]]).all()
    again = dist.distribution_tables(path, CLASSES, 3, {**options, "batch_rows": 1000})[1]
    np.testing.assert_allclose(again["x"], embedding["x"], rtol=1e-5, atol=1e-4)  # fixed seed, order-free


def test_coinciding_points_are_undefined_not_zero(tables):
    """A degenerate cloud: PCA absent, IsoScore, probe, silhouettes and 2-D maps NaN (not chance, not 0)."""
    _, _, table, embedding = tables
    same = table[(table["layer"] == 0) & (table["stage"] == "input") & (table["pooling"] == "cls")]
    assert "pca_explained_variance_ratio" not in set(same["measure"])
    for measure in ("isoscore", "probe_accuracy", "probe_accuracy_std"):
        assert np.isnan(same[same["measure"] == measure]["value"].item()), measure
    silhouettes = same[same["measure"] == "silhouette"]
    assert len(silhouettes) == 1 + len(CLASSES) and silhouettes["value"].isna().all()
    assert same[(same["measure"] == "norm_std") & (same["class"] == "all")]["value"].item() == 0.0
    assert same[(same["measure"] == "cone_normalised") & (same["class"] == "all")]["value"].item() == pytest.approx(1.0)
    mapped = embedding[(embedding["layer"] == 0) & (embedding["stage"] == "input") & (embedding["pooling"] == "cls")]
    assert set(mapped["method"]) == {"pca", "tsne"} and mapped[["x", "y"]].isna().all().all()
    assert len(mapped[mapped["method"] == "pca"]) == 24  # every point, coordinates undefined
    other = embedding[(embedding["layer"] == 0) & (embedding["stage"] == "input") & (embedding["pooling"] == "mean")]
    assert other[["x", "y"]].notna().all().all()


def test_bad_stage_and_labels_raise(tables, tmp_path):
    path, options, _, _ = tables
    with pytest.raises(ValueError, match=r"distribution_stages \['ffn'\] not in the file"):
        dist.distribution_tables(path, CLASSES, 3, {**options, "distribution_stages": ["ffn"]})
    with pytest.raises(ValueError, match=r"labels 0\.\.3 outside config classes 0\.\.1"):
        dist.distribution_tables(path, CLASSES[:2], 3, options)


def test_run_writes_both_tables(tables, tmp_path):
    path, options, table, _ = tables
    out = {"distribution_out": str(tmp_path / "d.parquet"), "embedding_out": str(tmp_path / "e.parquet")}
    dist.write_distribution(path, **out, classes=CLASSES, seed=3, options={**options, "batch_rows": 50})
    out = SimpleNamespace(distribution=out["distribution_out"], embedding=out["embedding_out"])
    written = pq.read_table(out.distribution).to_pandas()
    np.testing.assert_allclose(written["value"], table["value"], rtol=1e-9, equal_nan=True)
    assert read_metadata(out.embedding)["model_sha256"] == "m"
