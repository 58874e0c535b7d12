"""Packaging: the version the command reports, and an installed (non-editable) package that finds its
resources without the checkout."""

import csv
import functools
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from importlib.metadata import version as metadata_version
from pathlib import Path

import pytest

from bertgeom.cli import main
from bertgeom.data.fasta import read_fasta
from bertgeom.data.spike import SpikeExtractor
from bertgeom.model import build_model
from bertgeom.tokens import KmerTokenizer, build_vocab, count_kmers

ROOT = Path(__file__).resolve().parents[1]


def test_version_is_pyprojects(capsys):
    """`bertgeom --version` prints the installed metadata's version, which is pyproject.toml's."""
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    expected = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert metadata_version("bertgeom") == expected
    assert capsys.readouterr().out.strip() == f"bertgeom {expected}"


def _copy_project(dest: Path) -> Path:
    """What a wheel is built from, out of the checkout (so no build/ appears in it)."""
    skip = shutil.ignore_patterns("*.egg-info", "__pycache__", "build")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, dest / name)
    for name in ("src", "resources", "config"):
        shutil.copytree(ROOT / name, dest / name, symlinks=True, ignore=skip)
    return dest


def _untrained_model(directory: Path, reference: Path) -> Path:
    """A model directory as training leaves it (tokenizer, weights, training_info.json), untrained:
    enough for `predict` to find its reference through the training config's `resources/` path."""
    spike = SpikeExtractor(reference).extract("ref", next(read_fasta(reference))[1]).sequence
    tokenizer = KmerTokenizer(build_vocab(count_kmers([spike], 12, 9)["kmer"].tolist()), 12, 9, 512)
    tokenizer.save(directory)
    build_model({"preset": "tiny"}, ["Alpha", "Delta"], tokenizer, seed=0).save_pretrained(directory)
    info = {"config": {"data": {"reference": "resources/NC_045512.2.fasta"}, "qc": {}}}
    (directory / "training_info.json").write_text(json.dumps(info))
    return directory


INSTALLED_CHECK = """
import sys
from pathlib import Path
import bertgeom
from bertgeom.config import SCHEMA, check_config, load_config, resolve_path
from bertgeom.data.variants import load_variants

assert Path(bertgeom.__file__).is_relative_to(sys.prefix), bertgeom.__file__
assert SCHEMA.is_file() and SCHEMA.is_relative_to(sys.prefix), SCHEMA
config = load_config()  # the schema's defaults: data.reference and data.variants name resources/
check_config(config, ".")  # the default config's files are found, from an empty directory
for key in ("reference", "variants"):
    path = resolve_path(config["data"][key], ".")
    assert path.is_file() and path.is_relative_to(sys.prefix), path
assert "Alpha" in load_variants(resolve_path(config["data"]["variants"], "."))["label_order"]
print("resources ok")
"""


def test_installed_package_finds_its_resources(tmp_path):
    """`pip install` of a wheel (not editable) into a fresh venv: the wheel holds the schema and
    resources/; from a directory without the checkout, the library loads them, `bertgeom --version`
    and `--help` work, and `predict` finds the reference its training config names."""
    (tmp_path / "project").mkdir()
    project = _copy_project(tmp_path / "project")
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", tmp_path / "wheel", project], check=True)
    (wheel,) = (tmp_path / "wheel").glob("bertgeom-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = ["config.schema.yaml", "resources/variants.yaml", "resources/NC_045512.2.fasta", "resources/NC_045512.2.gb"]
    shipped += ["resources/README.md", "resources/real_genomes/genomes.fasta.gz", "resources/real_genomes/labels.tsv"]
    assert {f"bertgeom/{name}" for name in shipped} <= names, sorted(names)

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    # The dependencies come from this environment (offline); its .pth files, the editable
    # install's among them, are not read from a directory a .pth line adds.
    Path(site, "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([*pip, "--python", python, "install", "--no-deps", "--no-index", "-q", wheel], check=True)

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": "", "OMP_NUM_THREADS": "1"}
    run = functools.partial(subprocess.run, cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300)
    version = run([venv / "bin" / "bertgeom", "--version"])
    assert version.returncode == 0 and version.stdout.strip() == f"bertgeom {metadata_version('bertgeom')}"
    assert "predict" in run([venv / "bin" / "bertgeom", "--help"]).stdout
    checked = run([python, "-c", INSTALLED_CHECK])
    assert checked.returncode == 0 and "resources ok" in checked.stdout, checked.stderr

    model = _untrained_model(tmp_path / "model", ROOT / "resources" / "NC_045512.2.fasta")
    shutil.copy(ROOT / "resources" / "NC_045512.2.fasta", elsewhere / "genome.fasta")
    predicted = run([venv / "bin" / "bertgeom", "predict", "--model", model, "--fasta", "genome.fasta",
                     "--out", "out.tsv", "--device", "cpu", "--threads", "1"])
    assert predicted.returncode == 0, predicted.stderr
    (row,) = csv.DictReader((elsewhere / "out.tsv").open(), delimiter="\t")
    assert row["status"] == "pass" and row["length"] == "3822" and row["prediction"] in ("Alpha", "Delta"), row
