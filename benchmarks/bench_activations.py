"""Activation dump vs the naive baseline, measured side by side in one run (never gates CI).

The default config's model shape (preset small: 4 layers, hidden 128, 4 heads, FFN 512; random
weights), sequences of 427 real tokens padded to 512 (the paper's spike tokenisation), 8 classes,
batch 8, 1 torch thread.

Naive baseline: output_hidden_states=True and output_attentions=True, every tensor to numpy, one
pandas row per (sequence, layer) holding the layer output and the attention matrices, to_parquet.

Prints three ratios:
  speed   sequences/s of bertgeom.activations.dump / naive                        (target >= 3)
          (ours: the 4x run with the default 2 sequences per class at token level, i.e. 16 of
          4 * --sequences: with the default 60, the demo's 16 of 240 test sequences; naive: the
          1x run, whose cost per sequence only grows with the number of sequences)
  size    bytes on disk for the same information / naive's bytes                  (target <= 0.5)
          (ours: every sequence in the token-level subset with token_stages [output], all six
          files counted, so ours holds the naive file's information and the summaries besides)
  memory  peak RSS of dump with 4x the sequences / with 1x                          (target <= 1.2)
Each measurement runs in its own process, so peak RSS is that run's alone. It also prints the rate
of transformers' eager forward pass alone (batch 8, full padding), the part of the naive dump that
is not writing.

    .venv/bin/python benchmarks/bench_activations.py [--sequences 60]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

LENGTH, REAL = 512, 427
CLASSES = ["GH", "Lambda", "Mu", "Alpha", "Beta", "Delta", "Gamma", "Omicron"]
VOCAB = 4000
BATCH = 8


def peak_rss() -> int:
    """This process's peak resident set size in bytes: VmHWM, which exec resets (ru_maxrss keeps the
    forking parent's RSS across exec, so a worker started by a big parent would report the parent's)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # not Linux


def make_model(path: Path, preset: str = "small") -> None:
    """The default config's model: bertgeom.model preset `small` (or `preset`), random weights."""
    import torch
    from transformers import BertForSequenceClassification

    from bertgeom.model import scratch_config

    torch.manual_seed(0)
    config = scratch_config(preset, CLASSES, VOCAB, pad_id=0, max_length=LENGTH)
    config._attn_implementation = "eager"
    BertForSequenceClassification(config).save_pretrained(path)


def make_tokens(path: Path, count: int) -> None:
    import pyarrow as pa

    from bertgeom import io

    rng = np.random.default_rng(0)
    ids = np.zeros((count, LENGTH), dtype=np.int32)
    ids[:, 0], ids[:, REAL - 1] = 2, 3
    ids[:, 1 : REAL - 1] = rng.integers(5, VOCAB, (count, REAL - 2))
    labels = np.arange(count) % len(CLASSES)
    io.write_parquet(
        pa.table(
            {
                "seq_id": [f"synthetic-{CLASSES[label]}-{i:05d}" for i, label in enumerate(labels)],
                "label": pa.array(labels, pa.int16()),
                "input_ids": io.fixed_size_list(ids, pa.int32()),
                "n_tokens": pa.array(np.full(count, REAL), pa.int32()),
            }
        ),
        path,
    )


def worker_ours(model_dir: Path, tokens: Path, out: Path, subset: int, token_stages: list[str]) -> dict:
    from bertgeom import activations
    from bertgeom.config import load_config

    config = {
        "classes": CLASSES,
        "activations": {
            "splits": ["test"], "batch_size": BATCH, "subset_per_class": subset, "token_stages": token_stages,
            "device": "cpu", "row_group_mb": 32,
        },
    }  # fmt: skip
    outputs = {name: out / f"{name}.parquet" for name in activations.OUTPUT_FILES}
    top_keys = load_config()["patterns"]["top_keys"]  # the schema default
    result = activations.dump(model_dir, {"test": tokens}, outputs, config["classes"], config["activations"], top_keys)
    return {"sequences": result["sequences"], "seconds": result["seconds"], "bytes": sum(p.stat().st_size for p in outputs.values())}


def worker_naive(model_dir: Path, tokens: Path, out: Path) -> dict:
    import pandas as pd
    import pyarrow.parquet as pq
    import torch
    from transformers import BertForSequenceClassification

    from bertgeom import io

    model = BertForSequenceClassification.from_pretrained(model_dir, attn_implementation="eager").eval()
    table = pq.read_table(tokens)
    ids_all = io.to_matrix(table.column("input_ids")).astype(np.int64)
    n_all = table.column("n_tokens").to_numpy()
    seq_ids = table.column("seq_id").to_pylist()
    start = time.perf_counter()
    records = []
    for first in range(0, len(ids_all), BATCH):
        ids = torch.from_numpy(ids_all[first : first + BATCH])
        mask = torch.from_numpy(np.arange(LENGTH)[None, :] < n_all[first : first + BATCH, None]).long()
        with torch.no_grad():
            output = model(input_ids=ids, attention_mask=mask, output_hidden_states=True, output_attentions=True)
        hidden = [h.numpy() for h in output.hidden_states]
        attention = [a.numpy() for a in output.attentions]
        for b in range(len(ids)):
            for layer in range(len(attention)):
                records.append(
                    {
                        "seq_id": seq_ids[first + b],
                        "layer": layer,
                        "hidden": hidden[layer + 1][b].ravel(),
                        "attention": attention[layer][b].ravel(),
                    }
                )
    out.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(records).to_parquet(out / "naive.parquet")
    seconds = time.perf_counter() - start
    return {"sequences": len(seq_ids), "seconds": seconds, "bytes": (out / "naive.parquet").stat().st_size}


