"""Synthetic genomes: profiles applied exactly, noise as configured, deterministic per seed."""

import numpy as np
import pytest

from bertgeom.config import load_config
from bertgeom.data.download import synthetic_genomes
from bertgeom.data.synthetic import SPECTRA, apply_profile, class_profiles, generate_class, homoplasy_pool
from bertgeom.data.variants import SPIKE_END, SPIKE_START, class_definitions, load_variants, read_reference

CLASSES = load_config()["classes"]
# The default synthetic settings with every kind of noise switched off.
QUIET = {
    **load_config()["data"]["synthetic"],
    **dict(per_class=3, substitution_rate=0.0, n_runs_mean=0.0, trim_5p_max=0, trim_3p_max=0),
    **dict(drop_max=0.0, homoplasy_mean=0.0, ambiguity_mean=0.0),
}
STOPS = {"TAA", "TAG", "TGA"}


@pytest.fixture(scope="module")
def reference(root):
    return read_reference(root / "resources/NC_045512.2.fasta")


@pytest.fixture(scope="module")
def definitions(root):
    return class_definitions(root / "resources/variants.yaml", CLASSES)


def _naive(reference, profile):
    """Oracle: apply a profile base by base on a list of strings."""
    cells = list(reference)
    for change in profile["substitutions"]:
        cells[int(change[1:-1]) - 1] = change[-1]
    for deletion in profile["deletions"]:
        for i in range(deletion["start"] - 1, deletion["start"] - 1 + deletion["length"]):
            cells[i] = ""
    for insertion in profile["insertions"]:
        cells[insertion["after"] - 1] += insertion["bases"]
    return "".join(cells)


def _text(profile):
    return profile.sequence.tobytes().decode()


def test_every_profile_mutation_is_applied(reference, definitions):
    for class_def in definitions:
        for raw, profile in zip(class_def["profiles"], class_profiles(reference, class_def)):
            assert _text(profile) == _naive(reference, raw), (class_def["name"], raw["lineage"])
            seq = _text(profile)
            for change in raw["substitutions"]:  # each substitution sits at its lifted position
                pos = int(change[1:-1]) - 1
                if profile.start_map[pos] != profile.start_map[pos + 1]:  # not deleted
                    assert seq[profile.start_map[pos]] == change[-1]
            for insertion in raw["insertions"]:
                end = profile.start_map[insertion["after"]]
                assert seq[end - len(insertion["bases"]) : end] == insertion["bases"]
            removed = sum(d["length"] for d in raw["deletions"])
            added = sum(len(i["bases"]) for i in raw["insertions"])
            assert len(seq) == len(reference) - removed + added


def test_spike_coordinates_and_lengths(reference, definitions):
    for label, class_def in enumerate(definitions):
        for genome in generate_class(reference, class_def, label, QUIET, seed=0):
            spike = genome.sequence[genome.spike_start - 1 : genome.spike_end]
            raw = class_def["profiles"][genome.profile]
            assert spike[:3] == "ATG" and spike[-3:] in STOPS
            assert len(spike) == 3 * (raw["spike_length_aa"] + 1), (genome.seq_id, len(spike))


def test_deterministic_per_seed_and_class(root, reference, definitions):
    noisy = dict(QUIET, substitution_rate=0.001, n_runs_mean=1.0, trim_5p_max=100, trim_3p_max=100)
    first = list(generate_class(reference, definitions[3], 3, noisy, seed=5))
    again = list(generate_class(reference, definitions[3], 3, noisy, seed=5))
    other = list(generate_class(reference, definitions[3], 3, noisy, seed=6))
    assert first == again
    assert [g.sequence for g in first] != [g.sequence for g in other]
    assert [g.seq_id for g in first] == ["synthetic-Alpha-0000", "synthetic-Alpha-0001", "synthetic-Alpha-0002"]
    # a class's genomes do not depend on the other classes in the run
    records = list(
        synthetic_genomes(CLASSES, root / "resources/NC_045512.2.fasta", root / "resources/variants.yaml", noisy, 5)
    )
    alpha = [(seq_id, seq) for seq_id, seq, row in records if row["class"] == "Alpha"]
    assert alpha == [(g.seq_id, g.sequence) for g in first]


