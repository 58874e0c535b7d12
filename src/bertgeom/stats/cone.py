"""The cone index and the anisotropy measures compared with it, per seed (issue 6).

For the n real tokens x_1..x_n ([PAD] excluded) of one stage of one layer (DESIGN.md):

    I = || sum_i x_i / ||x_i|| ||                 cone index, 0 <= I <= n
    c = I / n                                      normalised cone index: 1 when all vectors share
                                                   one direction, about 1/sqrt(n) for random ones
    mean pairwise cosine = (I^2 - n) / (n (n - 1)) because ||sum_i u_i||^2 = n + sum_{i != j} u_i.u_j

The reference-compatible variant (the original analysis code) sums the unit vectors of all
max_length rows, [PAD] included, and does not divide by n. It exists only to compare with the
original numbers; it measures the padding as much as the sequence.

Everything a cloud needs is a sum over its vectors (`Moments`), so class- and dataset-level clouds
are built from per-sequence sums read in batches (the dump's summary and heads files, made by
bertgeom.measures.vector_stats): memory does not grow with the number of sequences.
docs/methods.md, "Geometry statistics", defines every identifier and measure of the output table.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Iterator

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from scipy.sparse.linalg import ArpackNoConvergence, eigsh

from bertgeom.hooks import HEAD_SOURCE, STAGES
from bertgeom.io import class_name, iter_batches, provenance, read_metadata, require_columns, to_matrix, write_parquet
from bertgeom.token_vectors import TokenFile

log = logging.getLogger(__name__)

EPS = 1e-12  # below this a vector has no direction: it adds nothing to sum_unit (but counts in n)
LANCZOS_MIN_DIM = 256  # top_eigenvalue: ARPACK from this dimension on, LAPACK below
WHOLE_LAYER = -1  # `head` of whole-layer stages
ALL = "all"  # `class` of rows pooled over every class
KEYS = ["split", "label", "layer", "stage", "head"]
M2 = "_m2"  # suffix of a group's sum of squared deviations about its mean (group_sums)
SPREADS = ("c", "ref")  # per-sequence values whose sample sd over the group's sequences is reported
COLUMNS = ["seed", "split", "scope", "class", "layer", "stage", "head", "variant", "measure", "value"]


# ---------------------------------------------------------------------------------------------
# Measures of one cloud of vectors (public: the attention statistics reuse them)
# ---------------------------------------------------------------------------------------------


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Each row divided by its length: [..., n, d] -> [..., n, d] float64 (zero rows stay zero)."""
    vectors = np.asarray(vectors, dtype=np.float64)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=-1, keepdims=True), EPS)


def cone_index(vectors: np.ndarray) -> np.ndarray | float:
    """Cone index I = ||sum_i x_i/||x_i|| || of vectors [n, d] (or [..., n, d] -> [...])."""
    return np.linalg.norm(unit_rows(vectors).sum(axis=-2), axis=-1)


def normalised_cone(vectors: np.ndarray) -> np.ndarray | float:
    """Normalised cone index c = I / n of vectors [n, d] (or [..., n, d] -> [...]), in [0, 1]."""
    vectors = np.asarray(vectors)
    if vectors.ndim < 2 or vectors.shape[-2] == 0:
        raise ValueError(f"normalised_cone: expected vectors [n >= 1, d], got shape {vectors.shape}")
    return cone_index(vectors) / vectors.shape[-2]


