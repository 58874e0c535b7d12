"""A finished run as the explorer sees it (tables read on demand), and `explore(results_dir)`: its
figures as Plotly objects for notebooks (also `bertgeom.explore`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go

from bertgeom.explorer import (FULL_SEQUENCES, MEASURES, POOL, Source, attention_figure, cone_figure, cone_stream,
                               describe_keys, head_grid_figure, head_values, k90_figure, k90_histogram,
                               lineage_mutations, missing_reason, model_view_figure, pool_matrix, read_sources,
                               token_axis, top_keys)  # fmt: skip
from bertgeom.checkpoints import CHECKPOINTS
from bertgeom.config import RESOURCES
from bertgeom.explorer_paths import cone_path, stage_paths
from bertgeom.figures.attention import TOKEN_MAP_COLUMNS
from bertgeom.figures.cone import CONE_COLUMNS
from bertgeom.figures.tables import read_parquet


class LazyFigures(Mapping):
    """{key: figure}, each figure drawn when first read (matrix figures are large)."""

    def __init__(self, keys, draw):
        self._keys, self._draw, self._cache = list(keys), draw, {}

    def __getitem__(self, key):
        if key not in self._keys:
            raise KeyError(key)
        if key not in self._cache:
            self._cache[key] = self._draw(*key)
        return self._cache[key]

    def __iter__(self):
        return iter(self._keys)

    def __len__(self):
        return len(self._keys)


@dataclass
class Run:
    """The tables of one finished run that the explorer shows, read on demand."""

    results: Path
    seeds: list[int]
    checkpoints: list[str]
    example_seed: int
    variants: Path | None = None
    top_k: int = 5

    def __post_init__(self):
        self.results = Path(self.results)
        self.token_map = read_parquet(self.results / "tokens" / "token_map.parquet", TOKEN_MAP_COLUMNS)
        splits = [self.results / "tokens" / f"{s}.parquet" for s in ("train", "val", "test")]
        frames = [read_parquet(p, ["seq_id", "lineage"]) for p in splits if p.exists()]
        self.lineages = dict(pd.concat(frames).itertuples(index=False)) if frames else {}
        self._sources: dict = {}

    def missing(self, checkpoint: str, seed: int) -> str | None:
        return missing_reason(list(stage_paths(self.results, seed, checkpoint).values()), checkpoint, seed)

    def head_values(self, checkpoint: str, seed: int) -> pd.DataFrame:
        paths = stage_paths(self.results, seed, checkpoint)
        return head_values(read_parquet(paths["gates"]), read_parquet(paths["attention_patterns"]),
                           read_parquet(paths["directionality"]))

    def k90(self, checkpoint: str, seed: int) -> dict:
        k90 = read_parquet(stage_paths(self.results, seed, checkpoint)["k90"], ["layer", "head", "k90"])
        return k90_histogram(k90, int(self.token_map["position"].max()) + 1)

    def sources(self, checkpoint: str, seed: int) -> dict[str, Source]:
        """{source id: source} of one checkpoint and seed, full resolution (the last two read are kept)."""
        key = (checkpoint, seed)
        if key not in self._sources:
            paths = stage_paths(self.results, seed, checkpoint)
            self._sources = {**dict(list(self._sources.items())[-1:]),
                             key: {s.id: s for s in read_sources(paths, self.lineages, FULL_SEQUENCES)}}
        return self._sources[key]

    def full_checkpoint(self) -> str | None:
        """The checkpoint whose sequences are shown at full resolution: the example seed's last analysed
        one (training order; usually finetuned)."""
        analysed = [c for c in self.checkpoints if not self.missing(c, self.example_seed)]
        return analysed[-1] if analysed else None

    def factor(self, checkpoint: str, seed: int, source: Source) -> int:
        """Pooling of a shown matrix: full resolution (1) for the example seed's class averages at every
        checkpoint and its sequences at full_checkpoint, else POOL (keeps the page under 30 MB)."""
        if seed != self.example_seed:
            return POOL
        return 1 if source.is_average or checkpoint == self.full_checkpoint() else POOL

    def cone(self) -> go.Figure:
        streams, missing = {}, {}
        for checkpoint in self.checkpoints:
            path = cone_path(self.results, checkpoint)
            reason = missing_reason([path], checkpoint, None)
            if reason:
                missing[checkpoint] = reason
            else:
                streams[checkpoint] = cone_stream(read_parquet(path, CONE_COLUMNS))
        return cone_figure(streams, missing)

    def describe(self, source: Source, layer: int, head: int) -> list[dict]:
        """The top keys of one head's full-resolution matrix, with amino acids and lineage mutations."""
        mutations = lineage_mutations(self.variants, source.class_name, source.lineage) if self.variants else {}
        n_profiles = max(mutations.values(), default=1) if source.lineage is None else 1
        keys = top_keys(source.matrices[(layer, head)], self.top_k)
        return describe_keys(keys, self.token_map, mutations, n_profiles)


