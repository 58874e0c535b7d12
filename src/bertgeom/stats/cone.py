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
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
import pandas as pd
import pyarrow.compute as pc
import pyarrow.parquet as pq

from bertgeom.hooks import HEAD_SOURCE
from bertgeom.io import class_name, iter_batches, provenance, read_metadata, require_columns, to_matrix, write_parquet

log = logging.getLogger(__name__)

EPS = 1e-12  # below this a vector has no direction: it adds nothing to sum_unit (but counts in n)
WHOLE_LAYER = -1  # `head` of whole-layer stages
ALL = "all"  # `class` of rows pooled over every class
KEYS = ["split", "label", "layer", "stage", "head"]
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
    1 for an isotropic cloud, 0 when all variance lies along one direction. Rotation invariant.
    """
    cov = np.asarray(cov, dtype=np.float64)
    d = cov.shape[0]
    spectrum = np.linalg.svd(cov, compute_uv=False)
    length = np.linalg.norm(spectrum)
    if d < 2 or length == 0:
        return float("nan")
    scaled = spectrum * np.sqrt(d) / length
    defect = np.linalg.norm(scaled - 1) / np.sqrt(2 * (d - np.sqrt(d)))
    return float(((d - defect**2 * (d - np.sqrt(d))) ** 2 - d) / (d * (d - 1)))


def isoscore(vectors: np.ndarray) -> float:
    """IsoScore of vectors [n, d] (sample covariance)."""
    return isoscore_from_cov(np.cov(np.asarray(vectors, dtype=np.float64), rowvar=False))


def top_pc_share_from_cov(cov: np.ndarray) -> float:
    """Share of the total variance along the first principal component: lambda_max / trace."""
    eigenvalues = np.linalg.eigvalsh(np.asarray(cov, dtype=np.float64))
    total = eigenvalues.sum()
    return float(eigenvalues[-1] / total) if total > 0 else float("nan")


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


@dataclass
class Moments:
    """Sums over a cloud of vectors; clouds merge by adding them (`+`), so they can be streamed.

    n: vectors; sum_unit [d]: sum of x/||x||; sum_vec [d]: sum of x; sum_sq_norm: sum of ||x||^2;
    outer [d, d]: sum of x x^T (only when built from vectors, for the covariance); n_seqs: sequences.
    """

    n: float = 0.0
    sum_unit: np.ndarray | float = 0.0
    sum_vec: np.ndarray | float = 0.0
    sum_sq_norm: float = 0.0
    n_seqs: int = 0
    outer: np.ndarray | None = field(default=None, repr=False)

    @classmethod
    def of_vectors(cls, vectors: np.ndarray, n_seqs: int = 0) -> "Moments":
        """The moments of vectors [m, d], covariance included."""
        x = np.asarray(vectors, dtype=np.float64)
        return cls(len(x), unit_rows(x).sum(axis=0), x.sum(axis=0), float((x * x).sum()), n_seqs, x.T @ x)

    def __add__(self, other: "Moments") -> "Moments":
        outer = None if self.outer is None or other.outer is None else self.outer + other.outer
        return Moments(
            self.n + other.n,
            self.sum_unit + other.sum_unit,
            self.sum_vec + other.sum_vec,
            self.sum_sq_norm + other.sum_sq_norm,
            self.n_seqs + other.n_seqs,
            outer,
        )

    def cov(self) -> np.ndarray:
        """Sample covariance [d, d] (divisor n - 1), from sum x x^T - n mean mean^T."""
        if self.outer is None or self.n < 2:
            raise ValueError(f"Moments.cov: needs vector sums of >= 2 vectors (n = {self.n})")
        mean = self.sum_vec / self.n
        return (self.outer - self.n * np.outer(mean, mean)) / (self.n - 1)

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
        """isoscore, top_pc_share and n_outlier_dims (|z| of a dimension's mean > outlier_sigma)."""
        cov = self.cov()
        z = outlier_z(self.sum_vec / self.n)
        return {
            "isoscore": isoscore_from_cov(cov),
            "top_pc_share": top_pc_share_from_cov(cov),
            "n_outlier_dims": float((np.abs(z) > outlier_sigma).sum()),
        }


def group_sums(keys: pd.DataFrame, values: dict[str, np.ndarray]) -> Iterator[tuple[tuple, dict[str, np.ndarray]]]:
    """Sum `values` (arrays [rows, ...]) within each distinct row of `keys`: yields (key, {name: sum})."""
    codes, uniques = pd.MultiIndex.from_frame(keys).factorize()
    order = np.argsort(codes, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(codes[order]) != 0])
    sums = {name: np.add.reduceat(np.asarray(v)[order], starts, axis=0) for name, v in values.items()}
    for i, code in enumerate(codes[order][starts]):
        yield tuple(uniques[code]), {name: s[i] for name, s in sums.items()}


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
    if key in acc:
        for name, value in sums.items():
            acc[key][name] = acc[key][name] + value
    else:
        acc[key] = dict(sums)