def cone_from_sums(sum_unit: np.ndarray, n: np.ndarray) -> np.ndarray:
    """c = ||sum_unit|| / n from sufficient statistics: sum_unit [..., d], n [...] -> c [...] (nan at n = 0)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.linalg.norm(np.asarray(sum_unit, dtype=np.float64), axis=-1) / np.asarray(n, dtype=np.float64)


def mean_cosine_from_cone(index: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Mean cosine over the n(n-1) ordered pairs i != j, (I^2 - n) / (n (n - 1)); nan where n < 2."""
    index = np.asarray(index, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(n >= 2, (index**2 - n) / (n * (n - 1)), np.nan)


def mean_pairwise_cosine(vectors: np.ndarray, chunk: int = 4096) -> float:
    """Mean cosine over pairs i != j of vectors [n, d], computed pair by pair (in row chunks).

    The direct O(n^2) computation, to check `mean_cosine_from_cone` and for small clouds.
    """
    units = unit_rows(vectors)
    n = len(units)
    if n < 2:
        raise ValueError(f"mean_pairwise_cosine: needs at least 2 vectors, got {n}")
    total = 0.0
    for start in range(0, n, chunk):
        block = units[start : start + chunk] @ units.T  # [chunk, n]
        rows = np.arange(block.shape[0])
        total += block.sum() - block[rows, start + rows].sum()  # drop the diagonal i = j
    return total / (n * (n - 1))


def isoscore_from_cov(cov: np.ndarray) -> float:
    """IsoScore (Rudman et al. 2022) of a covariance matrix [d, d], as in the `isoscore` package.

    With the covariance spectrum l (d values) scaled to ||l|| = sqrt(d), the isotropy defect is
    delta = ||l - 1|| / sqrt(2 (d - sqrt d)) and the score ((d - delta^2 (d - sqrt d))^2 - d) / (d (d - 1)):
    1 for an isotropic cloud, 0 when all variance lies along one direction. Rotation and scale
    invariant (a scatter matrix gives the same score). The spectrum enters only through
    sum l = trace and ||l|| = ||cov||_F (cov is symmetric), so ||scaled l - 1||^2 =
    2 d - 2 sqrt(d) trace / ||cov||_F: no eigendecomposition.
    """
    cov = np.asarray(cov, dtype=np.float64)
    d = cov.shape[0]
    length = np.sqrt(np.vdot(cov, cov))  # Frobenius = ||spectrum||
    if d < 2 or length == 0:
        return float("nan")
    defect2 = max(2 * d - 2 * np.sqrt(d) * np.trace(cov) / length, 0.0) / (2 * (d - np.sqrt(d)))
    return float(((d - defect2 * (d - np.sqrt(d))) ** 2 - d) / (d * (d - 1)))


def isoscore(vectors: np.ndarray) -> float:
    """IsoScore of vectors [n, d] (sample covariance)."""
    return isoscore_from_cov(np.cov(np.asarray(vectors, dtype=np.float64), rowvar=False))


def top_eigenvalue(cov: np.ndarray) -> float:
    """The largest eigenvalue of a symmetric positive semi-definite matrix [d, d].

    From d = LANCZOS_MIN_DIM on: ARPACK's Lanczos iteration on a float32 copy (its matrix-vector
    products read half the bytes), then the float64 Rayleigh quotient of the vector it finds; the
    relative error is below 1e-10 (tests, against LAPACK), in ~4 ms at d = 768 where LAPACK's
    eigvalsh takes ~30 ms and the SVD the old code used ~115 ms. LAPACK below that dimension, or
    when ARPACK does not converge.
    """
    cov = np.asarray(cov, dtype=np.float64)
    d = cov.shape[0]
    if d >= LANCZOS_MIN_DIM:
        start = np.random.default_rng(0).normal(size=d).astype(np.float32)
        try:
            _, vectors = eigsh(cov.astype(np.float32), k=1, which="LA", v0=start, tol=1e-6)
            vector = vectors[:, 0].astype(np.float64)
            return float(vector @ cov @ vector / (vector @ vector))
        except ArpackNoConvergence:
            log.info("ARPACK did not converge on a %d x %d matrix: full eigvalsh", d, d)
    return float(np.linalg.eigvalsh(cov)[-1])


def top_pc_share_from_cov(cov: np.ndarray) -> float:
    """Share of the total variance along the first principal component: lambda_max / trace."""
    total = float(np.trace(np.asarray(cov, dtype=np.float64)))
    return top_eigenvalue(cov) / total if total > 0 else float("nan")


def outlier_z(means: np.ndarray) -> np.ndarray:
    """z-score of each dimension's mean among all dimensions' means: means [d] -> z [d].

    A dimension is an outlier dimension when |z| > stats.outlier_sigma. Basis dependent by design:
    it names coordinates of the model's residual stream, so a rotation changes it.
    """
    means = np.asarray(means, dtype=np.float64)
    spread = means.std()
    return (means - means.mean()) / spread if spread > 0 else np.zeros_like(means)


# ---------------------------------------------------------------------------------------------
# Streaming sufficient statistics
# ---------------------------------------------------------------------------------------------


def merge_scatter(scatter_a, scatter_b, mean_a, mean_b, n_a: float, n_b: float):
    """The scatter (sum of squared deviations about the mean: a number, or sum of outer products
    [d, d] for vectors) of two groups as one, exactly (Chan, Golub & LeVeque 1979):
    S = S_a + S_b + (m_a - m_b)(m_a - m_b)^T n_a n_b / (n_a + n_b). Never sum x^2 - n m^2, which
    cancels catastrophically where the spread is tiny beside the mean."""
    if n_a == 0 or n_b == 0:
        return scatter_b if n_a == 0 else scatter_a
    delta = np.asarray(mean_a, dtype=np.float64) - np.asarray(mean_b, dtype=np.float64)
    merged = np.multiply.outer(delta, delta * (n_a * n_b / (n_a + n_b)))
    merged += scatter_a
    merged += scatter_b
    return merged


@dataclass
class Moments:
    """Sums over a cloud of vectors; clouds merge with `+`, so they can be streamed.

    n: vectors; sum_unit [d]: sum of x/||x||; sum_vec [d]: sum of x; sum_sq_norm: sum of ||x||^2;
    n_seqs: sequences; scatter [d, d]: sum of (x - mean)(x - mean)^T about the cloud's own mean, two
    pass within a block and merged exactly (`merge_scatter`); only when built from vectors.
    """

    n: float = 0.0
    sum_unit: np.ndarray | float = 0.0
    sum_vec: np.ndarray | float = 0.0
    sum_sq_norm: float = 0.0
    n_seqs: int = 0
    scatter: np.ndarray | None = field(default=None, repr=False)

    @classmethod
    def of_vectors(cls, vectors: np.ndarray, n_seqs: int = 0) -> "Moments":
        """The moments of vectors [m, d], covariance included, all in float64 (two pass: the
        reference the streamed `cloud_moments` is tested against)."""
        x = np.asarray(vectors, dtype=np.float64)
        centred = x - x.mean(axis=0)
        scatter = centred.T @ centred
        return cls(len(x), unit_rows(x).sum(axis=0), x.sum(axis=0), float((x * x).sum()), n_seqs, scatter)

    @property
    def mean(self) -> np.ndarray:
        return np.asarray(self.sum_vec, dtype=np.float64) / self.n

    def __add__(self, other: "Moments") -> "Moments":
        scatter = None
        if self.scatter is not None and other.scatter is not None:
            scatter = merge_scatter(self.scatter, other.scatter, self.mean, other.mean, self.n, other.n)
        return Moments(
            self.n + other.n,
            self.sum_unit + other.sum_unit,
            self.sum_vec + other.sum_vec,
            self.sum_sq_norm + other.sum_sq_norm,
            self.n_seqs + other.n_seqs,
            scatter,
        )

    def cov(self) -> np.ndarray:
        """Sample covariance [d, d] (divisor n - 1)."""
        if self.scatter is None or self.n < 2:
            raise ValueError(f"Moments.cov: needs vector sums of >= 2 vectors (n = {self.n})")
        return self.scatter / (self.n - 1)

    def cone_measures(self) -> dict[str, float]:
        """cone_index I, cone_normalised c, mean_cosine, n, n_seqs, centroid_norm, rms_norm."""
        index = float(np.linalg.norm(self.sum_unit))
        return {
            "cone_index": index,
            "cone_normalised": index / self.n,
            "mean_cosine": float(mean_cosine_from_cone(index, self.n)),
            "n": float(self.n),
            "n_seqs": float(self.n_seqs),
            "centroid_norm": float(np.linalg.norm(self.sum_vec)) / self.n,
            "rms_norm": float(np.sqrt(self.sum_sq_norm / self.n)),
        }

    def spectrum_measures(self, outlier_sigma: float) -> dict[str, float]:
        """isoscore, top_pc_share, total_variance (trace of the covariance) and n_outlier_dims
        (|z| of a dimension's mean > outlier_sigma). IsoScore and the top PC share are scale
        invariant, so they are taken of the scatter itself (cov = scatter / (n - 1))."""
        if self.scatter is None or self.n < 2:
            raise ValueError(f"Moments.spectrum_measures: needs vector sums of >= 2 vectors (n = {self.n})")
        z = outlier_z(self.mean)
        return {
            "isoscore": isoscore_from_cov(self.scatter),
            "top_pc_share": top_pc_share_from_cov(self.scatter),
            "total_variance": float(np.trace(self.scatter)) / (self.n - 1),
            "n_outlier_dims": float((np.abs(z) > outlier_sigma).sum()),
        }


def group_sums(keys: pd.DataFrame, values: dict[str, np.ndarray], spreads=()) -> Iterator[tuple[tuple, dict[str, np.ndarray]]]:
    """Sum `values` (arrays [rows, ...]) within each distinct row of `keys`: yields (key, {name: sum}).

    For each name in `spreads` (a value per row) also `<name>_m2`: the sum of squared deviations of
    the group's values about their mean (two pass), which `merge_sums` merges exactly.
    """
    codes, uniques = pd.MultiIndex.from_frame(keys).factorize()
    order = np.argsort(codes, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(codes[order]) != 0])
    sums = {name: np.add.reduceat(np.asarray(v)[order], starts, axis=0) for name, v in values.items()}
    group = np.cumsum(np.r_[True, np.diff(codes[order]) != 0]) - 1  # [rows]: each sorted row's group
    counts = np.diff(np.r_[starts, len(order)])
    for name in spreads:
        deviations = np.asarray(values[name])[order] - (sums[name] / counts)[group]
        sums[name + M2] = np.add.reduceat(deviations**2, starts)
    for i, code in enumerate(codes[order][starts]):
        yield tuple(uniques[code]), {name: s[i] for name, s in sums.items()}


