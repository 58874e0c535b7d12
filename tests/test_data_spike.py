"""Spike extraction: exact on constructed genomes, QC reasons, the data-set table and its errors."""

import random

import pandas as pd
import pytest
from Bio.Seq import Seq

from bertgeom.data.download import write_genomes
from bertgeom.data.fasta import reverse_complement
from bertgeom.config import load_config
from bertgeom.data.spike import SpikeExtractor, extract_dataset, extract_many
from bertgeom.data.synthetic import class_profiles, generate_class
from bertgeom.data.variants import SPIKE_END, SPIKE_START, class_definitions, read_reference

S0, S1 = SPIKE_START - 1, SPIKE_END  # 0-based half-open
QC = load_config()["qc"]


@pytest.fixture(scope="module")
def ref(root):
    return read_reference(root / "resources/NC_045512.2.fasta")


@pytest.fixture(scope="module")
def ex(root):
    return SpikeExtractor(root / "resources/NC_045512.2.fasta")


def _sub(seq, pos, base):
    """seq with the base at 0-based pos replaced by a different one (base, or its complement choice)."""
    base = base if base != seq[pos] else {"A": "C", "C": "G", "G": "T", "T": "A"}[base]
    return seq[:pos] + base + seq[pos + 1 :]


def test_reference_and_bare_spike(ref, ex):
    spike = ref[S0:S1]
    for query in (ref, spike, spike.lower()):
        res = ex.extract("q", query)
        assert (res.status, res.sequence, res.strand) == ("pass", spike, 1)
    assert len(spike) == 3822 and res.n_fraction == 0.0


def test_deletions_and_insertions_inside_the_spike(ref, ex):
    cut = 21765 - 1  # del69-70 (6 nt)
    genome = ref[:cut] + ref[cut + 6 :]
    assert ex.extract("del", genome).sequence == ref[S0:cut] + ref[cut + 6 : S1]
    after = 22204  # ins214EPE: 9 nt after 22204
    genome = ref[:after] + "GAGCCAGAA" + ref[after:]
    assert ex.extract("ins", genome).sequence == ref[S0:after] + "GAGCCAGAA" + ref[after:S1]
    # both, plus scattered substitutions
    genome = ref[:cut] + ref[cut + 6 : after] + "GAGCCAGAA" + ref[after:]
    for pos in (22000, 23000, 24000, 25000):
        genome = _sub(genome, pos, "A")
    spike = genome[S0 : S1 - 6 + 9]
    assert ex.extract("both", genome).sequence == spike


def test_insertions_just_outside_the_spike_are_not_taken(ref, ex):
    genome = ref[:S0] + "TTTTTT" + ref[S0:S1] + "GGGGGG" + ref[S1:]
    assert ex.extract("edges", genome).sequence == ref[S0:S1]


def test_trimmed_ends(ref, ex):
    assert ex.extract("short", ref[15000:27000]).sequence == ref[S0:S1]
    res = ex.extract("5p", ref[S0 + 40 :])
    assert (res.status, res.reason, res.sequence) == ("reject", "partial_spike", None)
    assert "40 nt before the start" in res.detail
    res = ex.extract("3p", ref[: S1 - 25])
    assert res.reason == "partial_spike" and "25 nt after the end" in res.detail


def test_spike_far_from_its_reference_position(ref, ex):
    extra = "".join(random.Random(3).choice("ACGT") for _ in range(3000))  # beyond the fast-path window
    genome = ref[:10000] + extra + ref[10000:]
    assert ex.extract("shifted", genome).sequence == ref[S0:S1]
    assert ex.extract("cut", ref[8000:]).sequence == ref[S0:S1]


def test_reverse_complement(ref, ex):
    genome = ref[: 21765 - 1] + ref[21765 - 1 + 6 :]
    res = ex.extract("rc", reverse_complement(genome))
    assert res.status == "pass" and res.strand == -1
    assert res.sequence == genome[S0 : S1 - 6]
    assert ex.extract("rc-spike", reverse_complement(ref[S0:S1])).sequence == ref[S0:S1]


def test_mismatches_at_the_very_ends_of_a_bare_spike(ref, ex):
    spike = ref[S0:S1]
    mutated = _sub(_sub(spike, 1, "C"), len(spike) - 2, "C")  # ATG -> ACG, TAA -> TCA
    assert ex.extract("ends", mutated).sequence == mutated


