"""Packaging: the version the command reports, and an installed (non-editable) package that finds its
resources without the checkout."""

import tomllib
from importlib.metadata import version
from pathlib import Path

import pytest

from bertgeom.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_version_is_pyprojects(capsys):
    """`bertgeom --version` prints the installed metadata's version, which is pyproject.toml's."""
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    expected = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert version("bertgeom") == expected
    assert capsys.readouterr().out.strip() == f"bertgeom {expected}"