def merge_sums(a: dict, b: dict) -> dict:
    """Two groups' sums (group_sums) as one group's: values add; `<v>_m2` merge by `merge_scatter`
    (per-sequence values v, counted by `seqs`)."""
    merged = {name: a[name] + b[name] for name in a if not name.endswith(M2)}
    for name in a:
        if name.endswith(M2):
            total = name[: -len(M2)]
            means = a[total] / a["seqs"], b[total] / b["seqs"]
            merged[name] = merge_scatter(a[name], b[name], *means, a["seqs"], b["seqs"])
    return merged


def _keys(batch, stage: str | None = None, head: int | None = None) -> pd.DataFrame:
    """The KEYS of each row of a batch as a DataFrame (constant stage/head where the file has none)."""
    frame = pd.DataFrame({name: batch.column(name).to_pandas() for name in KEYS if name in batch.schema.names})
    if stage is not None:
        frame["stage"] = stage
    if head is not None:
        frame["head"] = head
    frame["stage"] = frame["stage"].astype(str)
    return frame[KEYS]


def _accumulate(acc: dict, key: tuple, sums: dict) -> None:
    acc[key] = merge_sums(acc[key], sums) if key in acc else dict(sums)


# ---------------------------------------------------------------------------------------------
# The per-seed table
# ---------------------------------------------------------------------------------------------