def test_genomes_within_a_class_differ_and_mix_sublineages(reference, definitions):
    settings = dict(QUIET, per_class=40, substitution_rate=0.0005)
    genomes = list(generate_class(reference, definitions[5], 5, settings, seed=0))  # Delta: 6 profiles
    assert len({g.profile for g in genomes}) >= 4
    spikes = [g.sequence[g.spike_start - 1 : g.spike_end] for g in genomes]
    assert len(set(spikes)) >= 20


def test_random_substitution_rate_within_tolerance(reference, definitions):
    rate, count = 0.002, 12
    settings = dict(QUIET, per_class=count, substitution_rate=rate, mixture=False, spectrum="uniform")
    profile = _text(class_profiles(reference, definitions[0])[0])
    total = 0
    for genome in generate_class(reference, definitions[0], 0, settings, seed=1):
        differences = sum(a != b for a, b in zip(genome.sequence, profile))
        assert differences == genome.random_substitutions
        spike = genome.sequence[genome.spike_start - 1 : genome.spike_end]
        assert not any(spike[i : i + 3] in STOPS for i in range(0, len(spike) - 3, 3))  # no nonsense
        total += differences
    expected = count * len(profile) * rate  # ~720; nonsense drops remove ~1%
    assert abs(total - expected) < 4 * np.sqrt(expected) + 0.02 * expected


def test_n_runs_are_where_recorded(reference, definitions):
    settings = dict(QUIET, per_class=10, n_runs_mean=3.0, n_run_length=[40, 90])
    genomes = list(generate_class(reference, definitions[1], 1, settings, seed=2))
    assert sum(len(g.n_runs) for g in genomes) >= 15
    for genome in genomes:
        expected = np.zeros(len(genome.sequence), dtype=bool)
        for start, length in genome.n_runs:
            assert 40 <= length <= 90
            expected[start : start + length] = True
        observed = np.frombuffer(genome.sequence.encode(), dtype=np.uint8) == ord("N")
        assert np.array_equal(observed, expected)


def test_trimming_moves_the_spike(reference, definitions):
    settings = dict(QUIET, per_class=6, trim_5p_max=150, trim_3p_max=150)
    profile = _text(class_profiles(reference, definitions[4])[0])
    for genome in generate_class(reference, definitions[4], 4, dict(settings, mixture=False), seed=3):
        assert genome.sequence == profile[genome.trim_5p : len(profile) - genome.trim_3p]
        assert genome.sequence[genome.spike_start - 1 : genome.spike_start + 2] == "ATG"


def test_manifest_fields_mark_synthetic(root):
    records = list(
        synthetic_genomes(
            ["Mu", "Beta"], root / "resources/NC_045512.2.fasta", root / "resources/variants.yaml", QUIET, 0
        )
    )
    assert len(records) == 6
    for seq_id, sequence, row in records:
        assert row["synthetic"] is True and row["source"] == "synthetic"
        assert seq_id.startswith(f"synthetic-{row['class']}-")
        assert row["lineage"] in {
            p["lineage"] for c in load_variants(root / "resources/variants.yaml")["classes"] for p in c["profiles"]
        }


def test_errors_name_the_problem(root, reference):
    with pytest.raises(ValueError, match=r"unknown class name\(s\) \['Zeta'\]"):
        list(
            synthetic_genomes(
                ["Alpha", "Zeta"], root / "resources/NC_045512.2.fasta", root / "resources/variants.yaml", QUIET, 0
            )
        )
    bad = {"lineage": "X.1", "substitutions": [f"G{SPIKE_START}T"], "deletions": [], "insertions": []}
    with pytest.raises(
        ValueError, match=f"class 'Alpha' profile 'X.1': substitution G{SPIKE_START}T but the reference has A"
    ):
        apply_profile(reference, bad, "Alpha", 0)
    outside = {
        "lineage": "X.2",
        "substitutions": [],
        "deletions": [{"start": SPIKE_END, "length": 10**6}],
        "insertions": [],
    }
    with pytest.raises(ValueError, match="deletion .* lies outside the reference"):
        apply_profile(reference, outside, "Alpha", 0)


