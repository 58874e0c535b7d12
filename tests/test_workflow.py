"""End to end: the whole workflow on config/tiny.yaml in a fresh working directory, then the report.

Checks every figure of the catalogue (docs/figures.md) as a valid PNG and PDF, the report listing each
of them, and that a dry run afterwards has nothing left to do. Minutes on 2 cores: marked slow (it
still runs in `make test`; deselect with `-m "not slow"`).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from workflow import snakemake

ROOT = Path(__file__).resolve().parents[1]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MIN_PNG_BYTES = 5_000  # a drawn figure at 72 dpi; an empty canvas is well under this


def catalogue_ids() -> list[str]:
    text = (ROOT / "docs" / "figures.md").read_text()
    return re.findall(r"^\|\s*`([a-z0-9_]+)`\s*\|", text, flags=re.M)


@pytest.mark.slow
def test_every_catalogued_figure_is_a_valid_png_and_pdf(tiny_run):
    ids = catalogue_ids()
    assert len(ids) >= 19
    for figure_id in ids:
        png = tiny_run / "results" / "figures" / f"{figure_id}.png"
        pdf = tiny_run / "results" / "figures" / f"{figure_id}.pdf"
        assert png.exists() and pdf.exists(), figure_id
        assert png.read_bytes()[:8] == PNG_SIGNATURE and png.stat().st_size > MIN_PNG_BYTES, figure_id
        assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.stat().st_size > 1_000, figure_id
    assert (tiny_run / "results" / "figures" / "metrics_table.html").exists()


@pytest.mark.slow
def test_report_lists_every_figure(tiny_run):
    report = tiny_run / "report.html"
    assert report.exists() and report.stat().st_size > 100_000
    text = report.read_text(errors="replace")
    missing = [i for i in catalogue_ids() if f"{i}.png" not in text]
    assert not missing, f"figures missing from the report: {missing}"
    assert "metrics_table.html" in text


@pytest.mark.slow
def test_nothing_left_to_do_after_a_complete_run(tiny_run):
    result = snakemake(tiny_run, "-n", "--cores", "1")
    assert "Nothing to be done" in result.stdout + result.stderr, result.stdout[-3000:]
