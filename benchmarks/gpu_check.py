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
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from transformers import get_linear_schedule_with_warmup

from bertgeom.io import package_versions, write_json
from bertgeom.model import PRESETS, build_model, select_device, trim_batch
from bertgeom.train import configure_torch, make_optimizer, train_step

PAPER_VOCAB = 28996 + 33289
PAPER_SEQUENCES = 36360 * 2  # training split x epochs
PAPER_TOKENS = 427  # [CLS] + 425 k-mers + [SEP]
N_CLASSES = 8
# Dense bf16 tensor-core peaks (TFLOP/s) from the vendors' data sheets, matched on the device name.
PEAK_TFLOPS = {
    "H200": 989.4,
    "H100 PCIe": 756.0,
    "H100": 989.4,
    "A100": 312.0,
    "L40S": 362.0,
    "A10": 125.0,
    "L4": 121.0,
}


class Vocab:
    """The tokenizer facts build_model needs."""

    def __init__(self, size: int, max_length: int = 512):
        self.size, self.pad_id, self.max_length = size, 0, max_length

    def __len__(self) -> int:
        return self.size


def flops_per_token(preset: str, seq: int) -> float:
    cfg = PRESETS[preset]
    h, layers, ffn = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["intermediate_size"]
    matmul_params = layers * (4 * h * h + 2 * h * ffn)
    return 6 * matmul_params + 12 * seq * h * layers


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
    if args.out:
        write_json(
            args.out,
            {
                "device": name,
                "preset": args.preset,
                "compile": args.compile,
                "peak_tflops": peak,
                "rows": rows,
                "versions": package_versions(),
            },
        )


if __name__ == "__main__":
    main()