def sequence_values(index: np.ndarray, n: np.ndarray, ref: np.ndarray) -> dict[str, np.ndarray]:
    """Per-sequence values summed per group for scope `sequence` (c and ref also spread: SPREADS)."""
    c = index / n
    return {"seqs": np.ones_like(n), "I": index, "c": c, "cos": mean_cosine_from_cone(index, n), "n": n, "ref": ref}


def read_vector_sums(path: str, batch_rows: int, per_head: bool) -> dict[tuple, dict]:
    """Group sums of summary.parquet (per_head False) or heads.parquet (True), keyed by KEYS."""
    columns = ["split", "label", "layer", "stage", "n", "sum_unit", "mean_vec", "sum_sq_norm", "cone_ref"]
    acc: dict[tuple, dict] = {}
    for i, batch in enumerate(iter_batches(path, columns + (["head"] if per_head else []), batch_rows)):
        n = batch.column("n").to_numpy().astype(np.float64)
        sum_unit = to_matrix(batch.column("sum_unit")).astype(np.float64)
        values = sequence_values(np.linalg.norm(sum_unit, axis=1), n, batch.column("cone_ref").to_numpy().astype(np.float64))
        values.update(
            sum_unit=sum_unit,
            sum_vec=to_matrix(batch.column("mean_vec")).astype(np.float64) * n[:, None],
            sum_sq_norm=batch.column("sum_sq_norm").to_numpy().astype(np.float64),
        )
        for key, sums in group_sums(_keys(batch, head=None if per_head else WHOLE_LAYER), values, SPREADS):
            _accumulate(acc, key, sums)
        log.info("%s: batch %d (%d rows)", path, i + 1, batch.num_rows)
    return acc