def test_alpha_protein_has_its_signature(root, ref, ex):
    alpha = class_definitions(root / "resources/variants.yaml", ["Alpha"])[0]
    genome = class_profiles(ref, alpha)[0].sequence.tobytes().decode()
    res = ex.extract("alpha", genome)
    assert res.status == "pass"
    protein = str(Seq(res.sequence).translate(to_stop=True))
    wuhan = str(Seq(ref[S0:S1]).translate(to_stop=True))
    assert len(wuhan) == 1273 and len(protein) == 1270  # del69-70, del144
    assert wuhan[68:70] == "HV" and protein[:68] == wuhan[:68] and protein[68:141] == wuhan[70:143]  # del69-70
    assert wuhan[500] == "N" and protein[500 - 3] == "Y"  # N501Y, three residues earlier after the deletions
    assert wuhan[680] == "P" and protein[680 - 3] == "H"  # P681H
    assert wuhan[613] == "D" and protein[613 - 3] == "G"  # D614G


def test_synthetic_genomes_of_every_class_are_cut_exactly(root, ref, ex):
    names = load_config()["classes"]
    noisy = dict(per_class=4, substitution_rate=0.001, n_runs_mean=0.3, n_run_length=[30, 120])
    settings = {**load_config()["data"]["synthetic"], **noisy}
    for label, class_def in enumerate(class_definitions(root / "resources/variants.yaml", names)):
        for genome in generate_class(ref, class_def, label, settings, seed=11):
            res = ex.extract(genome.seq_id, genome.sequence)
            assert res.sequence == genome.sequence[genome.spike_start - 1 : genome.spike_end], genome.seq_id


@pytest.mark.parametrize(
    "make, reason, detail",
    [
        (lambda r: r[: S0 + 500] + "N" * 300 + r[S0 + 800 :], "too_many_n", "7.8% of 3822 nt are N or ambiguous"),
        (lambda r: r[: S0 + 1000] + r[S0 + 1001 :], "frameshift", "length 3821 nt is not a multiple of 3"),
        (lambda r: r[: S0 + 297] + "TAA" + r[S0 + 300 :], "internal_stop", "at codon(s) 100 of 1274"),
        (lambda r: r[:S0] + r[S1:], "missing_spike", "the spike is deleted"),
        (lambda r: r[: S0 - 50] + r[S1 + 50 :], "missing_spike", "alignments do not overlap the spike"),
        (lambda r: r[:21000] + r[26000:], "missing_spike", "no alignment"),
        (
            lambda r: r[: S0 + 1500] + r[S1 - 1500 :],
            "partial_spike",
            "length 3000 nt is -822 nt from the reference's 3822",
        ),
        (lambda r: "".join(random.Random(1).choice("ACGT") for _ in range(8000)), "missing_spike", "no alignment"),
        (lambda r: "", "missing_spike", "no alignment"),
    ],
)
def test_qc_reasons(ref, ex, make, reason, detail):
    res = ex.extract("bad", make(ref))
    assert (res.status, res.reason) == ("reject", reason)
    assert detail in res.detail


def test_n_fraction_counts_ambiguity_codes_and_options(root, ref, ex):
    genome = ref[: S0 + 600] + "N" * 30 + "RY" + ref[S0 + 632 :]
    res = ex.extract("few-n", genome)
    assert res.status == "pass" and res.n_fraction == pytest.approx(32 / 3822)
    strict = SpikeExtractor(root / "resources/NC_045512.2.fasta", max_n_fraction=0.005)
    assert strict.extract("few-n", genome).reason == "too_many_n"
    stop = ref[: S0 + 297] + "TAA" + ref[S0 + 300 :]
    lenient = SpikeExtractor(root / "resources/NC_045512.2.fasta", allow_internal_stops=True)
    assert lenient.extract("stop", stop).status == "pass"
    whole = SpikeExtractor(root / "resources/NC_045512.2.fasta", flank=None, window=None)  # the slow, plain way
    assert whole.extract("few-n", genome).sequence == res.sequence


def test_wrong_reference_is_refused(tmp_path, ref):
    (tmp_path / "other.fasta").write_text(">other\n" + ref[1000:] + "\n")
    with pytest.raises(ValueError, match="other.fasta: not NC_045512.2"):
        SpikeExtractor(tmp_path / "other.fasta")


