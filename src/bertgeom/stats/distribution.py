"""The distribution of the data along the information stream, per seed (issue 6).

Per layer and stage, the [CLS] vector (`cls`) and the mean over the real tokens (`mean`) of every
sequence form two clouds of points [sequences, hidden]. Measured on each: PCA explained variance
(the paper's Pareto charts), a cross-validated linear probe, the silhouette of the classes, norm
distributions, per-dimension mean and variance, outlier dimensions, IsoScore and the cone index of
the pooled vectors; and 2-D coordinates (PCA, t-SNE) for the scatter figures.

Memory: one layer at a time ([sequences, hidden] per stage and pooling), read in batches. Unlike the
cone index, a probe or a t-SNE needs every point of the cloud at once.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pyarrow.compute as pc
import pyarrow.parquet as pq
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.manifold import TSNE
from sklearn.metrics import silhouette_samples
from sklearn.model_selection import StratifiedKFold, cross_val_score
from threadpoolctl import threadpool_limits

from bertgeom.io import iter_batches, require_columns, to_matrix, write_parquet
from bertgeom.stats.cone import ALL, isoscore, normalised_cone, outlier_z, stats_provenance

log = logging.getLogger(__name__)

POOLINGS = {"cls": "cls_vec", "mean": "mean_vec"}
COLUMNS = ["seed", "split", "layer", "stage", "pooling", "class", "measure", "index", "value"]
EMBEDDING_COLUMNS = ["seed", "split", "layer", "stage", "pooling", "method", "seq_id", "label", "class", "correct", "x", "y"]
NORM_QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
TSNE_PCA_DIMS = 50  # t-SNE runs on the first 50 principal components (standard practice, faster)
RANDOM_STATE = 0  # fixed seed of the probe's folds, the t-SNE and its subsample


# ---------------------------------------------------------------------------------------------
# Measures of one cloud X [m, d] with labels y [m]
# ---------------------------------------------------------------------------------------------


def pca_explained(x: np.ndarray, components: int) -> np.ndarray:
    """Explained variance ratio of the first `components` principal components of x [m, d] -> [k]."""
    k = min(components, x.shape[0], x.shape[1])
    return PCA(n_components=k, svd_solver="full").fit(x).explained_variance_ratio_


def probe_accuracy(x: np.ndarray, y: np.ndarray, folds: int) -> tuple[float, float, int]:
    """Linear probe: mean and sd of the cross-validated accuracy and the number of folds used.

    Multinomial logistic regression (L2, C = 1) on x [m, d] centred and divided by one global scale
    (the rms distance to the centroid), not per dimension, so that a rotation of x leaves it unchanged.
    Stratified folds, at most the size of the smallest class; (nan, nan, 0) below 2 folds.
    """
    folds = min(folds, int(np.bincount(np.unique(y, return_inverse=True)[1]).min()))
    if folds < 2 or len(np.unique(y)) < 2:
        return float("nan"), float("nan"), 0
    centred = x - x.mean(axis=0)
    scaled = centred / max(np.sqrt((centred**2).sum(axis=1).mean()), 1e-12)
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=RANDOM_STATE)
    scores = cross_val_score(LogisticRegression(max_iter=2000), scaled, y, cv=splitter)
    return float(scores.mean()), float(scores.std()), folds


def chance_accuracy(y: np.ndarray) -> float:
    """Accuracy of always predicting the most frequent class."""
    return float(np.bincount(np.unique(y, return_inverse=True)[1]).max() / len(y))


def silhouette_by_class(x: np.ndarray, y: np.ndarray) -> dict:
    """Mean silhouette (euclidean) over all points (key ALL) and over each class's points (key label).

    Empty when it is undefined (fewer than 2 classes, or as many classes as points).
    """
    labels = np.unique(y)
    if not 2 <= len(labels) <= len(y) - 1:
        return {}
    samples = silhouette_samples(x, y)
    return {ALL: float(samples.mean()), **{label: float(samples[y == label].mean()) for label in labels}}


def norm_stats(x: np.ndarray) -> dict[str, float]:
    """norm_mean, norm_std and quantiles norm_q05 .. norm_q95 of the rows' euclidean norms."""
    norms = np.linalg.norm(x, axis=1)
    stats = {"norm_mean": float(norms.mean()), "norm_std": float(norms.std())}
    stats.update({f"norm_q{round(q * 100):02d}": float(np.quantile(norms, q)) for q in NORM_QUANTILES})
    return stats