def read_attention_sums(path: str, batch_rows: int) -> dict[tuple, dict]:
    """Group sums of attention_summary.parquet (cone of each head's attention rows), stage `attention`."""
    columns = ["split", "label", "layer", "head", "n", "attn_cone", "attn_cone_ref"]
    acc: dict[tuple, dict] = {}
    for batch in iter_batches(path, columns, batch_rows):
        n = batch.column("n").to_numpy().astype(np.float64)
        index = batch.column("attn_cone").to_numpy().astype(np.float64) * n  # I = c n
        values = sequence_values(index, n, batch.column("attn_cone_ref").to_numpy().astype(np.float64))
        for key, sums in group_sums(_keys(batch, stage="attention"), values, SPREADS):
            _accumulate(acc, key, sums)
    return acc


def with_all_classes(acc: dict[tuple, object]) -> dict[tuple, object]:
    """Add, for every (split, layer, stage, head), the sum over labels under label ALL."""
    merged: dict[tuple, object] = dict(acc)
    for (split, _label, *rest), sums in acc.items():
        key = (split, ALL, *rest)
        if key not in merged:
            merged[key] = sums
        elif isinstance(sums, Moments):
            merged[key] = merged[key] + sums
        else:
            merged[key] = merge_sums(merged[key], sums)
    return merged


def _spread(scatter: float, count: float) -> float:
    """Sample standard deviation from the sum of squared deviations about the mean (nan below 2 values)."""
    if count < 2:
        return float("nan")
    return float(np.sqrt(scatter / (count - 1)))


def sequence_rows(sums: dict) -> list[tuple[str, str, str, float]]:
    """(scope, variant, measure, value) of scope `sequence`: means over the group's sequences."""
    k = sums["seqs"]
    ours = {
        "cone_index": sums["I"] / k,
        "cone_normalised": sums["c"] / k,
        "cone_normalised_std": _spread(sums["c" + M2], k),
        "mean_cosine": sums["cos"] / k,
        "n": sums["n"] / k,
        "n_seqs": k,
    }
    reference = {"cone_index": sums["ref"] / k, "cone_index_std": _spread(sums["ref" + M2], k), "n_seqs": k}
    return [("sequence", "ours", m, v) for m, v in ours.items()] + [
        ("sequence", "reference", m, v) for m, v in reference.items()
    ]


def pooled_rows(sums: dict) -> list[tuple[str, str, str, float]]:
    """(scope, variant, measure, value) of scope `pooled`: one cloud of all the group's tokens."""
    moments = Moments(sums["n"], sums["sum_unit"], sums["sum_vec"], float(sums["sum_sq_norm"]), int(sums["seqs"]))
    return [("pooled", "ours", m, v) for m, v in moments.cone_measures().items()]