def _dataset(tmp_path, ref, extra=()):
    """A small data set: class A reference-like genomes (two duplicates), class B with one bad genome."""
    spike_sub = lambda pos: _sub(ref, S0 + pos, "A")  # noqa: E731
    records = [
        ("a1", ref, "A"),
        ("a2", spike_sub(100), "A"),
        ("a3", ref[50:], "A"),  # same spike as a1
        ("b1", spike_sub(2000), "B"),
        ("b2", ref[: S0 + 10], "B"),  # partial
        *extra,
    ]
    rows = (
        (
            seq_id,
            seq,
            {"class": c, "lineage": "", "source": "fasta", "release_date": "", "origin": "x", "synthetic": False},
        )
        for seq_id, seq, c in records
    )
    write_genomes(rows, tmp_path / "genomes.fasta", tmp_path / "manifest.tsv")
    return tmp_path / "genomes.fasta", tmp_path / "manifest.tsv"


def test_dataset_tables_add_up(root, tmp_path, ref):
    genomes, manifest = _dataset(tmp_path, ref)
    reference = root / "resources/NC_045512.2.fasta"
    spikes, qc = extract_dataset(genomes, manifest, reference, ["A", "B"], dict(QC, drop_duplicates=True))
    assert list(qc["seq_id"]) == ["a1", "a2", "a3", "b1", "b2"]  # every record once, in order
    assert list(qc["status"]) == ["pass", "pass", "reject", "pass", "reject"]
    assert list(qc["reason"]) == ["", "", "duplicate", "", "partial_spike"]
    assert qc.loc[2, "detail"] == "same spike as a1"
    assert spikes.num_rows == (qc["status"] == "pass").sum()
    table = spikes.to_pandas()
    assert list(table["seq_id"]) == ["a1", "a2", "b1"] and list(table["label"]) == [0, 0, 1]
    assert set(table["qc"]) == {"pass"} and all(table["length"] == 3822)
    assert table.loc[0, "sequence"] == ref[S0:S1]
    _, kept = extract_dataset(genomes, manifest, reference, ["A", "B"], QC)  # duplicates kept by default
    assert list(kept["status"]) == ["pass", "pass", "pass", "pass", "reject"]


def test_worker_processes_give_the_same_results(root, tmp_path, ref, ex):
    records = [(f"g{i}", _sub(ref, S0 + 30 * i, "T")) for i in range(12)] + [("cut", ref[: S0 + 5])]
    one = list(extract_many(records, ex, threads=1, chunk=5))
    two = list(extract_many(records, ex, threads=2, chunk=5))
    assert list(map(repr, one)) == list(map(repr, two))  # repr: NaN n_fraction compares equal
    assert [r.seq_id for r in two] == [seq_id for seq_id, _ in records]


def test_dataset_errors(root, tmp_path, ref):
    reference = root / "resources/NC_045512.2.fasta"
    genomes, manifest = _dataset(tmp_path, ref, extra=[("c1", ref, "C")])
    with pytest.raises(ValueError, match=r"manifest.tsv: class\(es\) \['C'\] are not in config classes \['A', 'B'\]"):
        extract_dataset(genomes, manifest, reference, ["A", "B"], QC)
    only_bad = [("b3", ref[: S0 + 10], "B"), ("b4", "ACGT" * 100, "B")]
    genomes, manifest = _dataset(tmp_path, ref)
    table = pd.read_csv(manifest, sep="\t", dtype=str, keep_default_na=False)
    table[table["seq_id"] != "b1"].to_csv(manifest, sep="\t", index=False)
    with pytest.raises(ValueError, match="genomes.fasta: record 'b1' is not in .*manifest.tsv"):
        extract_dataset(genomes, manifest, reference, ["A", "B"], QC)
    genomes, manifest = _dataset(tmp_path, ref)
    pd.concat([table, table.iloc[[0]].assign(seq_id="ghost")]).to_csv(manifest, sep="\t", index=False)
    with pytest.raises(ValueError, match=r"1 genome\(s\) are not in .*genomes.fasta, e.g. \['ghost'\]"):
        extract_dataset(genomes, manifest, reference, ["A", "B"], QC)
    # class B left without a passing sequence
    records = [("a1", ref, "A"), *only_bad]
    rows = (
        (s, q, {"class": c, "lineage": "", "source": "fasta", "release_date": "", "origin": "x", "synthetic": False})
        for s, q, c in records
    )
    write_genomes(rows, tmp_path / "genomes.fasta", tmp_path / "manifest.tsv")
    with pytest.raises(
        ValueError,
        match=r"class 'B' has no sequence left after QC \(2 genomes .*'partial_spike': 1, 'missing_spike': 1",
    ):
        extract_dataset(tmp_path / "genomes.fasta", tmp_path / "manifest.tsv", reference, ["A", "B"], QC)
