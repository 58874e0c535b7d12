"""Rule `download`: results/data/genomes.fasta and manifest.tsv from config data.source.

- synthetic: genomes made from the reference and the variants.yaml profiles (bertgeom.data.synthetic);
- ncbi: NCBI Datasets v2 (bertgeom.data.ncbi);
- fasta: the user's per-class FASTA files in config data.fasta (whole genomes or spike genes).
The manifest has one row per genome: MANIFEST_COLUMNS, then source-specific columns.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Iterable, Iterator

import pandas as pd

from bertgeom.data.fasta import read_fasta, write_fasta
from bertgeom.data.ncbi import ncbi_genomes
from bertgeom.data.synthetic import generate_class, homoplasy_pool
from bertgeom.data.variants import class_definitions, load_variants, read_reference
from bertgeom.io import atomic_path

log = logging.getLogger("bertgeom.data.download")

MANIFEST_COLUMNS = ["seq_id", "class", "lineage", "source", "release_date", "sha256", "origin", "synthetic"]
Record = tuple[str, str, dict]  # (seq_id, sequence, manifest fields)


def synthetic_genomes(
    classes: list[str], reference: str | os.PathLike, variants: str | os.PathLike, settings: dict, seed: int
) -> Iterator[Record]:
    """Synthetic genomes of every class (settings = config data.synthetic)."""
    sequence = read_reference(reference)
    for label, class_def in enumerate(class_definitions(variants, classes)):
        pool = homoplasy_pool(sequence, load_variants(variants), class_def["name"])
        genomes = generate_class(sequence, class_def, label, settings, seed, str(variants), pool)
        for genome in genomes:
            yield genome.seq_id, genome.sequence, synthetic_fields(genome, variants)


def synthetic_fields(genome, variants: str | os.PathLike) -> dict:
    """The manifest fields of a synthetic genome (docs/outputs.md)."""
    return {
        "class": genome.class_name,
        "lineage": genome.lineage,
        "source": "synthetic",
        "release_date": "",
        "origin": f"{Path(variants).name}:{genome.class_name}:profile{genome.profile}",
        "synthetic": True,
        "profile": genome.profile,
        "random_substitutions": genome.random_substitutions,
        "dropped": genome.dropped,
        "homoplasies": genome.homoplasies,
        "ambiguous": genome.ambiguous,
        "n_runs": len(genome.n_runs),
        "n_masked": sum(length for _, length in genome.n_runs),
        "trim_5p": genome.trim_5p,
        "trim_3p": genome.trim_3p,
        "spike_start": genome.spike_start,
        "spike_end": genome.spike_end,
    }


def check_fasta_config(classes: list[str], fasta: dict[str, str]) -> None:
    """config data.fasta must name one file for every class in config classes, and no other class."""
    if not fasta:
        raise ValueError(
            "config data.fasta is empty: data.source fasta needs one FASTA path per class, e.g. data.fasta: {Alpha: alpha.fasta.gz}"
        )
    unknown = [name for name in fasta if name not in classes]
    if unknown:
        raise ValueError(f"config data.fasta: class(es) {unknown} are not in config classes {classes}")
    missing = [name for name in classes if name not in fasta]
    if missing:
        raise ValueError(
            f"config data.fasta has no FASTA file for class(es) {missing}; give one per class in config classes"
        )


def fasta_genomes(classes: list[str], fasta: dict[str, str], strip_gaps: bool = False) -> Iterator[Record]:
    """The records of each class's FASTA file (ids must be unique across all the files); alignment
    gaps are an error unless `strip_gaps` (then removed)."""
    check_fasta_config(classes, fasta)
    origin_of: dict[str, str] = {}
    for name in classes:
        path = str(fasta[name])
        for seq_id, sequence in read_fasta(path, strip_gaps):
            if seq_id in origin_of:
                raise ValueError(
                    f"{path}: record id {seq_id!r} is also in {origin_of[seq_id]}; ids must be unique across data.fasta files"
                )
            origin_of[seq_id] = path
            yield seq_id, sequence, {
                "class": name,
                "lineage": "",
                "source": "fasta",
                "release_date": "",
                "origin": path,
                "synthetic": False,
            }


def write_tsv(frame: pd.DataFrame, path: str | os.PathLike) -> None:
    with atomic_path(path, ".tsv") as tmp:
        frame.to_csv(tmp, sep="\t", index=False)


def read_manifest(path: str | os.PathLike) -> pd.DataFrame:
    """manifest.tsv with every column as a string (empty cells as '')."""
    frame = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    missing = [c for c in MANIFEST_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: not a manifest (missing column(s) {missing})")
    return frame


def write_genomes(
    records: Iterable[Record], fasta_out: str | os.PathLike, manifest_out: str | os.PathLike
) -> pd.DataFrame:
    """Stream records to the FASTA file and write their manifest (sha256 of each sequence added)."""
    rows = []

    def sequences() -> Iterator[tuple[str, str]]:
        for seq_id, sequence, fields in records:
            rows.append({"seq_id": seq_id, **fields, "sha256": hashlib.sha256(sequence.encode()).hexdigest()})
            if len(rows) % 1000 == 0:
                log.info("%d genomes written", len(rows))
            yield seq_id, sequence

    write_fasta(fasta_out, sequences())
    manifest = pd.DataFrame(rows)
    manifest = manifest[MANIFEST_COLUMNS + [c for c in manifest.columns if c not in MANIFEST_COLUMNS]]
    manifest["synthetic"] = manifest["synthetic"].map({True: "true", False: "false"})
    write_tsv(manifest, manifest_out)
    for name, count in manifest["class"].value_counts(sort=False).items():
        log.info("class %s: %d genomes", name, count)
    return manifest


def download(
    fasta_out: str | os.PathLike,
    manifest_out: str | os.PathLike,
    reference: str | os.PathLike,
    variants: str | os.PathLike,
    classes: list[str],
    data: dict,
    fasta: dict[str, str] | None = None,
    cache_dir: str | os.PathLike | None = None,
    ncbi_run: dict | None = None,
) -> pd.DataFrame:
    """Make genomes.fasta and manifest.tsv for `data["source"]`.

    data: {"source", "seed", and the source's settings block: "synthetic" (config data.synthetic)
    or "ncbi" (config data.ncbi); for source fasta "strip_gaps" (config data.strip_gaps)};
    fasta: {class: path} for source fasta; ncbi_run: the NCBI
    client's execution settings (timeout_s, max_retries, batch_size).
    """
    source = data["source"]
    log.info("data.source %s, %d classes: %s", source, len(classes), classes)
    if source == "synthetic":
        records = synthetic_genomes(classes, reference, variants, data["synthetic"], data["seed"])
    elif source == "ncbi":
        cache_dir = cache_dir or Path(fasta_out).parent / "ncbi_cache"
        settings = {**data["ncbi"], **(ncbi_run or {})}
        records = ncbi_genomes(classes, class_definitions(variants, classes), settings, data["seed"], cache_dir)
    elif source == "fasta":
        records = fasta_genomes(classes, fasta or {}, data["strip_gaps"])
    else:
        raise ValueError(f"config data.source: unknown source {source!r} (expected synthetic, ncbi or fasta)")
    return write_genomes(records, fasta_out, manifest_out)