def test_spectrum_is_dominated_by_c_to_t(reference, definitions):
    """Private substitutions follow the SARS-CoV-2 spectrum: C->T the most common change, about
    rate_CT * n_C / sum(rate * n) of them (40% over the genome's base composition)."""
    settings = dict(QUIET, per_class=40, substitution_rate=0.002, mixture=False)
    profile = _text(class_profiles(reference, definitions[0])[0])
    changes = {}
    for genome in generate_class(reference, definitions[0], 0, settings, seed=4):
        for a, b in zip(profile, genome.sequence):
            if a != b:
                changes[a + b] = changes.get(a + b, 0) + 1
    total = sum(changes.values())
    rates, counts = SPECTRA["sars-cov-2"], np.array([profile.count(b) for b in "ACGT"])
    expected = rates[1, 3] * counts[1] / (rates.sum(axis=1) * counts).sum()
    assert max(changes, key=changes.get) == "CT"
    assert abs(changes["CT"] / total - expected) < 4 * np.sqrt(expected * (1 - expected) / total)
    assert changes.get("GC", 0) < changes["GT"] / 5  # rare transversions stay rare


def test_dropped_profile_mutations_and_homoplasies(root, reference, definitions):
    """Dropped substitutions go back to the reference base; homoplasies come from other classes' spikes."""
    pool = homoplasy_pool(reference, load_variants(root / "resources/variants.yaml"), "Alpha")
    own = {int(c[1:-1]) - 1 for p in definitions[3]["profiles"] for c in p["substitutions"]}
    assert len(pool) > 20 and all(SPIKE_START - 1 <= pos < SPIKE_END for pos, _ in pool)
    settings = dict(QUIET, per_class=30, drop_max=0.5, homoplasy_mean=2.0, mixture=False)
    raw = definitions[3]["profiles"][0]
    profile = class_profiles(reference, definitions[3])[0]
    seq0 = _text(profile)
    dropped = homoplasies = 0
    for genome in generate_class(reference, definitions[3], 3, settings, seed=7, homoplasies=pool):
        for change in raw["substitutions"]:
            where = profile.start_map[int(change[1:-1]) - 1]
            assert genome.sequence[where] in (change[-1], change[0])  # kept or back to the reference
        reverted = sum(genome.sequence[profile.start_map[int(c[1:-1]) - 1]] == c[0] for c in raw["substitutions"])
        assert reverted == genome.dropped
        differ = [i for i, (a, b) in enumerate(zip(seq0, genome.sequence)) if a != b]
        assert len(differ) == genome.dropped + genome.homoplasies
        dropped, homoplasies = dropped + genome.dropped, homoplasies + genome.homoplasies
    expected = 30 * len(raw["substitutions"]) * 0.25  # mean drop share 0.5 / 2
    assert abs(dropped - expected) < 0.35 * expected
    assert 30 <= homoplasies <= 90  # Poisson(2) each, minus those the profile already has


def test_mixed_sites_are_iupac_pairs(reference, definitions):
    settings = dict(QUIET, per_class=20, ambiguity_mean=3.0, mixture=False)
    profile = _text(class_profiles(reference, definitions[2])[0])
    pairs = {"R": "AG", "Y": "CT", "S": "CG", "W": "AT", "K": "GT", "M": "AC"}
    total = 0
    for genome in generate_class(reference, definitions[2], 2, settings, seed=8):
        mixed = [(a, b) for a, b in zip(profile, genome.sequence) if a != b]
        assert len(mixed) == genome.ambiguous and all(b in pairs and a in pairs[b] for a, b in mixed)
        total += len(mixed)
    assert 30 <= total <= 90  # Poisson(3) x 20
