"""Config errors: schema violations (as Snakemake validates them) and data.source fasta settings."""

import copy
import gzip

import pytest
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from bertgeom.data.download import check_fasta_config, download, read_manifest
from bertgeom.data.fasta import read_fasta
from bertgeom.data.variants import read_reference


@pytest.fixture(scope="module")
def schema(root):
    return str(root / "config/config.schema.yaml")


def test_default_config_is_valid_and_gets_defaults(root, schema):
    config = yaml.safe_load((root / "config/config.yaml").read_text())
    validate(config, schema=schema)
    assert config["data"]["synthetic"]["substitution_rate"] == 0.0005
    assert config["data"]["ncbi"]["max_pages"] == 20
    assert config["qc"] == {
        "max_n_fraction": 0.05,
        "drop_duplicates": False,
        "max_length_change": 90,
        "preset": "asm20",
        "flank": 300,
        "allow_internal_stops": False,
    }


@pytest.mark.parametrize(
    "override, message",
    [
        ({"data": {"synthetic": {"per_class": "ten"}}}, "'ten' is not of type 'integer'"),
        ({"data": {"colour": "blue"}}, "Additional properties are not allowed \\('colour' was unexpected\\)"),
        ({"train": {"seeds": ["0", "1"]}}, "'0' is not of type 'integer'"),
        ({"data": {"seed": "42"}}, "'42' is not of type 'integer'"),
        ({"data": {"source": "genbank"}}, "'genbank' is not one of \\['synthetic', 'ncbi', 'fasta'\\]"),
        ({"qc": {"max_n_fraction": 2}}, "2 is greater than the maximum of 1"),
        ({"data": {"fasta": {"Alpha": 3}}}, "3 is not of type 'string'"),
    ],
)
def test_schema_violations_are_errors(schema, override, message):
    config = copy.deepcopy(override)
    with pytest.raises(WorkflowError, match=message):
        validate(config, schema=schema)


def test_fasta_config_checks():
    classes = ["Alpha", "Delta"]
    with pytest.raises(ValueError, match="config data.fasta is empty"):
        check_fasta_config(classes, {})
    with pytest.raises(ValueError, match=r"config data.fasta: class\(es\) \['Zeta'\] are not in config classes"):
        check_fasta_config(classes, {"Alpha": "a.fa", "Delta": "d.fa", "Zeta": "z.fa"})
    with pytest.raises(ValueError, match=r"config data.fasta has no FASTA file for class\(es\) \['Delta'\]"):
        check_fasta_config(classes, {"Alpha": "a.fa"})


FASTA_DATA = {"source": "fasta", "strip_gaps": False}  # as data_params() passes them (rules/common.smk)


def test_fasta_source_reads_plain_and_gzip(root, tmp_path):
    ref = read_reference(root / "resources/NC_045512.2.fasta")
    (tmp_path / "alpha.fasta").write_text(f">EPI_ISL_1|Alpha\n{ref}\n>EPI_ISL_2\n{ref[21562:25384]}\n")
    with gzip.open(tmp_path / "delta.fa.gz", "wt") as handle:
        handle.write(f">EPI_ISL_3 some description\n{ref.lower()}\n")
    files = {"Alpha": str(tmp_path / "alpha.fasta"), "Delta": str(tmp_path / "delta.fa.gz")}
    out = tmp_path / "out"
    download(out / "genomes.fasta", out / "manifest.tsv", None, None, ["Alpha", "Delta"], FASTA_DATA, fasta=files)
    manifest = read_manifest(out / "manifest.tsv")
    assert list(manifest["seq_id"]) == ["EPI_ISL_1|Alpha", "EPI_ISL_2", "EPI_ISL_3"]
    assert list(manifest["class"]) == ["Alpha", "Alpha", "Delta"]
    assert list(manifest["origin"]) == [files["Alpha"], files["Alpha"], files["Delta"]]
    assert set(manifest["source"]) == {"fasta"} and set(manifest["synthetic"]) == {"false"}
    assert [seq for _, seq in read_fasta(out / "genomes.fasta")] == [ref, ref[21562:25384], ref]


def test_fasta_source_errors(tmp_path):
    (tmp_path / "a.fasta").write_text(">x\nACGT\n")
    (tmp_path / "b.fasta").write_text(">x\nGGGG\n")
    (tmp_path / "empty.fasta").write_text("")
    cases = [
        ("b.fasta", ValueError, "b.fasta: record id 'x' is also in .*a.fasta"),
        ("empty.fasta", ValueError, "empty.fasta: empty FASTA file"),
        ("missing.fasta", FileNotFoundError, "missing.fasta: FASTA file not found"),
    ]
    for second, error, message in cases:
        fasta = {"A": str(tmp_path / "a.fasta"), "B": str(tmp_path / second)}
        with pytest.raises(error, match=message):
            download(tmp_path / "g.fasta", tmp_path / "m.tsv", None, None, ["A", "B"], FASTA_DATA, fasta=fasta)
    assert not (tmp_path / "g.fasta").exists() and not (tmp_path / "m.tsv").exists()  # nothing partial left
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_fasta_source_strips_gaps_only_when_asked(tmp_path):
    """data.strip_gaps: aligned FASTA ('-', '.') is an error naming the record, or has its gaps removed."""
    (tmp_path / "a.fasta").write_text(">x\nAC-GT..A\n")
    (tmp_path / "b.fasta").write_text(">y\nGGGG\n")
    fasta = {"A": str(tmp_path / "a.fasta"), "B": str(tmp_path / "b.fasta")}
    with pytest.raises(ValueError, match="a.fasta, line 1: record 'x' has characters outside the IUPAC"):
        download(tmp_path / "g.fasta", tmp_path / "m.tsv", None, None, ["A", "B"], FASTA_DATA, fasta=fasta)
    download(tmp_path / "g.fasta", tmp_path / "m.tsv", None, None, ["A", "B"], {**FASTA_DATA, "strip_gaps": True}, fasta=fasta)
    assert list(read_fasta(tmp_path / "g.fasta")) == [("x", "ACGTA"), ("y", "GGGG")]