def matrix_title(checkpoint: str, seed: int, source: Source, layer: int, head: int, factor: int) -> str:
    pooled = "" if factor == 1 else f" (pooled {factor}x{factor})"
    return f"Layer {layer}, head {head}: {source.name}<br><sub>checkpoint {checkpoint}, seed {seed}{pooled}</sub>"


def discover_seeds(results) -> list[int]:
    """The seeds with a stats folder under `results` (seed{seed})."""
    found = [p.name[4:] for p in (Path(results) / "stats").glob("seed*") if p.name[4:].isdigit()]
    return sorted(int(s) for s in found)


def default_variants() -> Path | None:
    path = RESOURCES / "variants.yaml"  # package data: found without the checkout too
    return path if path.exists() else None


def explore(results_dir, seeds=None, checkpoints=CHECKPOINTS, example_seed=None, variants=None, top_k=5) -> dict:
    """The explorer's figures of a finished run, for notebooks: {"head_grid": {(checkpoint, seed,
    measure): fig}, "k90": {(checkpoint, seed, layer, head): fig}, "attention": {(checkpoint, seed,
    source id, layer, head): fig}, "model_view": {(checkpoint, seed, source id, layer): fig}, "cone": fig,
    "missing": {(checkpoint, seed): why}, "top_keys": {(checkpoint, seed, source id, layer, head): rows}}.
    Matrix figures are drawn when first read. seeds: default every seed under results/stats;
    variants: default the package's resources/variants.yaml (lineage mutations of the top keys)."""
    seeds = discover_seeds(results_dir) if seeds is None else list(seeds)
    run = Run(Path(results_dir), seeds, list(checkpoints), seeds[0] if example_seed is None else example_seed,
              default_variants() if variants is None else Path(variants), top_k)
    present = [(c, s) for c in run.checkpoints for s in seeds if not run.missing(c, s)]
    figures = {"cone": run.cone(), "missing": {(c, s): run.missing(c, s) for c in run.checkpoints for s in seeds
                                               if run.missing(c, s)}}  # fmt: skip
    figures["head_grid"] = {(c, s, m): head_grid_figure(run.head_values(c, s), m, f"{MEASURES[m]}: checkpoint {c}, seed {s}")
                            for c, s in present for m in MEASURES}  # fmt: skip
    figures["k90"] = {(c, s, layer, head): k90_figure(x, y, f"K90 of layer {layer}, head {head}")
                      for c, s in present for (layer, head), (x, y) in run.k90(c, s).items()}  # fmt: skip
    keys = [(c, s, src.id, *lh) for c, s in present for src in read_sources(stage_paths(run.results, s, c), {},
                                                                            FULL_SEQUENCES, with_matrices=False)
            for lh in src.matrices]  # fmt: skip

    def attention(c, s, sid, layer, head):
        source = run.sources(c, s)[sid]
        factor = run.factor(c, s, source)
        matrix = pool_matrix(source.matrices[(layer, head)], factor)
        axis = token_axis(run.token_map, source.n, factor)
        return attention_figure(matrix, axis, matrix_title(c, s, source, layer, head, factor))

    def model_view(c, s, sid, layer):
        source = run.sources(c, s)[sid]
        n_heads = 1 + max(h for _, h in source.matrices)
        return model_view_figure([source.matrices.get((layer, h)) for h in range(n_heads)],
                                 f"Layer {layer}, every head: {source.name} (checkpoint {c}, seed {s})")

    def described(c, s, sid, layer, head):
        return run.describe(run.sources(c, s)[sid], layer, head)

    figures["attention"] = LazyFigures(keys, attention)
    figures["top_keys"] = LazyFigures(keys, described)
    figures["model_view"] = LazyFigures(sorted({k[:4] for k in keys}), model_view)
    return figures
