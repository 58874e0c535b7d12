"""Classify genomes or spike genes with a trained model, one batch of records at a time.

Each record goes through the steps of the training data: gaps stripped (aligned FASTA), the spike cut
out by alignment to NC_045512.2 (or taken as it is when the record is a spike gene), QC with the
settings the model was trained with (training_info.json), k-mer tokens of the model's own tokenizer,
then the model. With open_set.json in the model directory the answer is a class or `unassigned`
(bertgeom.openset) and the probabilities are temperature-scaled; without it every passing record
gets its most probable class and the raw softmax.
"""

from __future__ import annotations

import json
import logging
from itertools import islice
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import torch

from bertgeom.config import resolve_path
from bertgeom.data.fasta import FastaRecord
from bertgeom.openset import OPEN_SET_FILE, OpenSet, answer, layer_features
from bertgeom.tokens import n_kmers

log = logging.getLogger("bertgeom.predict")

DEFAULT_REFERENCE = "resources/NC_045512.2.fasta"
QC_KEYS = ("max_n_fraction", "allow_internal_stops", "max_length_change", "preset", "flank")
UNASSIGNED = "unassigned"


def training_settings(model_dir: Path) -> dict:
    """The config a model was trained with (training_info.json): its QC settings and reference are
    applied to new genomes, so a model directory without it is an error, not a silent default."""
    path = Path(model_dir) / "training_info.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"{model_dir}: not a trained model directory (missing training_info.json: the QC settings "
            f"and reference of the training run, which predict applies to new genomes)"
        )
    return json.loads(path.read_text()).get("config", {})


def find_reference(given: str | None, training_config: dict) -> Path:
    """--reference, else the training config's data.reference, from the working directory or (for
    `resources/...`) the package's copy."""
    name = given or training_config.get("data", {}).get("reference", DEFAULT_REFERENCE)
    path = resolve_path(name, ".")
    if path.is_file():
        return path
    raise FileNotFoundError(f"reference FASTA {name!r} not found; pass --reference PATH to NC_045512.2.fasta")


def columns(classes: list[str]) -> list[str]:
    """The columns of a prediction table, in order."""
    head = ["seq_id", "status", "prediction", "probability", "ood_score", "closest_class", "reason", "detail"]
    qc = ["gaps_removed", "length", "n_fraction", "strand", "unk_fraction"]
    return head + qc + [f"prob_{name}" for name in classes]


class Predictor:
    """A model directory ready to classify: model, tokenizer, spike extractor, open set (if any)."""

    def __init__(self, model_dir: str | Path, reference: str | None = None, device: str = "auto"):
        from bertgeom.data.spike import SpikeExtractor
        from bertgeom.model import load_model, select_device
        from bertgeom.tokens import KmerTokenizer

        model_dir = Path(model_dir)
        config = training_settings(model_dir)
        self.device = select_device(device, "--device")
        self.model = load_model(model_dir, self.device)
        self.tokenizer = KmerTokenizer.load(model_dir)
        self.classes = [self.model.config.id2label[i] for i in range(self.model.config.num_labels)]
        qc = {k: v for k, v in config.get("qc", {}).items() if k in QC_KEYS}
        self.extractor = SpikeExtractor(find_reference(reference, config), **qc)
        self.open_set = OpenSet.load(model_dir / OPEN_SET_FILE) if (model_dir / OPEN_SET_FILE).is_file() else None
        if self.open_set is not None and self.open_set.classes != self.classes:
            raise ValueError(f"{model_dir / OPEN_SET_FILE}: classes {self.open_set.classes} differ from the model's")

    def rows(self, records: Iterable[FastaRecord], batch_size: int = 32) -> Iterator[dict]:
        """One row (columns()) per record, in input order, `batch_size` records in memory at a time."""
        records = iter(records)
        while batch := list(islice(records, batch_size)):
            yield from self._batch(batch)

    def _batch(self, batch: list[FastaRecord]) -> list[dict]:
        rows = [self._check(record) for record in batch]
        passing = [i for i, row in enumerate(rows) if row["status"] == "pass"]
        if not passing:
            return rows
        spikes = [rows[i].pop("_spike") for i in passing]
        ids, n_tokens = self.tokenizer.encode(spikes, [rows[i]["seq_id"] for i in passing])
        kmers = (n_tokens - 2).clip(min=1)
        unk = ((ids == self.tokenizer.unk_id).sum(axis=1)) / kmers
        features, logits = layer_features(
            self.model, torch.from_numpy(ids), torch.from_numpy(n_tokens).long(), len(ids), self.device
        )
        got = answer(self.open_set, features, logits)
        for j, i in enumerate(passing):
            closest = self.classes[got.closest[j]]
            rows[i].update(
                prediction=closest if got.assigned[j] else UNASSIGNED,
                closest_class=closest,
                probability=float(got.probs[j].max()),
                ood_score=float(got.ood_score[j]),
                unk_fraction=float(unk[j]),
                **{f"prob_{name}": float(got.probs[j, c]) for c, name in enumerate(self.classes)},
            )
        return rows

    def _check(self, record: FastaRecord) -> dict:
        """The QC part of a row; a passing row carries its spike under "_spike"."""
        row = dict.fromkeys(columns(self.classes), "")
        row.update(seq_id=record.seq_id, gaps_removed=record.gaps, probability=np.nan, ood_score=np.nan)
        row.update(length=0, n_fraction=np.nan, strand=0, unk_fraction=np.nan)
        row.update({f"prob_{name}": np.nan for name in self.classes})
        if record.problem:
            row.update(status="reject", reason="invalid_record", detail=record.problem)
            return row
        res = self.extractor.extract(record.seq_id, record.sequence)
        row.update(status=res.status, reason=res.reason, detail=res.detail)
        row.update(length=res.length, n_fraction=res.n_fraction, strand=res.strand)
        tokens = int(n_kmers(res.length, self.tokenizer.k, self.tokenizer.stride)) + 2
        if res.status == "pass" and tokens > self.tokenizer.max_length:
            row.update(
                status="reject",
                reason="too_long",
                detail=f"{res.length} nt give {tokens} tokens > max_length {self.tokenizer.max_length}",
            )
        if row["status"] == "pass":
            row["_spike"] = res.sequence
        return row