def subset_moments(tokens: TokenFile, layer: int, stage: str, n_heads: int) -> dict[tuple, Moments]:
    """Moments (covariance included) of the subset's token vectors at one (layer, stage), keyed by
    KEYS (head -1); q/k/v/context also per head (context -> z; head h = columns h*d_head:(h+1)*d_head),
    whose scatter `head_scatters` later takes from the whole vectors'. Reads only this (layer,
    stage)'s row groups (bertgeom.token_vectors); memory is one row group and the covariances."""
    acc: dict[tuple, Moments] = {}
    for block in tokens.blocks(layer, stage, ["split", "label"]):
        columns = [block.table.column(name).to_pandas() for name in ("split", "label")]
        codes, uniques = pd.MultiIndex.from_arrays(columns).factorize()
        for code, (split, label) in enumerate(uniques):
            rows = codes == code
            sequences = np.unique(block.owner[rows])
            owner = np.searchsorted(sequences, block.owner[rows])
            whole, heads = cloud_moments(block.centers[sequences], block.deviations[rows], owner, n_heads)
            _add_moments(acc, (split, label, layer, stage, WHOLE_LAYER), whole)
            if stage in HEAD_SOURCE:
                for head, moments in enumerate(heads):
                    _add_moments(acc, (split, label, layer, HEAD_SOURCE[stage], head), moments)
    return acc


def cloud_moments(centers: np.ndarray, deviations: np.ndarray, owner: np.ndarray, n_heads: int) -> tuple[Moments, list[Moments]]:
    """Moments of the vectors x_i = centers[owner_i] + deviations_i (rows in sequence order, as a
    bertgeom.token_vectors.Block holds them), and of each head's column block (without scatter).

    The deviations from the cloud's mean, (center - mean) + deviation, are formed in float32 from a
    float64 difference and an exact float32 deviation: rounded relative to the spread, never to the
    norm; their products are summed by BLAS in float32 (~1e-6 relative) and kept in float64. The
    directions use x in float32. Nothing of size [rows, hidden] is float64.
    """
    n, k = len(owner), len(centers)
    counts = np.bincount(owner, minlength=k)
    starts = np.r_[0, np.cumsum(counts)[:-1]]
    means = centers + np.add.reduceat(deviations, starts, axis=0, dtype=np.float64) / counts[:, None]  # [seq, hidden]
    mean = counts @ means / n
    centred = (centers - mean).astype(np.float32)[owner] + deviations  # [rows, hidden]
    scatter = (centred.T @ centred).astype(np.float64)
    x = centers.astype(np.float32)[owner] + deviations
    sum_vec = mean * n
    whole = Moments(n, _unit_sum(x), sum_vec, float(np.trace(scatter) + n * mean @ mean), k, scatter)
    parts = x.reshape(n, n_heads, -1)  # [rows, head, d_head]
    units, width = _unit_sum(parts), parts.shape[-1]
    heads = []
    for h in range(n_heads):
        block = slice(h * width, (h + 1) * width)
        squares = float(np.trace(scatter[block, block]) + n * mean[block] @ mean[block])
        heads.append(Moments(n, units[h], sum_vec[block], squares, k))
    return whole, heads


def _unit_sum(x: np.ndarray) -> np.ndarray:
    """sum over rows of x / ||x|| (last axis; zero vectors add nothing), in x's dtype, summed in float64."""
    units = x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), EPS)
    return units.sum(axis=0, dtype=np.float64)