def tsne_2d(x: np.ndarray, perplexity: float, n_jobs: int = 1) -> np.ndarray:
    """t-SNE coordinates [m, 2] (scikit-learn, fixed seed) of x [m, d] after PCA to <= 50 dims.

    The perplexity is lowered to (m - 1) / 3 when the cloud is too small for the one asked for.
    """
    m = len(x)
    reduced = PCA(n_components=min(TSNE_PCA_DIMS, m, x.shape[1]), random_state=RANDOM_STATE).fit_transform(x)
    usable = min(perplexity, (m - 1) / 3)
    if usable < perplexity:
        log.info("t-SNE on %d points: perplexity %.3g lowered to %.3g", m, perplexity, usable)
    tsne = TSNE(perplexity=usable, init="pca", random_state=RANDOM_STATE, n_jobs=n_jobs)
    # The Barnes-Hut gradient's OpenMP threads spin at every one of its ~1000 barriers: on a busy
    # machine 2 threads took 10-30x longer than 1 (30 points: 3-8 s instead of 0.2 s).
    with threadpool_limits(limits=1, user_api="openmp"):
        return tsne.fit_transform(reduced)


def tsne_subset(m: int, max_points: int) -> np.ndarray:
    """Row indices of the points that enter the t-SNE: all, or a fixed random sample of max_points."""
    if m <= max_points:
        return np.arange(m)
    return np.sort(np.random.default_rng(RANDOM_STATE).choice(m, max_points, replace=False))


# ---------------------------------------------------------------------------------------------
# Reading and the per-seed tables
# ---------------------------------------------------------------------------------------------


def load_layer(path: str, layer: int, stages: list[str], batch_rows: int) -> dict[tuple[str, str], dict]:
    """The pooled vectors of one layer: {(split, stage): {seq_id, label, correct [m], cls, mean [m, d]}}.

    Rows are sorted by seq_id so that results do not depend on the order of the file.
    """
    columns = ["seq_id", "split", "label", "correct", "layer", "stage", *POOLINGS.values()]
    wanted = (pc.field("layer") == layer) & pc.field("stage").isin(stages)
    parts: dict[tuple[str, str], list] = {}
    for batch in iter_batches(path, columns, batch_rows, filter=wanted):
        frame = pd.DataFrame({c: batch.column(c).to_pandas() for c in ("seq_id", "split", "label", "correct", "stage")})
        vectors = {p: to_matrix(batch.column(c)).astype(np.float32) for p, c in POOLINGS.items()}
        for key, rows in frame.groupby(["split", "stage"], sort=False, observed=True).indices.items():
            parts.setdefault(tuple(map(str, key)), []).append(
                {"frame": frame.iloc[rows], **{p: v[rows] for p, v in vectors.items()}}
            )
    clouds = {}
    for key, chunks in parts.items():
        frame = pd.concat([c["frame"] for c in chunks], ignore_index=True)
        order = np.argsort(frame["seq_id"].to_numpy(dtype=str), kind="stable")
        cloud = {c: frame[c].to_numpy()[order] for c in ("seq_id", "label", "correct")}
        cloud.update({p: np.concatenate([c[p] for c in chunks])[order] for p in POOLINGS})
        clouds[key] = cloud
    return clouds


def is_degenerate(x: np.ndarray) -> bool:
    """True when the points [m, d] (nearly) coincide: fewer than 2, or total variance ~ 0.

    It happens in real models: the [CLS] input of layer 0 is the same embedding for every sequence.
    PCA ratios, IsoScore and 2-D maps are undefined there (scikit-learn's t-SNE even crashed).
    """
    return len(x) < 2 or x.var(axis=0).sum() <= 1e-12 * (1.0 + (x**2).sum(axis=1).mean())


