"""Synthetic genomes: the reference with a class's lineage profile applied, plus per-sample noise.

A genome of class c is made in five steps (all randomness from one numpy Generator per class,
seeded with (data.seed, label), so a class's genomes do not change when other classes change):
1. pick a sub-lineage profile of c (uniformly, when `mixture`; else the first);
2. apply the profile to NC_045512.2: its substitutions, deletions and insertions (variants.yaml);
3. random substitutions: Binomial(length, substitution_rate) distinct positions, each to one of
   the three other bases, uniformly; those that would put a stop codon inside the spike's reading
   frame are dropped (purifying selection: real spikes with nonsense mutations are rare, and QC
   would reject them);
4. N runs (amplicon drop-out): Poisson(n_runs_mean) runs, length uniform in n_run_length,
   start uniform over the genome;
5. trim Uniform{0..trim_5p_max} nt from the 5' end and Uniform{0..trim_3p_max} from the 3' end.
Where the spike gene lies in the result is tracked exactly (`spike_start`, `spike_end`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from bertgeom.data.variants import SPIKE_END, SPIKE_START

BASES = np.frombuffer(b"ACGT", dtype=np.uint8)
_SUBSTITUTION = re.compile(r"^([ACGT])(\d+)([ACGT])$")


@dataclass(frozen=True)
class Profile:
    """A lineage profile applied to the reference.

    `start_map[i]` is the 0-based position in `sequence` of reference base i (of the next kept base
    if i is deleted), after any insertion placed before i; `end_map[i]` is the position just after
    the reference bases 0..i-1, before any insertion placed after base i-1. So reference interval
    [a, b) maps to sequence[start_map[a]:end_map[b]]: insertions inside it are kept, insertions at
    its edges are not (the rule the spike extraction uses too).
    """

    class_name: str
    lineage: str
    index: int
    sequence: np.ndarray  # uint8 ASCII, [length]
    start_map: np.ndarray  # int64, [reference length + 1]
    end_map: np.ndarray  # int64, [reference length + 1]


@dataclass
class SyntheticGenome:
    seq_id: str
    class_name: str
    lineage: str
    profile: int
    sequence: str
    random_substitutions: int
    n_runs: list[tuple[int, int]] = field(default_factory=list)  # (0-based start, length), before trimming
    trim_5p: int = 0
    trim_3p: int = 0
    spike_start: int = 0  # 1-based, inclusive, in `sequence`
    spike_end: int = 0


def apply_profile(reference: str, profile: dict, class_name: str, index: int, source: str = "variants.yaml") -> Profile:
    """The reference with `profile`'s substitutions, deletions and insertions applied.

    Raises ValueError naming `source`, the class and the lineage if a substitution's reference base
    disagrees with the reference or an indel lies outside it.
    """
    where = f"{source}: class {class_name!r} profile {profile.get('lineage')!r}"
    ref = np.frombuffer(reference.encode("ascii"), dtype=np.uint8)
    length = ref.size
    seq = ref.copy()
    for change in profile.get("substitutions", []):
        match = _SUBSTITUTION.match(str(change))
        if not match:
            raise ValueError(f"{where}: substitution {change!r} is not REF<pos>ALT")
        ref_base, pos, alt = match.group(1), int(match.group(2)), match.group(3)
        if not 1 <= pos <= length or reference[pos - 1] != ref_base:
            got = reference[pos - 1] if 1 <= pos <= length else "outside the genome"
            raise ValueError(f"{where}: substitution {change} but the reference has {got} at {pos}")
        seq[pos - 1] = ord(alt)
    keep = np.ones(length, dtype=bool)
    for deletion in profile.get("deletions", []):
        start, size = int(deletion["start"]), int(deletion["length"])
        if start < 1 or start + size - 1 > length:
            raise ValueError(f"{where}: deletion {start}+{size} lies outside the reference")
        keep[start - 1 : start - 1 + size] = False
    inserted = np.zeros(length + 1, dtype=np.int64)  # inserted[i]: bases placed before reference base i
    pieces, previous = [], 0
    for insertion in sorted(profile.get("insertions", []), key=lambda ins: int(ins["after"])):
        after, bases = int(insertion["after"]), str(insertion["bases"]).upper()
        if not 1 <= after <= length or not set(bases) <= set("ACGT"):
            raise ValueError(f"{where}: insertion {insertion!r} is outside the reference or not ACGT")
        pieces += [seq[previous:after][keep[previous:after]], np.frombuffer(bases.encode(), dtype=np.uint8)]
        inserted[after] += len(bases)
        previous = after
    pieces.append(seq[previous:][keep[previous:]])
    # Output offset before reference base i = kept bases before i + inserted bases up to i.
    kept_before = np.concatenate([[0], np.cumsum(keep)])
    inserted_upto = np.cumsum(inserted)
    start_map = kept_before + inserted_upto
    end_map = kept_before + np.concatenate([[0], inserted_upto[:-1]])
    return Profile(
        class_name, str(profile.get("lineage", class_name)), index, np.concatenate(pieces), start_map, end_map
    )


def class_profiles(reference: str, class_def: dict, source: str = "variants.yaml") -> list[Profile]:
    """Every profile of one variants.yaml class entry, applied to the reference."""
    profiles = class_def.get("profiles") or []
    if not profiles:
        raise ValueError(f"{source}: class {class_def['name']!r} has no profiles")
    return [apply_profile(reference, p, class_def["name"], i, source) for i, p in enumerate(profiles)]


_STOPS = np.array([int.from_bytes(codon, "big") for codon in (b"TAA", b"TAG", b"TGA")])


def _makes_stop(seq: np.ndarray, positions: np.ndarray, start: int, end: int) -> np.ndarray:
    """Mask of `positions` whose codon in the frame of CDS seq[start:end] is now a stop (last codon excepted)."""
    codon = start + (positions - start) // 3 * 3
    inside = (positions >= start) & (codon + 3 < end)
    codon = np.where(inside, codon, start)
    value = seq[codon].astype(np.int64) << 16 | seq[codon + 1].astype(np.int64) << 8 | seq[codon + 2]
    return inside & np.isin(value, _STOPS)


def generate_class(
    reference: str,
    class_def: dict,
    label: int,
    settings: dict,
    seed: int,
    source: str = "variants.yaml",
) -> Iterator[SyntheticGenome]:
    """`settings["per_class"]` genomes of one class (settings = config data.synthetic, schema defaults filled).

    Deterministic in (seed, label, settings): the Generator is seeded with SeedSequence([seed, label]).
    """
    profiles = class_profiles(reference, class_def, source)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(label)]))
    per_class = int(settings["per_class"])
    width = max(4, len(str(per_class - 1)))
    run_min, run_max = (int(x) for x in settings["n_run_length"])
    s0, s1 = SPIKE_START - 1, SPIKE_END  # 0-based half-open spike on the reference
    for i in range(per_class):
        profile = profiles[int(rng.integers(len(profiles)))] if settings["mixture"] else profiles[0]
        seq = profile.sequence.copy()
        length = seq.size
        n_subs = int(rng.binomial(length, float(settings["substitution_rate"])))
        positions = rng.choice(length, size=n_subs, replace=False)
        codes = np.searchsorted(BASES, seq[positions])  # index of the current base in ACGT
        seq[positions] = BASES[(codes + rng.integers(1, 4, size=n_subs)) % 4]
        nonsense = positions[_makes_stop(seq, positions, int(profile.start_map[s0]), int(profile.end_map[s1]))]
        seq[nonsense] = profile.sequence[nonsense]
        n_subs -= nonsense.size
        runs = []
        for _ in range(int(rng.poisson(float(settings["n_runs_mean"])))):
            run = int(rng.integers(run_min, min(run_max, length) + 1))
            start = int(rng.integers(0, length - run + 1))
            seq[start : start + run] = ord("N")
            runs.append((start, run))
        trim_5p = int(rng.integers(0, int(settings["trim_5p_max"]) + 1))
        trim_3p = int(rng.integers(0, int(settings["trim_3p_max"]) + 1))
        if trim_5p + trim_3p >= length:
            raise ValueError(f"config data.synthetic: trims of {trim_5p}+{trim_3p} nt remove the whole genome")
        yield SyntheticGenome(
            seq_id=f"synthetic-{class_def['name']}-{i:0{width}d}",
            class_name=class_def["name"],
            lineage=profile.lineage,
            profile=profile.index,
            sequence=seq[trim_5p : length - trim_3p].tobytes().decode("ascii"),
            random_substitutions=n_subs,
            n_runs=runs,
            trim_5p=trim_5p,
            trim_3p=trim_3p,
            spike_start=int(profile.start_map[s0]) - trim_5p + 1,
            spike_end=int(profile.end_map[s1]) - trim_5p,
        )
