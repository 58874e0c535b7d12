"""GPU check: training throughput and model FLOPs utilisation (MFU) of the `base` preset, and the
projected time of the paper-scale run (36,360 training sequences x 2 epochs).

Runs the training step of bertgeom.train (bf16 autocast, SDPA attention, TF32, fused AdamW, optional
torch.compile) on random k-mer ids with the paper's vocabulary size (bert-base-cased 28,996 +
33,289 k-mers) at two lengths: 512 real tokens (the MFU headline) and 427 (the real length of a
spike, what our loop trains on after trimming), at the paper's batch size 4 and a larger batch.

Model FLOPs per trained token (forward + backward = 3 x forward; embeddings, LayerNorm, softmax
and the classification head left out):
    6 x 12 h^2 L  (Q, K, V, O and the two FFN matmuls, FFN = 4h)  +  12 x seq x h x L  (QK^T and AV)
MFU = tokens/s x FLOPs per token / the card's dense bf16 peak (table below, or --peak-tflops).

    .venv/bin/python benchmarks/gpu_check.py [--compile] [--out gpu_check.json]
    .venv/bin/python benchmarks/gpu_check.py --device cpu --preset tiny --steps 2 --warmup 1  # smoke test

Then the rest of the rehearsal on the same device (--rehearsal-sequences N, 0 skips it): a random
classifier of the preset dumps N sequences of 427 real tokens (bertgeom.activations.dump: fp32,
eager attention, every stage in the token-level subset) on the device and again on the CPU (fp32
eager, the reference), and the statistics (bertgeom.stats.cone.cone_table) run on the device's
dump. Prints sequences/s of both dumps, the stats' seconds and the agreement of the device's dump
with the CPU's (largest |difference| / largest |value| per file and column; cone_index values).
Needs torch, transformers, pyarrow, pandas, scipy and this checkout's src/ (PYTHONPATH=src), no
network and no snakemake.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

import torch
from transformers import get_linear_schedule_with_warmup

from bertgeom.io import package_versions, write_json
from bertgeom.model import PRESETS, build_model, select_device, trim_batch
from bertgeom.plan import PEAK_TFLOPS, Shape
from bertgeom.plan import flops_per_token as plan_flops_per_token
from bertgeom.train import configure_torch, make_optimizer, train_step

PAPER_VOCAB = 28996 + 33289
PAPER_SEQUENCES = 36360 * 2  # training split x epochs
PAPER_TOKENS = 427  # [CLS] + 425 k-mers + [SEP]
N_CLASSES = 8
class Vocab:
    """The tokenizer facts build_model needs."""

    def __init__(self, size: int, max_length: int = 512):
        self.size, self.pad_id, self.max_length = size, 0, max_length

    def __len__(self) -> int:
        return self.size


def flops_per_token(preset: str, seq: int) -> float:
    p = PRESETS[preset]
    shape = Shape(p["num_hidden_layers"], p["hidden_size"], p["num_attention_heads"], p["intermediate_size"], seq)
    return plan_flops_per_token(shape, seq)


def peak_tflops(device: torch.device, given: float | None) -> float | None:
    if given:
        return given
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_TFLOPS.items() if key in name), None)


def measure(preset: str, batch: int, seq: int, steps: int, warmup: int, device, compile_: bool) -> dict:
    """Tokens/s of `steps` timed training steps (after `warmup` untimed ones) on [batch, seq] inputs."""
    torch.manual_seed(0)
    model = build_model(
        {"init": "scratch", "preset": preset}, [str(i) for i in range(N_CLASSES)], Vocab(PAPER_VOCAB), 0
    ).to(device)
    train_cfg = dict(lr=2e-5, eps=1e-8, weight_decay=0.0)
    optimizer = make_optimizer(model, train_cfg)
    scheduler = get_linear_schedule_with_warmup(optimizer, 0, steps + warmup)
    forward = torch.compile(model) if compile_ else model
    ids = torch.randint(5, PAPER_VOCAB, (batch, 512))
    ids, mask = trim_batch(ids, torch.full((batch,), seq))
    labels = torch.randint(0, N_CLASSES, (batch,))
    ids, mask, labels = (t.to(device) for t in (ids, mask, labels))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    model.train()
    for i in range(warmup + steps):
        if i == warmup:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
        loss, _ = train_step(forward, optimizer, scheduler, ids, mask, labels, 1.0, device, bf16=True)
    loss.item()  # waits for the last step
    seconds = time.perf_counter() - start
    memory = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return {
        "batch": batch,
        "seq": seq,
        "tokens_per_s": batch * seq * steps / seconds,
        "sequences_per_s": batch * steps / seconds,
        "peak_memory_gib": memory,
    }


def dump_agreement(a: dict, b: dict) -> dict[str, float]:
    """Largest |a - b| / largest |b| per float column of the dumps' summary, heads and attention
    summary files, and of the token vectors (bertgeom.token_vectors) and attention matrices."""
    from bertgeom.io import to_matrix
    from bertgeom.token_vectors import TokenFile

    def rel(x, y) -> float:
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        scale = np.abs(y).max() if y.size else 0.0
        return float(np.abs(x - y).max() / scale) if scale > 0 else float(np.abs(x - y).max(initial=0.0))

    out = {}
    for name in ("summary", "heads", "attention_summary"):
        ta, tb = pq.read_table(a[name]), pq.read_table(b[name])
        for field in tb.schema:
            if pa.types.is_fixed_size_list(field.type) and pa.types.is_floating(field.type.value_type):
                out[f"{name}.{field.name}"] = rel(to_matrix(ta.column(field.name)), to_matrix(tb.column(field.name)))
            elif pa.types.is_floating(field.type):
                out[f"{name}.{field.name}"] = rel(ta.column(field.name).to_numpy(), tb.column(field.name).to_numpy())
    ta, tb = TokenFile(a["tokens"]), TokenFile(b["tokens"])
    out["tokens.vectors"] = max((rel(np.vstack([x for _, x in ta.sequences(*key)]), np.vstack([x for _, x in tb.sequences(*key)]))
                                 for key in tb.keys()), default=0.0)  # fmt: skip
    ma, mb = (pq.read_table(d["attention"], columns=["matrix"]).column("matrix").combine_chunks() for d in (a, b))
    out["attention.matrix"] = rel(ma.values.to_numpy(zero_copy_only=False), mb.values.to_numpy(zero_copy_only=False))
    return out


def rehearsal(preset: str, sequences: int, device: torch.device, threads: int) -> dict:
    """The dump and the statistics on `device`, the dump again on the CPU; agreement and throughput."""
    from bench_activations import CLASSES, make_model, make_tokens

    from bertgeom import activations
    from bertgeom.config import load_config
    from bertgeom.stats.cone import cone_table

    result = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make_model(tmp / "model", preset)
        make_tokens(tmp / "tokens.parquet", sequences)
        dumps = {}
        for where in (device.type, "cpu") if device.type != "cpu" else ("cpu", "cpu_again"):
            settings = {**load_config()["activations"], "splits": ["test"], "subset_per_class": sequences, "device": where.split("_")[0]}
            dumps[where] = {name: tmp / where / f"{name}.parquet" for name in activations.OUTPUT_FILES}
            start = time.perf_counter()
            activations.dump(tmp / "model", {"test": tmp / "tokens.parquet"}, dumps[where], CLASSES, settings, top_keys=5)
            result[f"dump_{where}_sequences_per_s"] = sequences / (time.perf_counter() - start)
        first, reference = dumps.values()
        start = time.perf_counter()
        tables = [cone_table(d["summary"], d["heads"], d["attention_summary"], d["tokens"], CLASSES, seed=0) for d in (first, reference)]
        result["stats_seconds"] = (time.perf_counter() - start) / 2
        result["agreement"] = dump_agreement(first, reference)
        both = tables[0].merge(tables[1], on=[c for c in tables[0].columns if c != "value"], suffixes=("", "_ref"))
        finite = both[np.isfinite(both.value_ref) & (both.value_ref.abs() > 1e-6)]
        result["agreement"]["cone_index.value"] = float(((finite.value - finite.value_ref).abs() / finite.value_ref.abs()).max())
    return result


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.1%}"


def _gib(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.1f} GiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="base", choices=sorted(PRESETS))
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[4, 32])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--compile", action="store_true", help="torch.compile the model (longer warm-up)")
    parser.add_argument("--device", default="cuda", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=8, help="CPU threads (data movement; the model on CPU)")
    parser.add_argument("--peak-tflops", type=float, help="the card's dense bf16 peak, if not in the table")
    parser.add_argument("--rehearsal-sequences", type=int, default=16, help="sequences of the dump and stats check (0: skip)")
    parser.add_argument("--out", help="also write the results as JSON")
    args = parser.parse_args()
    device = select_device(args.device)
    configure_torch(device, args.threads, deterministic=False)  # throughput: fastest kernels
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    peak = peak_tflops(device, args.peak_tflops)
    print(
        f"device {name}, preset {args.preset}, bf16 autocast {device.type == 'cuda'}, compile {args.compile}, peak {peak} TFLOP/s"
    )
    rows = []
    for seq in (512, PAPER_TOKENS):
        for batch in args.batch_sizes:
            row = measure(args.preset, batch, seq, args.steps, args.warmup, device, args.compile)
            achieved = row["tokens_per_s"] * flops_per_token(args.preset, seq)
            row["model_tflops"] = achieved / 1e12
            row["mfu"] = achieved / (peak * 1e12) if peak else None
            if seq == PAPER_TOKENS:
                row["paper_run_hours"] = PAPER_SEQUENCES / row["sequences_per_s"] / 3600
            rows.append(row)
            paper = f", paper-scale run {row['paper_run_hours'] * 60:.1f} min" if "paper_run_hours" in row else ""
            print(
                f"seq {seq:3d} batch {batch:3d}: {row['tokens_per_s']:9.0f} tokens/s, {row['sequences_per_s']:7.1f} seq/s, "
                f"{row['model_tflops']:6.1f} TFLOP/s, MFU {_pct(row['mfu'])}, peak memory {_gib(row['peak_memory_gib'])}{paper}"
            )
    print(
        f"paper-scale run = {PAPER_SEQUENCES} sequences x {PAPER_TOKENS} tokens (36,360 x 2 epochs), training steps only"
    )
    check = rehearsal(args.preset, args.rehearsal_sequences, device, args.threads) if args.rehearsal_sequences else {}
    if check:
        rates = ", ".join(f"{k.removeprefix('dump_').removesuffix('_sequences_per_s')} {v:.2f} seq/s" for k, v in check.items() if k.startswith("dump_"))
        print(f"dump of {args.rehearsal_sequences} sequences (fp32, eager attention, all in the subset): {rates}; "
              f"statistics (cone_index) {check['stats_seconds']:.1f} s")  # fmt: skip
        worst = max(check["agreement"].items(), key=lambda item: item[1])
        print(f"device dump vs CPU fp32 eager: largest relative difference {worst[1]:.2e} ({worst[0]})")
        for key, value in sorted(check["agreement"].items()):
            print(f"  {key:40s} {value:.2e}")
    if args.out:
        write_json(
            args.out,
            {
                "device": name,
                "preset": args.preset,
                "compile": args.compile,
                "peak_tflops": peak,
                "rows": rows,
                "rehearsal": check,
                "versions": package_versions(),
            },
        )


if __name__ == "__main__":
    main()