def head_scatters(acc: dict[tuple, Moments], n_heads: int) -> dict[tuple, Moments]:
    """Each head's scatter: the diagonal block of its whole-layer stage's (exact, merges included)."""
    filled = {}
    for (split, label, layer, stage, head), moments in acc.items():
        if head != WHOLE_LAYER and moments.scatter is None:
            source = next(s for s, h in HEAD_SOURCE.items() if h == stage)
            whole = acc[split, label, layer, source, WHOLE_LAYER].scatter
            block = slice(head * (len(whole) // n_heads), (head + 1) * (len(whole) // n_heads))
            moments = replace(moments, scatter=whole[block, block])
        filled[split, label, layer, stage, head] = moments
    return filled


def _add_moments(acc: dict, key: tuple, moments: Moments) -> None:
    acc[key] = acc[key] + moments if key in acc else moments


def subset_rows(moments: Moments, outlier_sigma: float) -> list[tuple[str, str, str, float]]:
    """(scope, variant, measure, value) of scope `subset`: token vectors of the stratified subset."""
    measures = moments.cone_measures()
    if moments.n >= 2:
        measures.update(moments.spectrum_measures(outlier_sigma))
    return [("subset", "ours", m, v) for m, v in measures.items()]


def _emit(rows: list, seed: int, key: tuple, measures: list, classes: list[str], path: str) -> None:
    split, label, layer, stage, head = key
    name = ALL if label == ALL else class_name(label, classes, path)
    for scope, variant, measure, value in measures:
        rows.append((seed, split, scope, name, int(layer), stage, int(head), variant, measure, float(value)))


def n_heads_of(heads_path: str, tokens_path: str) -> int:
    """Heads per layer: the width of tokens.parquet's vectors over that of heads.parquet's."""
    require_columns(tokens_path, ["delta"])
    d_head = pq.read_schema(heads_path).field("sum_unit").type.list_size
    hidden = pq.read_schema(tokens_path).field("delta").type.list_size
    if hidden % d_head:
        raise ValueError(f"{tokens_path}: vector width {hidden} is not a multiple of {heads_path}'s {d_head}")
    return hidden // d_head


def cone_table(
    summary: str,
    heads: str,
    attention: str,
    tokens: str,
    classes: list[str],
    seed: int,
    batch_rows: int = 8192,
    outlier_sigma: float = 3.0,
) -> pd.DataFrame:
    """The tidy cone-index table of one seed (columns COLUMNS; docs/methods.md, "Geometry statistics")."""
    rows: list[tuple] = []
    for path, acc in (
        (summary, read_vector_sums(summary, batch_rows, per_head=False)),
        (heads, read_vector_sums(heads, batch_rows, per_head=True)),
    ):
        for key, sums in with_all_classes(acc).items():
            _emit(rows, seed, key, sequence_rows(sums) + pooled_rows(sums), classes, path)
    for key, sums in with_all_classes(read_attention_sums(attention, batch_rows)).items():
        _emit(rows, seed, key, sequence_rows(sums), classes, attention)
    n_heads = n_heads_of(heads, tokens)
    subset = TokenFile(tokens)
    for layer, stage in sorted(subset.keys(), key=lambda key: (key[0], STAGES.index(key[1]))):
        log.info("%s: token subset, layer %d, %s", tokens, layer, stage)
        moments = head_scatters(with_all_classes(subset_moments(subset, layer, stage, n_heads)), n_heads)
        for key, cloud in moments.items():
            _emit(rows, seed, key, subset_rows(cloud, outlier_sigma), classes, tokens)
    table = pd.DataFrame(rows, columns=COLUMNS)
    table = table.astype({"seed": "int32", "layer": "int16", "head": "int16", "value": "float64"})
    return table.sort_values(COLUMNS[:-2], kind="stable").reset_index(drop=True)


def stats_provenance(config: dict, seed: int, source: str) -> dict:
    """The metadata block of a per-seed stats table: ours, plus the model named by its source file."""
    upstream = read_metadata(source)
    return provenance(config, seed=seed, source=str(source), **{k: upstream[k] for k in ("model_dir", "model_sha256") if k in upstream})


def write_cone_index(
    summary: str,
    heads: str,
    attention_summary: str,
    tokens: str,
    out: str,
    classes: list[str],
    seed: int,
    outlier_sigma: float,
    batch_rows: int = 8192,
) -> None:
    """Rule cone_index: the tidy cone-index table of one seed, written to `out`."""
    table = cone_table(summary, heads, attention_summary, tokens, classes, seed, batch_rows, outlier_sigma)
    meta = stats_provenance({"classes": classes, "outlier_sigma": outlier_sigma}, seed, summary)
    write_parquet(table, out, meta=meta)
    log.info("wrote %s (%d rows)", out, len(table))
