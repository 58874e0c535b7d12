"""cone_index at base shape, this checkout vs the code it replaced, side by side in one run (never gates CI).

A random classifier of bert-base's shape (preset base: 12 layers, 12 heads, hidden 768; 427 real
tokens padded to 512, 8 classes) is dumped by bertgeom.activations.dump with every sequence in the
token-level subset (--per-class sequences per class, all nine stages). The same vectors are
written a second time in the layout the old code reads (float16 `vec`, rows sequence-major, row
groups of ~32 MiB). Then, each in a fresh process with one BLAS/torch thread (rule cone_index's):
  old  bertgeom.stats.cone.cone_table of commit OLD (loaded with `git show`) on the old layout
  new  bertgeom.stats.cone.cone_table of this checkout on the dump's layout
Prints CPU and wall seconds and peak RSS of each, the speed ratio per subset sequence (old CPU s per
sequence / new CPU s per sequence; target >= 10), new's peak RSS at each --per-class (flat in the
number of sequences), and the largest differences between the two tables' values per scope.

    .venv/bin/python benchmarks/bench_cone_subset.py [--per-class 1 2] [--skip-old]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np

from bench_activations import CLASSES, make_model, make_tokens, peak_rss

ROOT = Path(__file__).resolve().parents[1]
OLD = "5242e27"  # main before issue 17: tokens.parquet of float16 vectors, read whole once per layer
THREADS = {name: "1" for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}


def dump(model: Path, tokens: Path, out: Path, per_class: int) -> dict[str, Path]:
    from bertgeom import activations

    settings = {"splits": ["test"], "batch_size": 8, "subset_per_class": per_class, "device": "cpu", "row_group_mb": 32,
                "token_stages": ["input", "q", "k", "v", "context", "attn_output", "attn_ln", "ffn", "output"]}  # fmt: skip
    outputs = {name: out / f"{name}.parquet" for name in activations.OUTPUT_FILES}
    activations.dump(model, {"test": tokens}, outputs, CLASSES, settings, top_keys=5)
    return outputs


def write_old_layout(tokens: Path, out: Path, target: int = 32 * 2**20) -> None:
    """The same vectors as float16 `vec`, rows (sequence, layer, stage, position): the old dump's file."""
    import pyarrow as pa

    from bertgeom import io, token_vectors
    from bertgeom.hooks import STAGES

    source = token_vectors.TokenFile(tokens)
    groups = source.keys()
    ident, blocks = {}, {}
    for layer, stage in groups:
        for table, x in source.vectors(layer, stage, ["seq_id", "split", "label", "pred", "correct"]):
            frame = table.to_pandas()
            for seq, rows in frame.groupby("seq_id", sort=False).indices.items():
                ident[seq] = frame.iloc[rows[0]].to_dict()
                blocks[seq, layer, stage] = x[rows].astype(np.float16)
    schema = pa.schema([("seq_id", pa.string()), ("split", pa.string()), ("label", pa.int16()), ("pred", pa.int16()),
                        ("correct", pa.bool_()), ("layer", pa.int16()), ("stage", pa.string()), ("position", pa.int32()),
                        ("vec", pa.list_(pa.float16(), next(iter(blocks.values())).shape[1]))])  # fmt: skip
    with io.ParquetStream(out, schema) as stream:
        pending, size = [], 0
        for seq in ident:
            for layer in sorted({k[0] for k in groups}):
                for stage in (s for s in STAGES if (layer, s) in groups):
                    vecs = blocks.pop((seq, layer, stage))
                    rows = len(vecs)
                    pending.append(pa.table({**{k: [ident[seq][k]] * rows for k in ("seq_id", "split", "label", "pred", "correct")},
                                             "layer": [layer] * rows, "stage": [stage] * rows, "position": np.arange(rows, dtype=np.int32),
                                             "vec": io.fixed_size_list(vecs)}).cast(schema))  # fmt: skip
                    size += vecs.nbytes
                    if size >= target:
                        stream.write(pa.concat_tables(pending))
                        pending, size = [], 0
        if pending:
            stream.write(pa.concat_tables(pending))


def old_module() -> types.ModuleType:
    """bertgeom.stats.cone as of commit OLD."""
    source = subprocess.run(["git", "-C", str(ROOT), "show", f"{OLD}:src/bertgeom/stats/cone.py"], capture_output=True, text=True, check=True).stdout
    module = types.ModuleType("cone_old")
    sys.modules["cone_old"] = module
    exec(compile(source, f"{OLD}:src/bertgeom/stats/cone.py", "exec"), module.__dict__)
    return module


