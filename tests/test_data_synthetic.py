"""Synthetic genomes: profiles applied exactly, noise as configured, deterministic per seed."""

import numpy as np
import pytest

from bertgeom.config import load_config
from bertgeom.data.download import synthetic_genomes
from bertgeom.data.synthetic import apply_profile, class_profiles, generate_class
from bertgeom.data.variants import SPIKE_END, SPIKE_START, class_definitions, load_variants, read_reference

CLASSES = load_config()["classes"]
# The default synthetic settings with every kind of noise switched off.
QUIET = {
    **load_config()["data"]["synthetic"],
    **dict(per_class=3, substitution_rate=0.0, n_runs_mean=0.0, trim_5p_max=0, trim_3p_max=0),
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
    settings = dict(QUIET, per_class=count, substitution_rate=rate, mixture=False)
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
