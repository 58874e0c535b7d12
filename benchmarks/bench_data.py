"""Data stage speed: synthetic generation and spike extraction of 8 x 1,000 genomes (target: < 60 s
in all on 2 cores), and the spike-locus index against a whole-genome index (baseline), same run.

    .venv/bin/python benchmarks/bench_data.py [--per-class 1000] [--threads 2] [--baseline 1000]

Prints genomes/s for generation (FASTA + manifest written) and for extraction (QC and tables
included, 1 process and --threads processes), and the speed-up of the defaults (spike-locus index,
window first) over aligning each whole genome to the whole reference. Not a test: nothing gates on
these numbers.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from itertools import islice
from pathlib import Path

from bertgeom.data.download import download
from bertgeom.data.fasta import read_fasta
from bertgeom.config import load_config
from bertgeom.data.spike import SpikeExtractor, extract_dataset, extract_many

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "resources/NC_045512.2.fasta"
CLASSES = load_config()["classes"]
QC = load_config()["qc"]


def _timed(label: str, count: int, work) -> tuple[float, object]:
    """Run work(); print wall seconds, genomes/s and this process's CPU seconds (worker processes
    not counted: on a shared machine CPU time shows the cost when wall time is inflated by others)."""
    start, cpu = time.perf_counter(), time.process_time()
    result = work()
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    print(f"{label:<44} {count:>6} genomes {seconds:7.2f} s {count / seconds:7.0f} genomes/s  (cpu here {cpu:6.2f} s)")
    return seconds, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--baseline", type=int, default=1000, help="genomes for the index comparison")
    args = parser.parse_args()
    config = load_config()  # the default data settings
    config["data"]["synthetic"]["per_class"] = args.per_class
    data = {"source": "synthetic", "seed": config["data"]["seed"], "synthetic": config["data"]["synthetic"]}
    total = len(CLASSES) * args.per_class
    with tempfile.TemporaryDirectory() as tmp:
        genomes, manifest = Path(tmp) / "genomes.fasta", Path(tmp) / "manifest.tsv"
        t_gen, _ = _timed(
            "generate + write FASTA/manifest",
            total,
            lambda: download(genomes, manifest, REFERENCE, ROOT / "resources/variants.yaml", CLASSES, data),
        )
        t_one, (_, qc) = _timed(
            "extract + QC, 1 process",
            total,
            lambda: extract_dataset(genomes, manifest, REFERENCE, CLASSES, QC, threads=1),
        )
        t_par, _ = _timed(
            f"extract + QC, {args.threads} processes",
            total,
            lambda: extract_dataset(genomes, manifest, REFERENCE, CLASSES, QC, threads=args.threads),
        )
        print(f"QC: {int((qc['status'] == 'pass').sum())} pass, {int((qc['status'] != 'pass').sum())} reject")
        sample = list(islice(read_fasta(genomes), args.baseline))
        plain = SpikeExtractor(REFERENCE, flank=None, window=None)
        locus = SpikeExtractor(REFERENCE, window=None)
        ours = SpikeExtractor(REFERENCE)
        t_plain, a = _timed(
            "baseline: whole genome to whole reference", len(sample), lambda: list(extract_many(sample, plain))
        )
        t_locus, b = _timed(
            "whole genome to spike locus (flank 300)", len(sample), lambda: list(extract_many(sample, locus))
        )
        t_ours, c = _timed("+ 2,000 nt window first (default)", len(sample), lambda: list(extract_many(sample, ours)))
        same = sum(x.sequence == y.sequence == z.sequence for x, y, z in zip(a, b, c))
    print(
        f"vs baseline: locus index {t_plain / t_locus:.2f}x, locus index + window {t_plain / t_ours:.2f}x faster; identical spikes {same}/{len(sample)}"
    )
    print(f"{args.threads} processes vs 1: {t_one / t_par:.2f}x")
    print(
        f"generation + extraction ({args.threads} processes): {t_gen + t_par:.1f} s for {total} genomes (target < 60 s)"
    )


if __name__ == "__main__":
    main()