def cloud_measures(x: np.ndarray, y: np.ndarray, classes: list[str], options: dict) -> list[tuple]:
    """(class, measure, index, value) rows of one cloud x [m, d] with labels y [m] (index -1: scalar).

    A degenerate cloud (is_degenerate) gets no PCA rows, and NaN IsoScore, probe accuracy and
    silhouettes: they are undefined there (a probe of identical points scores the majority class,
    scikit-learn's silhouette of identical points is 0), not chance-level or 0.
    """
    degenerate = is_degenerate(x)
    rows: list[tuple] = [(ALL, "n", -1, len(x))]
    if degenerate:
        log.info("degenerate cloud (%d points, all (nearly) equal): PCA, IsoScore, probe and silhouette undefined (NaN)", len(x))
    else:
        ratios = pca_explained(x, options["pca_components"])
        rows += [(ALL, "pca_explained_variance_ratio", k, v) for k, v in enumerate(ratios)]
    accuracy, spread, folds = (np.nan, np.nan, 0) if degenerate else probe_accuracy(x, y, options["probe_folds"])
    rows += [(ALL, "probe_accuracy", -1, accuracy), (ALL, "probe_accuracy_std", -1, spread)]
    rows += [(ALL, "probe_folds", -1, folds), (ALL, "probe_chance", -1, chance_accuracy(y))]
    silhouettes = silhouette_by_class(x, y)
    for label, value in silhouettes.items():
        rows.append((label if label == ALL else classes[label], "silhouette", -1, np.nan if degenerate else value))
    means, variances = x.mean(axis=0, dtype=np.float64), x.var(axis=0, dtype=np.float64)
    z = outlier_z(means)
    outliers = np.flatnonzero(np.abs(z) > options["outlier_sigma"])
    rows += [(ALL, "dim_mean", j, v) for j, v in enumerate(means)] + [(ALL, "dim_var", j, v) for j, v in enumerate(variances)]
    rows += [(ALL, "outlier_z", int(j), z[j]) for j in outliers] + [(ALL, "n_outlier_dims", -1, len(outliers))]
    rows += [(ALL, "isoscore", -1, np.nan if degenerate else isoscore(x))]
    for label in [ALL, *np.unique(y)]:
        part = x if label == ALL else x[y == label]
        name = ALL if label == ALL else classes[label]
        if label != ALL:
            rows.append((name, "n", -1, len(part)))
        rows += [(name, m, -1, v) for m, v in norm_stats(part).items()]
        rows.append((name, "cone_normalised", -1, normalised_cone(part)))
    return rows


def embedding_rows(cloud: dict, x: np.ndarray, classes: list[str], options: dict, n_jobs: int) -> pd.DataFrame:
    """2-D coordinates of one cloud: PCA (all points) and t-SNE (tsne_subset of them).

    A degenerate cloud gets NaN coordinates (undefined: the figures leave a gap); a cloud too small
    for the method (PCA: 2 points and dimensions, t-SNE: 4 points) gets no rows.
    """
    frames = []
    chosen = tsne_subset(len(x), options["tsne_max_points"])
    usable = not is_degenerate(x)
    undefined = np.full((len(x), 2), np.nan)
    pcs = PCA(n_components=2, random_state=RANDOM_STATE).fit_transform(x) if usable and min(x.shape) >= 2 else None
    tsne = tsne_2d(x[chosen], options["tsne_perplexity"], n_jobs) if usable and len(chosen) >= 4 else None
    for method, coords, rows in (("pca", pcs, np.arange(len(x))), ("tsne", tsne, chosen)):
        if coords is None and not usable:
            log.info("2-D %s of %d points undefined (all (nearly) equal): NaN coordinates", method, len(rows))
            coords = undefined[rows]
        elif coords is None:
            log.warning("no 2-D %s: %d points, too few", method, len(rows))
            continue
        labels = cloud["label"][rows].astype(int)
        frames.append(
            pd.DataFrame(
                {
                    "method": method,
                    "seq_id": cloud["seq_id"][rows],
                    "label": labels,
                    "class": [classes[i] for i in labels],
                    "correct": pd.array(cloud["correct"][rows], dtype="boolean"),  # null: no classifier
                    "x": coords[:, 0],
                    "y": coords[:, 1],
                }
            )
        )
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=EMBEDDING_COLUMNS[5:])