def worker(kind: str, files: dict, out: str) -> None:
    """In a fresh process: one cone_table, its table written to `out`; prints CPU s, wall s, peak RSS."""
    if kind == "old":
        cone = old_module()
    else:
        from bertgeom.stats import cone
    start, cpu = time.perf_counter(), time.process_time()
    table = cone.cone_table(files["summary"], files["heads"], files["attention_summary"], files["tokens"], CLASSES, seed=0)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - start
    table.to_parquet(out)
    peak = peak_rss()
    print(json.dumps({"cpu_s": cpu, "wall_s": wall, "peak_rss": peak}))


def run_worker(kind: str, files: dict, out: Path) -> dict:
    env = {**os.environ, **THREADS}
    cmd = [sys.executable, __file__, "--worker", kind, json.dumps({k: str(v) for k, v in files.items()}), str(out)]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    return json.loads(done.stdout.strip().splitlines()[-1])


def compare(old: Path, new: Path) -> None:
    """Largest absolute and relative differences of the values per scope (measures present in both)."""
    import pandas as pd

    keys = ["split", "scope", "class", "layer", "stage", "head", "variant", "measure"]
    both = pd.read_parquet(old).merge(pd.read_parquet(new), on=keys, suffixes=("_old", "_new"))
    diff = (both["value_new"] - both["value_old"]).abs()
    both["abs"], both["rel"] = diff, diff / both["value_old"].abs().clip(lower=1e-300)
    for (scope, measure), part in both.groupby(["scope", "measure"]):
        print(f"  {scope:8s} {measure:20s} max |new - old| {part['abs'].max():9.2e}  max relative {part['rel'].max():9.2e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-class", type=int, nargs="+", default=[1, 2], help="subset sequences per class (one run each)")
    parser.add_argument("--skip-old", action="store_true", help="only the new code (the old takes minutes)")
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker[0], json.loads(args.worker[1]), args.worker[2])
        return
    import torch

    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make_model(tmp / "model", preset="base")
        runs = {}
        for per_class in args.per_class:
            count = per_class * len(CLASSES)
            make_tokens(tmp / f"tokens{count}.parquet", count)
            start = time.perf_counter()
            files = dump(tmp / "model", tmp / f"tokens{count}.parquet", tmp / f"dump{count}", per_class)
            size = files["tokens"].stat().st_size / 2**20
            print(f"dumped {count} sequences at base shape in {time.perf_counter() - start:.0f} s: tokens.parquet {size:.0f} MiB")
            runs["new", count] = run_worker("new", files, tmp / f"new{count}.parquet")
            if not args.skip_old and per_class == args.per_class[0]:
                write_old_layout(files["tokens"], tmp / "old_tokens.parquet")
                runs["old", count] = run_worker("old", {**files, "tokens": tmp / "old_tokens.parquet"}, tmp / f"old{count}.parquet")
        mib = 2**20
        for (kind, count), r in runs.items():
            print(f"{kind} {count:3d} subset sequences: {r['cpu_s']:7.1f} CPU s ({r['cpu_s'] / count:6.2f} per sequence), "
                  f"{r['wall_s']:7.1f} s wall, peak RSS {r['peak_rss'] / mib:6.0f} MiB")  # fmt: skip
        first = args.per_class[0] * len(CLASSES)
        if ("old", first) in runs:
            ratio = runs["old", first]["cpu_s"] / runs["new", first]["cpu_s"]
            print(f"speed ratio per subset sequence (old / new CPU s, {first} sequences): {ratio:5.1f}  target >= 10  {'ok' if ratio >= 10 else 'MISSED'}")
            print("values, new vs old (subset scope: float32 mean + float16 deviations, two-pass covariance; others unchanged):")
            compare(tmp / f"old{first}.parquet", tmp / f"new{first}.parquet")
        counts = sorted(c for k, c in runs if k == "new")
        if len(counts) > 1:
            memory = runs["new", counts[-1]]["peak_rss"] / runs["new", counts[0]]["peak_rss"]
            print(f"memory ratio new (peak RSS, {counts[-1]} / {counts[0]} sequences): {memory:.2f}  target <= 1.2  {'ok' if memory <= 1.2 else 'MISSED'}")


if __name__ == "__main__":
    main()
