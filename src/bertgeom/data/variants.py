"""The vendored class definitions (resources/variants.yaml) and the reference genome."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import yaml

SPIKE_START = 21563  # 1-based, NC_045512.2
SPIKE_END = 25384  # inclusive, stop codon included


@dataclass(frozen=True)
class Domain:
    name: str
    start: int  # amino acid, 1-based inclusive
    end: int


@lru_cache(maxsize=8)
def load_variants(path: str | Path) -> dict:
    """variants.yaml as a dict; raises ValueError naming the file if it lacks the expected blocks."""
    with open(path) as handle:
        data = yaml.safe_load(handle)
    for key in ("label_order", "spike", "classes"):
        if not isinstance(data, dict) or key not in data:
            raise ValueError(f"{path}: not a variants file (missing top-level key {key!r})")
    return data


def class_definitions(path: str | Path, classes: list[str]) -> list[dict]:
    """The variants.yaml entries of `classes`, in that order; unknown names are an error."""
    by_name = {entry["name"]: entry for entry in load_variants(path)["classes"]}
    unknown = [name for name in classes if name not in by_name]
    if unknown:
        raise ValueError(f"{path}: unknown class name(s) {unknown}; known: {sorted(by_name)}")
    return [by_name[name] for name in classes]


def spike_domains(path: str | Path) -> list[Domain]:
    """Spike domains and subunits (SP, NTD, RBD, FP, HR1, HR2, TM, CT, S1, S2) in amino acids."""
    spike = load_variants(path)["spike"]
    return [Domain(d["name"], int(d["start"]), int(d["end"])) for d in spike["domains"] + spike["subunits"]]


def read_reference(path: str | Path) -> str:
    """The single sequence of a reference FASTA, uppercase."""
    lines = Path(path).read_text().splitlines()
    if not lines or not lines[0].startswith(">"):
        raise ValueError(f"{path}: expected a FASTA file starting with '>'")
    sequence = "".join(line.strip() for line in lines[1:] if not line.startswith(">")).upper()
    if not sequence:
        raise ValueError(f"{path}: empty reference sequence")
    return sequence