def _layer_tables(summary, layer, classes, seed, options, n_jobs, rows, embeddings) -> None:
    """Append the distribution rows and 2-D coordinates of one layer (every split, stage, pooling)."""
    for (split, stage), cloud in load_layer(summary, layer, options["distribution_stages"], options["batch_rows"]).items():
        y = cloud["label"].astype(int)
        for pooling in POOLINGS:
            log.info("seed %d %s layer %d %s %s: %d points", seed, split, layer, stage, pooling, len(y))
            x = cloud[pooling].astype(np.float64)
            ids = (seed, split, layer, stage, pooling)
            rows += [(*ids, *row) for row in cloud_measures(x, y, classes, options)]
            frame = embedding_rows(cloud, x, classes, options, n_jobs)
            for name, value in zip(EMBEDDING_COLUMNS[:5], ids):
                frame.insert(EMBEDDING_COLUMNS.index(name), name, value)
            embeddings.append(frame)


def distribution_tables(summary: str, classes: list[str], seed: int, options: dict, n_jobs: int = 1):
    """(distribution table, embedding_2d table) of one seed from summary.parquet.

    options: config `stats` (distribution_stages, pca_components, probe_folds, outlier_sigma,
    tsne_perplexity, tsne_max_points, batch_rows).
    """
    require_columns(summary, ["layer", "stage", "label"])
    meta = pq.read_table(summary, columns=["layer", "stage", "label"])
    layers = np.unique(meta.column("layer").to_numpy())
    present = set(meta.column("stage").to_pylist())
    missing = [s for s in options["distribution_stages"] if s not in present]
    if missing:
        raise ValueError(f"{summary}: stats.distribution_stages {missing} not in the file's stages {sorted(present)}")
    labels = meta.column("label").to_numpy()
    if labels.min() < 0 or labels.max() >= len(classes):
        raise ValueError(f"{summary}: labels {labels.min()}..{labels.max()} outside config classes 0..{len(classes) - 1}")
    del meta
    rows, embeddings = [], []
    # BLAS and OpenMP would otherwise take every core of the machine, not the rule's threads.
    with threadpool_limits(limits=n_jobs):
        for layer in layers:
            _layer_tables(summary, int(layer), classes, seed, options, n_jobs, rows, embeddings)
    table = pd.DataFrame(rows, columns=COLUMNS).astype(
        {"seed": "int32", "layer": "int16", "index": "int32", "value": "float64"}
    )
    embedding = pd.concat(embeddings, ignore_index=True)[EMBEDDING_COLUMNS].astype(
        {"seed": "int32", "layer": "int16", "label": "int16", "x": "float32", "y": "float32"}
    )
    return table, embedding


def write_distribution(
    summary: str,
    distribution_out: str,
    embedding_out: str,
    classes: list[str],
    seed: int,
    options: dict,
    threads: int = 1,
) -> None:
    """Rule distribution: the distribution table and the 2-D embeddings of one seed.

    options: config `stats` keys pca_components, probe_folds, outlier_sigma, tsne_perplexity,
    tsne_max_points, distribution_stages, batch_rows.
    """
    table, embedding = distribution_tables(summary, classes, seed, options, threads)
    meta = stats_provenance({"classes": classes, "stats": options}, seed, summary)
    write_parquet(table, distribution_out, meta=meta)
    write_parquet(embedding, embedding_out, meta=meta)
    log.info("wrote %s (%d rows), %s (%d rows)", distribution_out, len(table), embedding_out, len(embedding))
