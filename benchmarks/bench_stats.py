"""Memory of the cone-index statistics: streamed sufficient statistics vs reading the whole table.

Writes synthetic summary.parquet files (docs/outputs.md) with N and 4N sequences, then in a fresh
process each measures the peak RSS increase (over the process after its imports) of
  - streamed:  bertgeom.stats.cone.read_vector_sums (batches of stats.batch_rows rows), and
  - baseline:  the same per-class sums from the whole table read at once with pandas.
Prints the memory ratios 4N / N for both, baseline / streamed at 4N, and the time ratio (streaming
costs time: batches are grouped one by one). Never gates anything.

    .venv/bin/python benchmarks/bench_stats.py [--sequences 400] [--hidden 128]
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from bertgeom.io import ParquetStream, fixed_size_list

LAYERS = 4
STAGES = ["input", "q", "k", "v", "context", "attn_output", "attn_ln", "ffn", "output"]
BATCH_ROWS = 4096


def write_summary(path: Path, sequences: int, hidden: int) -> None:
    """A synthetic summary.parquet, written 50 sequences at a time (so writing stays small too)."""
    rng = np.random.default_rng(0)
    schema = pa.schema(
        [("seq_id", pa.string()), ("split", pa.string()), ("label", pa.int16()), ("layer", pa.int16()),
         ("stage", pa.string()), ("n", pa.int32()), ("sum_unit", pa.list_(pa.float32(), hidden)),
         ("mean_vec", pa.list_(pa.float32(), hidden)), ("sum_sq_norm", pa.float64()), ("cone_ref", pa.float32())]
    )  # fmt: skip
    with ParquetStream(path, schema) as stream:
        for start in range(0, sequences, 50):
            seqs = np.arange(start, min(start + 50, sequences))
            rows = len(seqs) * LAYERS * len(STAGES)
            stream.write(
                {
                    "seq_id": np.repeat([f"seq{s}" for s in seqs], LAYERS * len(STAGES)),
                    "split": ["test"] * rows,
                    "label": np.repeat(seqs % 8, LAYERS * len(STAGES)).astype(np.int16),
                    "layer": np.tile(np.repeat(np.arange(LAYERS), len(STAGES)), len(seqs)).astype(np.int16),
                    "stage": STAGES * (len(seqs) * LAYERS),
                    "n": np.full(rows, 427, np.int32),
                    "sum_unit": fixed_size_list(rng.normal(size=(rows, hidden)).astype(np.float32)),
                    "mean_vec": fixed_size_list(rng.normal(size=(rows, hidden)).astype(np.float32)),
                    "sum_sq_norm": rng.random(rows) * 1e3,
                    "cone_ref": rng.random(rows).astype(np.float32) * 500,
                }
            )


def measure(method: str, path: str) -> None:
    """In this (fresh) process: run one method and print its peak RSS increase in MiB and seconds."""
    import pandas as pd

    from bertgeom.stats.cone import read_vector_sums

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    if method == "streamed":
        sums = read_vector_sums(path, BATCH_ROWS, per_head=False)
    else:
        table = pd.read_parquet(path)
        sums = {}
        for key, group in table.groupby(["split", "label", "layer", "stage"]):
            sums[key] = (np.stack(group["sum_unit"].to_numpy()).sum(axis=0), group["n"].sum())
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"{(peak - before) / 1024:.1f} {seconds:.2f} {len(sums)}")


def run_measure(method: str, path: Path) -> tuple[float, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--measure", method, str(path)], check=True, capture_output=True, text=True
    ).stdout.split()
    return float(out[0]), float(out[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sequences", type=int, default=400)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--measure", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        measure(*args.measure)
        return
    with tempfile.TemporaryDirectory() as tmp:
        results = {}
        for scale in (1, 4):
            path = Path(tmp) / f"summary_{scale}.parquet"
            write_summary(path, args.sequences * scale, args.hidden)
            size = path.stat().st_size / 2**20
            for method in ("streamed", "baseline"):
                results[method, scale] = run_measure(method, path)
                mib, seconds = results[method, scale]
                print(f"{method:9s} {args.sequences * scale:6d} sequences ({size:6.1f} MiB file): "
                      f"peak RSS +{mib:7.1f} MiB, {seconds:6.2f} s")  # fmt: skip
    for method in ("streamed", "baseline"):
        print(f"ratio {method} peak memory, 4N / N sequences: {results[method, 4][0] / results[method, 1][0]:.2f}")
    print(f"ratio baseline / streamed peak memory at 4N: {results['baseline', 4][0] / results['streamed', 4][0]:.2f}")
    print(f"ratio streamed / baseline time at 4N: {results['streamed', 4][1] / results['baseline', 4][1]:.2f}")


if __name__ == "__main__":
    main()
