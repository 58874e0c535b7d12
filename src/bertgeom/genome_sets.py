"""Rules background and open_set_genomes: genomes outside the training data, as tokens.

Every record goes through the steps of the training data: its spike is cut out and checked with the
config qc settings (bertgeom.data.spike), then tokenized with the training vocabulary (results/tokens).
Shuffled spikes and random sequences (controls) are tokenized as they are: QC would reject them before
the model, and the open-set evaluation measures the detector itself. A record whose spike fails QC or
is too long for tokens.max_length is left out (counted in the log).

Output: a tokens parquet (docs/outputs.md: seq_id, class, label, lineage, input_ids, n_tokens) with a
`type` column: `background`; `fresh` and `calibration` (in-class genomes: class and label set); an
out-of-class lineage name, `reference`, `shuffled`, `random` (label -1, class empty).
- background (train input when train.outlier_weight > 0): config data.background genomes;
- open-set sets (config open_set): `threshold` (the `use: threshold` out-of-class lineages), `fresh`
  (in-class genomes with the training settings, other random streams), `calibration` (hard in-class
  genomes for temperature scaling), `evaluation` (the `use: evaluation` lineages, the variants.yaml
  classes missing from config classes, and the controls). How they are made: bertgeom.data.outofclass.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from itertools import chain
from typing import Iterable

import pandas as pd
import pyarrow as pa

from bertgeom.data.outofclass import background_genomes, calibration_genomes, control_sequences, out_of_class_genomes
from bertgeom.data.spike import SpikeExtractor
from bertgeom.io import provenance, write_parquet
from bertgeom.predict import QC_KEYS
from bertgeom.tokens import KmerTokenizer, max_sequence_length, split_table

log = logging.getLogger("bertgeom.genome_sets")
PathLike = str | os.PathLike
BARE_TYPES = ("shuffled", "random")  # tokenized without spike extraction
OPEN_SET_SETS = ("threshold", "fresh", "calibration", "evaluation")


def tokenized_set(records: Iterable[tuple[str, str, dict]], extractor, tokenizer: KmerTokenizer, kind: str) -> pa.Table:
    """The tokens table of records (seq_id, sequence, fields); `kind` is the type of records without one."""
    longest = max_sequence_length(tokenizer.max_length, tokenizer.k, tokenizer.stride)
    rows, rejected = [], Counter()
    for seq_id, sequence, fields in records:
        kind_of = fields.get("type", kind)
        spike = sequence
        if kind_of not in BARE_TYPES:
            res = extractor.extract(seq_id, sequence)
            if res.status != "pass" or res.length > longest:
                rejected[res.reason or "too_long"] += 1
                continue
            spike = res.sequence
        rows.append(
            {
                "seq_id": seq_id,
                "class": fields.get("class", ""),
                "label": fields.get("label", -1),
                "lineage": fields.get("lineage", ""),
                "type": kind_of,
                "sequence": spike,
            }
        )
    frame = pd.DataFrame(rows, columns=["seq_id", "class", "label", "lineage", "type", "sequence"])
    log.info("%s: %d sequences, left out (no usable spike): %s", kind, len(frame), dict(rejected) or "none")
    ids, n_tokens = tokenizer.encode(frame["sequence"].tolist(), frame["seq_id"].tolist())
    table = split_table(frame, ids, n_tokens)
    return table.append_column("type", pa.array(frame["type"].astype(str).tolist(), pa.string()))


def qc_extractor(reference: PathLike, qc: dict) -> SpikeExtractor:
    """The spike extractor of config qc (the keys it takes)."""
    return SpikeExtractor(reference, **{key: value for key, value in qc.items() if key in QC_KEYS})


def write_background(
    reference: PathLike,
    variants: PathLike,
    tokenizer_dir: PathLike,
    out: PathLike,
    classes: list[str],
    synthetic: dict,
    background: dict,
    seed: int,
    qc: dict,
) -> None:
    """Rule background: config data.background genomes (settings: config data.synthetic), as tokens."""
    records = background_genomes(reference, variants, classes, synthetic, seed, background["n"], background["keep_max"])
    table = tokenized_set(records, qc_extractor(reference, qc), KmerTokenizer.load(tokenizer_dir), "background")
    settings = {"classes": classes, "synthetic": synthetic, "background": background, "seed": seed, "qc": qc}
    write_parquet(table, out, provenance(settings, stage="background"))


def open_set_records(
    name: str, reference: PathLike, variants: PathLike, classes: list[str], synthetic: dict, open_set: dict, seed: int
) -> Iterable[tuple[str, str, dict]]:
    """The records of one set of OPEN_SET_SETS (module docstring); open_set: the config open_set keys it uses."""
    lineages = {**synthetic, "per_class": open_set.get("per_lineage")}
    if name == "threshold":
        return out_of_class_genomes(reference, variants, classes, "threshold", lineages, seed)
    if name == "fresh":
        return calibration_genomes(reference, variants, classes, {**synthetic, "per_class": open_set["fresh_per_class"]}, seed)
    if name == "calibration":
        return calibration_genomes(reference, variants, classes, synthetic, seed, hard=open_set["calibration"])
    if name == "evaluation":
        return chain(
            out_of_class_genomes(reference, variants, classes, "evaluation", lineages, seed),
            control_sequences(reference, open_set["controls"], seed),
        )
    raise ValueError(f"open-set genome set {name!r}: expected one of {OPEN_SET_SETS}")


def write_open_set_genomes(
    reference: PathLike,
    variants: PathLike,
    tokenizer_dir: PathLike,
    outputs: dict[str, PathLike],
    classes: list[str],
    synthetic: dict,
    open_set: dict,
    seed: int,
    qc: dict,
) -> None:
    """Rules open_set_fit_genomes and open_set_eval_genomes: the sets named in `outputs` ({name of
    OPEN_SET_SETS: parquet path}). synthetic: config data.synthetic without per_class (the open_set
    sizes replace it); open_set: the config open_set keys these sets use; seed: config data.seed."""
    extractor, tokenizer = qc_extractor(reference, qc), KmerTokenizer.load(tokenizer_dir)
    tables = {
        name: tokenized_set(
            open_set_records(name, reference, variants, classes, synthetic, open_set, seed), extractor, tokenizer, name
        )
        for name in outputs
    }  # every set is made before any is written
    settings = {"classes": classes, "synthetic": synthetic, "open_set": open_set, "seed": seed, "qc": qc}
    meta = provenance(settings, stage="open_set_genomes")
    for name, table in tables.items():
        write_parquet(table, outputs[name], meta)
