"""Synthetic genomes: the reference with a class's lineage profile applied, plus per-sample variety.

A genome of class c is made in these steps (all randomness from one numpy Generator per class,
seeded with (data.seed, label), so a class's genomes do not change when other classes change):
1. pick a sub-lineage profile of c (uniformly, when `mixture`; else the first);
2. apply the profile to NC_045512.2: its substitutions, deletions and insertions (variants.yaml);
3. dropped mutations: a share f ~ Uniform(0, drop_max) of the profile's substitutions go back to
   the reference base (each with probability f). The profiles list the substitutions found in more
   than 90% of a lineage's genomes, so any one of them is missing from up to 10% of real genomes
   (reversions, sub-lineages, reference-filled drop-outs);
4. recurrent mutations (homoplasies): Poisson(homoplasy_mean) spike substitutions copied from the
   profiles of the other classes of variants.yaml (E484K, N501Y, L452R, P681H ... arose again and
   again in unrelated lineages), so that no single shared mutation decides the class;
5. private substitutions: Binomial(length, substitution_rate) distinct positions, drawn with the
   SARS-CoV-2 mutation spectrum (`spectrum`: "sars-cov-2", dominated by C->U; "uniform": every
   change alike); changes that would put a stop codon inside the spike's reading frame are undone
   (purifying selection: real spikes with nonsense mutations are rare, and QC would reject them);
6. mixed sites: Poisson(ambiguity_mean) positions become the IUPAC code of their base and another
   (consensus genomes of real samples carry a few R, Y, K, ...);
7. N runs (amplicon drop-out): Poisson(n_runs_mean) runs, length uniform in n_run_length,
   start uniform over the genome;
8. trim Uniform{0..trim_5p_max} nt from the 5' end and Uniform{0..trim_3p_max} from the 3' end.
Where the spike gene lies in the result is tracked exactly (`spike_start`, `spike_end`).
Settings: config data.synthetic (every key of SETTINGS; `bertgeom.config.load_config()` gives the defaults).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from bertgeom.data.variants import SPIKE_END, SPIKE_START

BASES = np.frombuffer(b"ACGT", dtype=np.uint8)
_SUBSTITUTION = re.compile(r"^([ACGT])(\d+)([ACGT])$")

# Relative rates of the 12 substitution types of SARS-CoV-2 (from -> to, ACGT order), per site of
# the "from" base: Bloom, Beichman, Neher & Harris (2023) "Evolution of the SARS-CoV-2 mutational
# spectrum", Mol Biol Evol 40(4):msad085, counts at four-fold synonymous sites in
# github.com/jbloomlab/SARS2-mut-spectrum results/synonymous_mut_rates/rates_by_clade.csv (commit
# 49402aa), pooled over clades 20A, 20B, 20C, 20E, 20G, 20I, 21J, 21K, 21L (605,245 mutations) and
# divided by the base's share of those sites. C->T is 40% of all mutations, G->T 12%, T->C 17%.
SPECTRA = {
    "sars-cov-2": np.array(
        [
            [0.0, 0.0492, 0.374, 0.109],  # A -> C, G, T
            [0.197, 0.0, 0.0733, 2.93],  # C -> A, G, T
            [0.791, 0.0990, 0.0, 1.88],  # G -> A, C, T
            [0.0698, 0.332, 0.0455, 0.0],  # T -> A, C, G
        ]
    ),
    "uniform": 1.0 - np.eye(4),
}
# IUPAC code of each unordered pair of bases (a mixed site), indexed [ACGT][ACGT].
_MIXED = np.array([[0, *b"MRW"], [ord("M"), 0, *b"SY"], [*b"RS", 0, ord("K")], [*b"WYK", 0]], dtype=np.uint8)

# The keys of config data.synthetic that generate_class reads (defaults: config/config.schema.yaml only).
SETTINGS = (
    "per_class", "substitution_rate", "n_runs_mean", "n_run_length", "trim_5p_max", "trim_3p_max", "mixture",
    "spectrum", "drop_max", "homoplasy_mean", "ambiguity_mean",
)  # fmt: skip


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
    substituted: np.ndarray  # int64, positions in `sequence` of the profile's substitutions
    reference_bases: np.ndarray  # uint8, the reference base at each of them


@dataclass
class SyntheticGenome:
    seq_id: str
    class_name: str
    lineage: str
    profile: int
    sequence: str
    random_substitutions: int
    dropped: int = 0  # profile substitutions put back to the reference base
    homoplasies: int = 0  # spike substitutions of other classes added
    ambiguous: int = 0  # mixed sites (IUPAC codes)
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
    subs = sorted({int(_SUBSTITUTION.match(str(c)).group(2)) - 1 for c in profile.get("substitutions", [])})
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
    subs = np.array([i for i in subs if keep[i]], dtype=np.int64)
    return Profile(
        class_name,
        str(profile.get("lineage", class_name)),
        index,
        np.concatenate(pieces),
        start_map,
        end_map,
        start_map[subs],
        ref[subs],
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


def homoplasy_pool(reference: str, variants: dict, class_name: str, source: str = "variants.yaml") -> np.ndarray:
    """Spike substitutions of the profiles of every variants.yaml class but `class_name`.

    Returns int64 [n, 2]: 0-based reference position, ASCII code of the alternative base.
    """
    pool = set()
    for class_def in variants["classes"]:
        if class_def["name"] == class_name:
            continue
        for profile in class_def.get("profiles") or []:
            for change in profile.get("substitutions", []):
                match = _SUBSTITUTION.match(str(change))
                pos = int(match.group(2)) if match else 0
                if SPIKE_START <= pos <= SPIKE_END and reference[pos - 1] == match.group(1):
                    pool.add((pos - 1, ord(match.group(3))))
    return np.array(sorted(pool), dtype=np.int64).reshape(-1, 2)


def _spectrum_substitutions(rng, seq: np.ndarray, n_subs: int, rates: np.ndarray) -> np.ndarray:
    """Put `n_subs` substitutions at distinct positions of seq (in place), drawn with `rates`.

    A site of base b mutates with weight sum(rates[b]); its new base b' with rates[b, b'] / sum(rates[b]).
    Returns the positions.
    """
    codes = np.searchsorted(BASES, seq)  # ACGT index of every base (the profile has only ACGT)
    site_rate = rates.sum(axis=1)[codes]
    positions = _weighted_sample(rng, site_rate, n_subs)
    old = codes[positions]
    # Draw the new base from the row of the old one (a categorical per position).
    cumulative = np.cumsum(rates[old], axis=1)
    draw = rng.random(n_subs)[:, None] * cumulative[:, -1:]
    seq[positions] = BASES[(draw >= cumulative).sum(axis=1)]
    return positions


def _weighted_sample(rng, weights: np.ndarray, k: int) -> np.ndarray:
    """k distinct indices drawn with probability proportional to `weights`, without replacement.

    Efraimidis-Spirakis: the k largest u^(1/w) keys, computed as log(u) / w.
    """
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    keys = np.log(rng.random(weights.size)) / np.maximum(weights, 1e-300)
    return np.sort(np.argpartition(keys, -k)[-k:]).astype(np.int64)


def generate_class(
    reference: str,
    class_def: dict,
    label: int,
    settings: dict,
    seed: int,
    source: str = "variants.yaml",
    homoplasies: np.ndarray | None = None,
    prefix: str = "synthetic",
) -> Iterator[SyntheticGenome]:
    """`settings["per_class"]` genomes of one class (settings = config data.synthetic, every key of
    SETTINGS). `homoplasies`: homoplasy_pool() of the class (None: none added).

    Deterministic in (seed, label, settings): the Generator is seeded with SeedSequence([seed, label]).
    """
    missing = [key for key in SETTINGS if key not in settings]
    if missing:
        raise ValueError(f"config data.synthetic lacks {missing} (bertgeom.config.load_config() fills the defaults)")
    profiles = class_profiles(reference, class_def, source)
    spectrum = settings["spectrum"]
    if spectrum not in SPECTRA:
        raise ValueError(f"config data.synthetic.spectrum: {spectrum!r}; expected one of {sorted(SPECTRA)}")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(label)]))
    per_class = int(settings["per_class"])
    width = max(4, len(str(per_class - 1)))
    for i in range(per_class):
        profile = profiles[int(rng.integers(len(profiles)))] if settings["mixture"] else profiles[0]
        genome = _one_genome(rng, profile, settings, homoplasies)
        genome.seq_id = f"{prefix}-{class_def['name']}-{i:0{width}d}"
        yield genome


def _one_genome(rng, profile: Profile, settings: dict, homoplasies: np.ndarray | None) -> SyntheticGenome:
    """One genome from a profile: steps 3-8 of the module docstring."""
    seq = profile.sequence.copy()
    length = seq.size
    s0, s1 = int(profile.start_map[SPIKE_START - 1]), int(profile.end_map[SPIKE_END])  # spike, half-open
    drop = rng.random() * float(settings["drop_max"])
    dropped = profile.substituted[rng.random(profile.substituted.size) < drop]
    seq[dropped] = profile.reference_bases[np.searchsorted(profile.substituted, dropped)]
    added = np.zeros(0, dtype=np.int64)
    if homoplasies is not None and len(homoplasies):
        picks = homoplasies[
            rng.choice(
                len(homoplasies), size=min(len(homoplasies), rng.poisson(settings["homoplasy_mean"])), replace=False
            )
        ]
        where = profile.start_map[picks[:, 0]]
        alive = profile.start_map[picks[:, 0]] != profile.start_map[picks[:, 0] + 1]  # not deleted
        where, alt = where[alive], picks[alive, 1]
        fresh = seq[where] != alt
        added, seq[where[fresh]] = where[fresh], alt[fresh]
    n_subs = int(rng.binomial(length, float(settings["substitution_rate"])))
    private = _spectrum_substitutions(rng, seq, n_subs, SPECTRA[settings["spectrum"]])
    changed = np.unique(np.concatenate([dropped, added, private]))
    nonsense = changed[_makes_stop(seq, changed, s0, s1)]
    for position in nonsense:  # give the whole stop codon back its profile bases
        codon = s0 + (position - s0) // 3 * 3
        seq[codon : codon + 3] = profile.sequence[codon : codon + 3]
    changed_now = changed[seq[changed] != profile.sequence[changed]]
    mixed = _weighted_sample(rng, np.ones(length), min(length, rng.poisson(settings["ambiguity_mean"])))
    codes = np.searchsorted(BASES, seq[mixed])
    ok = codes < 4  # only ACGT sites (after the changes above)
    mixed, codes = mixed[ok], codes[ok]
    seq[mixed] = _MIXED[codes, (codes + rng.integers(1, 4, size=codes.size)) % 4]
    runs = _n_runs(rng, seq, settings)
    trim_5p = int(rng.integers(0, int(settings["trim_5p_max"]) + 1))
    trim_3p = int(rng.integers(0, int(settings["trim_3p_max"]) + 1))
    if trim_5p + trim_3p >= length:
        raise ValueError(f"config data.synthetic: trims of {trim_5p}+{trim_3p} nt remove the whole genome")
    return SyntheticGenome(
        seq_id="",
        class_name=profile.class_name,
        lineage=profile.lineage,
        profile=profile.index,
        sequence=seq[trim_5p : length - trim_3p].tobytes().decode("ascii"),
        random_substitutions=int(np.isin(private, changed_now).sum()),
        dropped=int(np.isin(dropped, changed_now).sum()),
        homoplasies=int(np.isin(added, changed_now).sum()),
        ambiguous=int(mixed.size),
        n_runs=runs,
        trim_5p=trim_5p,
        trim_3p=trim_3p,
        spike_start=s0 - trim_5p + 1,
        spike_end=s1 - trim_5p,
    )


def _n_runs(rng, seq: np.ndarray, settings: dict) -> list[tuple[int, int]]:
    """Mask Poisson(n_runs_mean) runs of N (in place); returns their (start, length)."""
    run_min, run_max = (int(x) for x in settings["n_run_length"])
    runs = []
    for _ in range(int(rng.poisson(float(settings["n_runs_mean"])))):
        run = int(rng.integers(run_min, min(run_max, seq.size) + 1))
        start = int(rng.integers(0, seq.size - run + 1))
        seq[start : start + run] = ord("N")
        runs.append((start, run))
    return runs
