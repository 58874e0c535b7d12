"""Genomes the classifier never trains on: out-of-class lineages, controls, and a hard calibration set.

- out-of-class lineages: synthetic genomes of the `out_of_class` lineages of variants.yaml with the
  chosen `use` ("threshold": may choose the open-set threshold; "evaluation": only measure it). For
  "evaluation", the variants.yaml classes missing from config `classes` are out of class too (each
  one type, all its profiles);
- controls (evaluation only): the reference genome NC_045512.2 itself; shuffled spikes (the reference
  spike's codons in random order, ATG first and the stop codon last: composition and frame kept, order
  gone); random sequences (uniform A/C/G/T, spike length);
- background genomes (for outlier exposure in training): the reference carrying only a small share
  u ~ Uniform(0, keep_max) of a random class profile's substitutions and indels, with the training
  variety on top: genomes that lack the evidence of every class (the training genomes keep at least
  1 - drop_max = 90% of theirs). No out-of-class lineage of variants.yaml is used, so the threshold
  and evaluation lineages stay unseen;
- calibration genomes: in-class genomes made with the settings of config open_set.calibration (more
  private, dropped and recurrent mutations than training), from other random streams than the training
  genomes; and fresh in-class genomes with the training settings (other streams too), which help
  choose the open-set threshold.

Every generator is deterministic in its seed. Records are (seq_id, sequence, fields) like
bertgeom.data.download's, with `type` (what kind of out-of-class genome) in the fields.
"""

from __future__ import annotations

import os
from typing import Iterator

import numpy as np

from bertgeom.data.synthetic import generate_class, homoplasy_pool
from bertgeom.data.variants import SPIKE_END, SPIKE_START, class_definitions, load_variants, read_reference

PathLike = str | os.PathLike
USES = ("threshold", "evaluation")
CONTROL_TYPES = ("reference", "shuffled", "random")
_STREAM = {
    "calibration": 10_000,
    "threshold": 20_000,
    "evaluation": 30_000,
    "controls": 40_000,
    "in_class": 50_000,
    "background": 60_000,
}  # seed offsets


def out_of_class_definitions(variants: str | os.PathLike, classes: list[str], use: str) -> list[dict]:
    """Pseudo class entries ({name, profiles}) of the out-of-class lineages with this `use`."""
    if use not in USES:
        raise ValueError(f"out-of-class use {use!r}: expected one of {USES}")
    data = load_variants(variants)
    block = data.get("out_of_class", {}).get("lineages", [])
    entries = [{"name": p["lineage"], "profiles": [p]} for p in block if p.get("use") == use]
    if use == "evaluation":
        entries += [c for c in data["classes"] if c["name"] not in classes]
    if not entries:
        raise ValueError(f"{variants}: no out_of_class lineage with use {use!r}")
    return entries


def out_of_class_genomes(
    reference: str | os.PathLike, variants: str | os.PathLike, classes: list[str], use: str, settings: dict, seed: int
) -> Iterator[tuple[str, str, dict]]:
    """`settings["per_class"]` synthetic genomes per out-of-class lineage (settings as data.synthetic)."""
    sequence = read_reference(reference)
    for i, entry in enumerate(out_of_class_definitions(variants, classes, use)):
        pool = homoplasy_pool(sequence, load_variants(variants), entry["name"])
        for genome in generate_class(
            sequence, entry, _STREAM[use] + i, settings, seed, str(variants), pool, prefix=f"ooc-{use}"
        ):
            yield genome.seq_id, genome.sequence, {"type": entry["name"], "lineage": genome.lineage, "use": use}


def calibration_genomes(
    reference: PathLike, variants: PathLike, classes: list[str], settings: dict, seed: int, hard: dict | None = None
) -> Iterator[tuple[str, str, dict]]:
    """In-class genomes the model never saw (settings: config data.synthetic): with `hard` (config
    open_set.calibration: per_class and the variety that overrides `settings`) for temperature scaling,
    or with `settings` as they are (hard=None) for choosing the open-set threshold."""
    sequence = read_reference(reference)
    stream, prefix = (_STREAM["calibration"], "calibration") if hard else (_STREAM["in_class"], "fresh")
    settings = {**settings, **hard} if hard else settings
    for label, class_def in enumerate(class_definitions(variants, classes)):
        pool = homoplasy_pool(sequence, load_variants(variants), class_def["name"])
        for genome in generate_class(
            sequence, class_def, stream + label, settings, seed, str(variants), pool, prefix=prefix
        ):
            yield genome.seq_id, genome.sequence, {
                "class": class_def["name"],
                "label": label,
                "lineage": genome.lineage,
            }


def control_sequences(reference: str | os.PathLike, per_type: int, seed: int) -> Iterator[tuple[str, str, dict]]:
    """The reference genome once, then `per_type` shuffled spikes and `per_type` random sequences.

    Shuffled spikes and random sequences are bare spike-length sequences (no genome around them).
    """
    genome = read_reference(reference)
    yield "control-reference", genome, {"type": "reference"}
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), _STREAM["controls"]]))
    spike = genome[SPIKE_START - 1 : SPIKE_END]
    codons = np.array([spike[i : i + 3] for i in range(3, len(spike) - 3, 3)])
    for i in range(per_type):
        yield f"control-shuffled-{i:04d}", spike[:3] + "".join(rng.permutation(codons)) + spike[-3:], {
            "type": "shuffled"
        }
    for i in range(per_type):
        random = "".join(rng.choice(list("ACGT"), size=len(spike)))
        yield f"control-random-{i:04d}", random, {"type": "random"}


def background_genomes(
    reference: PathLike, variants: PathLike, classes: list[str], settings: dict, seed: int, n: int, keep_max: float
) -> Iterator[tuple[str, str, dict]]:
    """`n` background genomes (see the module docstring); settings: config data.synthetic; n, keep_max:
    config data.background."""
    sequence = read_reference(reference)
    definitions = class_definitions(variants, classes)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), _STREAM["background"]]))
    one = {**settings, "per_class": 1, "mixture": False}
    for i in range(n):
        class_def = definitions[int(rng.integers(len(definitions)))]
        profile = class_def["profiles"][int(rng.integers(len(class_def["profiles"])))]
        keep = rng.random() * keep_max
        partial = {
            "lineage": f"background:{profile['lineage']}",
            **{
                key: [x for x in profile.get(key, []) if rng.random() < keep]
                for key in ("substitutions", "deletions", "insertions")
            },
        }
        entry = {"name": "background", "profiles": [partial]}
        for genome in generate_class(sequence, entry, _STREAM["background"] + 1 + i, one, seed, str(variants)):
            yield f"background-{i:05d}", genome.sequence, {
                "type": "background",
                "lineage": partial["lineage"],
                "kept": keep,
            }