# ---------------------------------------------------------------------------------------------
# The per-seed table
# ---------------------------------------------------------------------------------------------


def sequence_values(index: np.ndarray, n: np.ndarray, ref: np.ndarray) -> dict[str, np.ndarray]:
    """Per-sequence values (and squares, for the spread) summed per group for scope `sequence`."""
    c = index / n
    return {
        "seqs": np.ones_like(n),
        "I": index,
        "c": c,
        "c2": c**2,
        "cos": mean_cosine_from_cone(index, n),
        "n": n,
        "ref": ref,
        "ref2": ref**2,
    }


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
        for key, sums in group_sums(_keys(batch, head=None if per_head else WHOLE_LAYER), values):
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
        for key, sums in group_sums(_keys(batch, stage="attention"), values):
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
            merged[key] = {name: merged[key][name] + value for name, value in sums.items()}
    return merged


def _spread(total: float, total_sq: float, count: float) -> float:
    """Sample standard deviation from the sum and the sum of squares (nan below 2 values)."""
    if count < 2:
        return float("nan")
    return float(np.sqrt(max(total_sq - total**2 / count, 0.0) / (count - 1)))


def sequence_rows(sums: dict) -> list[tuple[str, str, str, float]]:
    """(scope, variant, measure, value) of scope `sequence`: means over the group's sequences."""
    k = sums["seqs"]
    ours = {
        "cone_index": sums["I"] / k,
        "cone_normalised": sums["c"] / k,
        "cone_normalised_std": _spread(sums["c"], sums["c2"], k),
        "mean_cosine": sums["cos"] / k,
        "n": sums["n"] / k,
        "n_seqs": k,
    }
    reference = {"cone_index": sums["ref"] / k, "cone_index_std": _spread(sums["ref"], sums["ref2"], k), "n_seqs": k}
    return [("sequence", "ours", m, v) for m, v in ours.items()] + [
        ("sequence", "reference", m, v) for m, v in reference.items()
    ]


def pooled_rows(sums: dict) -> list[tuple[str, str, str, float]]:
    """(scope, variant, measure, value) of scope `pooled`: one cloud of all the group's tokens."""
    moments = Moments(sums["n"], sums["sum_unit"], sums["sum_vec"], float(sums["sum_sq_norm"]), int(sums["seqs"]))
    return [("pooled", "ours", m, v) for m, v in moments.cone_measures().items()]


def subset_moments(path: str, layer: int, n_heads: int, batch_rows: int) -> dict[tuple, Moments]:
    """Moments (covariance included) of the token-level subset at one layer, keyed by KEYS.

    Whole-layer stages get head -1; q/k/v/context are also split into heads (context -> z),
    head h being columns h*d_head:(h+1)*d_head. One layer at a time keeps memory to its covariances.
    """
    columns = ["split", "label", "layer", "stage", "position", "vec"]
    acc: dict[tuple, Moments] = {}
    batches = iter_batches(path, columns, batch_rows, filter=pc.field("layer") == layer)
    for batch in batches:
        vectors = to_matrix(batch.column("vec"))
        keys = _keys(batch, head=WHOLE_LAYER)
        starts = (batch.column("position").to_numpy() == 0).astype(np.int64)  # one [CLS] row per sequence
        codes, uniques = pd.MultiIndex.from_frame(keys).factorize()
        for code, key in enumerate(uniques):
            rows = np.flatnonzero(codes == code)
            x = vectors[rows].astype(np.float64)
            n_seqs = int(starts[rows].sum())
            _add_moments(acc, key, Moments.of_vectors(x, n_seqs))
            if key[3] in HEAD_SOURCE:
                for head, part in enumerate(np.split(x, n_heads, axis=1)):
                    _add_moments(acc, (*key[:3], HEAD_SOURCE[key[3]], head), Moments.of_vectors(part, n_seqs))
    return acc


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
    d_head = pq.read_schema(heads_path).field("sum_unit").type.list_size
    hidden = pq.read_schema(tokens_path).field("vec").type.list_size
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
    require_columns(tokens, ["layer"])
    layers = np.unique(pq.read_table(tokens, columns=["layer"]).column("layer").to_numpy())
    for layer in layers:
        log.info("%s: token subset, layer %d of %d", tokens, layer + 1, len(layers))
        for key, moments in with_all_classes(subset_moments(tokens, int(layer), n_heads, batch_rows)).items():
            _emit(rows, seed, key, subset_rows(moments, outlier_sigma), classes, tokens)
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
