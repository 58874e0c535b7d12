"""bertgeom.data.fasta: the validating FASTA reader, the writer, reverse complements."""

import gzip

import pytest

from bertgeom.data.fasta import read_fasta, reverse_complement, write_fasta


def test_reads_wrapped_lowercase_rna_and_descriptions(tmp_path):
    path = tmp_path / "in.fasta"
    path.write_text(">a first record\nacgu\nNNRY\n\n>b\r\nGGCC\r\n")
    assert list(read_fasta(path)) == [("a", "ACGTNNRY"), ("b", "GGCC")]


def test_round_trip_plain_and_gzip(tmp_path):
    records = [("x1", "ACGT" * 30), ("x2", "N" * 5 + "TTTA")]
    assert write_fasta(tmp_path / "out.fasta", records) == 2
    assert list(read_fasta(tmp_path / "out.fasta")) == records
    with gzip.open(tmp_path / "out.fa.gz", "wt") as handle:
        handle.write((tmp_path / "out.fasta").read_text())
    assert list(read_fasta(tmp_path / "out.fa.gz")) == records
    # gzip is recognised by content, not by name
    (tmp_path / "renamed.fasta").write_bytes((tmp_path / "out.fa.gz").read_bytes())
    assert list(read_fasta(tmp_path / "renamed.fasta")) == records


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.fasta: FASTA file not found"):
        read_fasta(tmp_path / "nope.fasta")


@pytest.mark.parametrize(
    "text, message",
    [
        ("", r"bad.fasta: empty FASTA file \(no records\)"),
        ("\n\n", r"bad.fasta: empty FASTA file"),
        ("ACGT\n>a\nACGT\n", r"bad.fasta, line 1: not FASTA"),
        (">\nACGT\n", r"bad.fasta, line 1: record with an empty id"),
        (">a\n>b\nACGT\n", r"bad.fasta, line 1: record 'a' has no sequence"),
        (
            ">a\nACGT\n>b\nACGTXZ-\n",
            r"bad.fasta, line 3: record 'b' has characters outside the IUPAC nucleotide codes .*'-XZ'",
        ),
        (">a\nACGT\n>b\nAC\n>a desc\nGG\n", r"bad.fasta, line 5: duplicate record id 'a' \(first at line 1\)"),
    ],
)
def test_bad_fasta_names_file_line_and_record(tmp_path, text, message):
    path = tmp_path / "bad.fasta"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        list(read_fasta(path))


def test_binary_and_truncated_gzip(tmp_path):
    (tmp_path / "bin.fasta").write_bytes(b">a\n\xff\xfe\x00ACGT\n")
    with pytest.raises(ValueError, match="bin.fasta: not a readable text or gzip FASTA file"):
        list(read_fasta(tmp_path / "bin.fasta"))
    blob = gzip.compress(b">a\n" + b"ACGT" * 2000 + b"\n")
    (tmp_path / "cut.fa.gz").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ValueError, match="cut.fa.gz: not a readable text or gzip FASTA file"):
        list(read_fasta(tmp_path / "cut.fa.gz"))


def test_reverse_complement():
    assert reverse_complement("AACGTN") == "NACGTT"
    assert reverse_complement("RYKMBV") == "BVKMRY"
    seq = "ACGTRYSWKMBDHVN" * 3
    assert reverse_complement(reverse_complement(seq)) == seq


def test_gaps_stripped_when_asked_and_bad_records_kept_as_rows(tmp_path):
    from bertgeom.data.fasta import read_records

    path = tmp_path / "aligned.fasta"
    path.write_text(">a\nAC-GT..\n>b\nACXT\n>a\nGG\n>c\n---\n>d\nu-u\n")
    with pytest.raises(ValueError, match=r"line 1: record 'a' has characters outside .*'-\.'"):
        list(read_fasta(path))
    assert next(iter(read_fasta(path, strip_gaps=True))) == ("a", "ACGT")
    rows = list(read_records(path))
    assert [(r.seq_id, r.sequence, r.gaps, r.line) for r in rows] == [
        ("a", "ACGT", 3, 1),
        ("b", "ACXT", 0, 3),
        ("a", "GG", 0, 5),
        ("c", "", 3, 7),
        ("d", "TT", 1, 9),
    ]
    assert [r.problem for r in rows] == [
        "",
        "record 'b' has characters outside the IUPAC nucleotide codes ACGTURYSWKMBDHVN: 'X'",
        "duplicate record id 'a' (first at line 1)",
        "record 'c' has no sequence (3 gap characters only)",
        "",
    ]
    (tmp_path / "x").write_text("hello\n")
    with pytest.raises(ValueError, match="x, line 1: not FASTA"):
        list(read_records(tmp_path / "x"))