def worker_forward(model_dir: Path, tokens: Path) -> dict:
    """transformers' eager forward pass alone, batch 8 at full padding (the naive dump's compute)."""
    import pyarrow.parquet as pq
    import torch

    from bertgeom import io
    from bertgeom.model import load_model

    model = load_model(model_dir, attn_implementation="eager")
    table = pq.read_table(tokens)
    ids_all = torch.from_numpy(io.to_matrix(table.column("input_ids")).astype(np.int64))
    n_all = torch.from_numpy(table.column("n_tokens").to_numpy().astype(np.int64))
    start = time.perf_counter()
    with torch.inference_mode():
        for first in range(0, len(ids_all), BATCH):
            mask = torch.arange(LENGTH)[None, :] < n_all[first : first + BATCH, None]
            model(input_ids=ids_all[first : first + BATCH], attention_mask=mask.long())
    return {"sequences": len(ids_all), "seconds": time.perf_counter() - start, "bytes": 0}


def run_worker(kind: str, *args: str) -> dict:
    """One measurement in a fresh process; returns its result and its own peak RSS (bytes)."""
    cmd = [sys.executable, __file__, "--worker", kind, *args]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sequences", type=int, default=60, help="sequences of the 1x runs")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("args", nargs="*", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.worker:
        import torch

        torch.set_num_threads(1)
        model_dir, tokens, out = (Path(a) for a in options.args[:3])
        if options.worker == "naive":
            result = worker_naive(model_dir, tokens, out)
        elif options.worker == "forward":
            result = worker_forward(model_dir, tokens)
        else:
            subset, stages = int(options.args[3]), options.args[4].split(",")
            result = worker_ours(model_dir, tokens, out, subset, stages)
        result["peak_rss"] = peak_rss()
        print(json.dumps(result))
        return

    from bertgeom.hooks import STAGES

    n = options.sequences
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make_model(tmp / "model")
        make_tokens(tmp / "x1.parquet", n)
        make_tokens(tmp / "x4.parquet", 4 * n)
        model, all_stages = str(tmp / "model"), ",".join(STAGES)
        naive = run_worker("naive", model, str(tmp / "x1.parquet"), str(tmp / "naive"))
        ours = run_worker("ours", model, str(tmp / "x1.parquet"), str(tmp / "ours1"), "2", all_stages)
        ours4 = run_worker("ours", model, str(tmp / "x4.parquet"), str(tmp / "ours4"), "2", all_stages)
        same = run_worker("ours", model, str(tmp / "x1.parquet"), str(tmp / "same"), str(n), "output")
        forward = run_worker("forward", model, str(tmp / "x4.parquet"), str(tmp / "forward"))

    def rate(r: dict) -> float:
        return r["sequences"] / r["seconds"]

    mib = 2**20
    print(f"model: preset small (4 layers, hidden 128, 4 heads); {REAL} real tokens padded to {LENGTH}; batch {BATCH}; 1 torch thread")
    print(f"naive  {n:4d} seqs: {rate(naive):6.2f} seq/s  {naive['bytes'] / mib:8.1f} MiB  peak RSS {naive['peak_rss'] / mib:7.0f} MiB")
    print(f"ours   {n:4d} seqs: {rate(ours):6.2f} seq/s  {ours['bytes'] / mib:8.1f} MiB  peak RSS {ours['peak_rss'] / mib:7.0f} MiB")
    print(f"ours   {4 * n:4d} seqs: {rate(ours4):6.2f} seq/s  {ours4['bytes'] / mib:8.1f} MiB  peak RSS {ours4['peak_rss'] / mib:7.0f} MiB")
    print(f"transformers' eager forward alone {4 * n:4d} seqs: {rate(forward):6.2f} seq/s ({rate(forward) / rate(naive):.2f}x naive)")
    print(f"ours, same information as naive ({n} seqs, all at token level, stage output): {same['bytes'] / mib:.1f} MiB")
    speed, size, memory = rate(ours4) / rate(naive), same["bytes"] / naive["bytes"], ours4["peak_rss"] / ours["peak_rss"]
    print(f"speed ratio  (ours {4 * n} / naive {n} seqs, seq/s): {speed:5.2f}  target >= 3    {'ok' if speed >= 3 else 'MISSED'}")
    print(f"size ratio   (ours / naive bytes, same info): {size:5.2f}  target <= 0.5  {'ok' if size <= 0.5 else 'MISSED'}")
    print(f"memory ratio (peak RSS, 4x / 1x sequences):  {memory:5.2f}  target <= 1.2  {'ok' if memory <= 1.2 else 'MISSED'}")


if __name__ == "__main__":
    main()
