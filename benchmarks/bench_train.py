"""Training throughput: our loop (bertgeom.train.fit) against transformers.Trainer, side by side.

Same model (the `small` preset unless --preset), same data (random k-mer ids, 424-427 real tokens of
max_length 512, as the spike gives), same batch size, fp32 on CPU (bf16 autocast on CUDA for both),
same optimiser settings, same number of steps, same threads. Printed: real (non-PAD) tokens per
second of each and the ratio ours / Trainer. Trainer runs twice: as usually set up (every batch
padded to max_length, what the paper's code did) and with a collator that trims each batch to its
longest sequence as ours does, so the ratio against the second isolates the loop itself. Last, the
cost of BERT's attention-probability dropout, which the tiny and small presets leave out.

    .venv/bin/python benchmarks/bench_train.py [--steps 30] [--batch-size 8] [--threads 1] [--repeats 3]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from transformers import Trainer, TrainingArguments

from bertgeom.model import build_model, select_device, trim_batch
from bertgeom.train import Split, configure_torch, fit

CLASSES = ["GH", "Lambda", "Mu", "Alpha", "Beta", "Delta", "Gamma", "Omicron"]


class Vocab:
    """The three tokenizer facts build_model needs (a synthetic 3,000-token vocabulary)."""

    def __init__(self, size: int, max_length: int):
        self.size, self.pad_id, self.max_length = size, 0, max_length

    def __len__(self) -> int:
        return self.size


def make_split(n: int, max_length: int, vocab: int, seed: int = 0) -> Split:
    rng = np.random.default_rng(seed)
    n_tokens = rng.integers(424, 428, n)
    ids = np.zeros((n, max_length), np.int32)
    for i, length in enumerate(n_tokens):
        ids[i, :length] = rng.integers(5, vocab, length)
    labels = rng.integers(0, len(CLASSES), n)
    return Split(
        torch.from_numpy(ids), torch.from_numpy(n_tokens), torch.from_numpy(labels), [str(i) for i in range(n)]
    )


class TokenDataset(torch.utils.data.Dataset):
    def __init__(self, split: Split):
        self.split = split

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int) -> dict:
        n = int(self.split.n_tokens[i])
        mask = (torch.arange(self.split.ids.shape[1]) < n).long()
        return {"input_ids": self.split.ids[i].long(), "attention_mask": mask, "labels": self.split.labels[i]}


def trimming_collator(rows: list[dict]) -> dict:
    """Stack, then cut the batch to its longest real sequence (what our loop does)."""
    ids = torch.stack([r["input_ids"] for r in rows])
    ids, mask = trim_batch(ids, torch.stack([r["attention_mask"].sum() for r in rows]))
    return {"input_ids": ids, "attention_mask": mask, "labels": torch.stack([r["labels"] for r in rows])}


def run_ours(split: Split, train_cfg: dict, preset: str, device) -> float:
    vocab = Vocab(3000, split.ids.shape[1])
    model = build_model({"init": "scratch", "preset": preset}, CLASSES, vocab, seed=0).to(device)
    empty = Split(split.ids[:0], split.n_tokens[:0], split.labels[:0], [])
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        fit(model, split, empty, train_cfg, 0, device, Path(tmp) / "ckpt", "bench")
        return time.perf_counter() - start


def run_trainer(split: Split, train_cfg: dict, preset: str, device, trim: bool) -> float:
    vocab = Vocab(3000, split.ids.shape[1])
    model = build_model({"init": "scratch", "preset": preset}, CLASSES, vocab, seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(
            output_dir=tmp,
            per_device_train_batch_size=train_cfg["batch_size"],
            num_train_epochs=1,
            learning_rate=train_cfg["lr"],
            adam_epsilon=train_cfg["eps"],
            weight_decay=train_cfg["weight_decay"],
            warmup_steps=train_cfg["warmup_ratio"],
            max_grad_norm=train_cfg["grad_clip"],
            bf16=device.type == "cuda" and train_cfg["bf16"],
            use_cpu=device.type == "cpu",
            save_strategy="no",
            eval_strategy="no",
            logging_steps=train_cfg["log_every"],
            report_to="none",
            disable_tqdm=True,
            dataloader_num_workers=0,
            seed=0,
        )
        collator = trimming_collator if trim else None
        trainer = Trainer(model=model, args=args, train_dataset=TokenDataset(split), data_collator=collator)
        start = time.perf_counter()
        trainer.train()
        return time.perf_counter() - start


def attention_dropout_cost(preset: str, batch: int, device, repeats: int) -> tuple[float, float]:
    """Best time of a training step of `preset` without and with BERT's 0.1 attention-probability
    dropout (why tiny/small drop it: the mask forces SDPA off its fused kernel)."""
    split = make_split(batch, 512, 3000)
    ids, mask = trim_batch(split.ids, split.n_tokens)
    best = {}
    for _ in range(repeats):
        for p in (0.0, 0.1):
            model = build_model({"init": "scratch", "preset": preset}, CLASSES, Vocab(3000, 512), seed=0)
            model.config.attention_probs_dropout_prob = p
            for layer in model.bert.encoder.layer:
                layer.attention.self.dropout.p = p
            model.to(device).train()
            optimizer = torch.optim.AdamW(model.parameters(), fused=True)
            for i in range(4):
                start = time.perf_counter()
                model(
                    input_ids=ids.to(device), attention_mask=mask.to(device), labels=split.labels.to(device)
                ).loss.backward()
                optimizer.step()
                optimizer.zero_grad()
                if i:  # the first step allocates
                    best[p] = min(best.get(p, float("inf")), time.perf_counter() - start)
    return best[0.0], best[0.1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=8, help="as config.yaml")
    parser.add_argument("--threads", type=int, default=1, help="as the train rule (threads: 1)")
    parser.add_argument("--preset", default="small")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    device = select_device(args.device)
    configure_torch(device, args.threads, deterministic=False)  # Trainer runs without determinism too
    train_cfg = dict(
        epochs=1,
        batch_size=args.batch_size,
        lr=1e-3,
        eps=1e-8,
        weight_decay=0.01,
        warmup_ratio=0.1,
        grad_clip=1.0,
        bf16=True,
        compile=False,
        log_every=10,
        eval_batch_size=32,
    )
    split = make_split(args.steps * args.batch_size, 512, 3000)
    tokens = int(split.n_tokens.sum())
    print(
        f"{args.preset} preset, {args.steps} steps of batch {args.batch_size}, {tokens} real tokens, {device}, {args.threads} threads"
    )
    runs = {
        "ours": lambda: run_ours(split, train_cfg, args.preset, device),
        "Trainer (padded to 512)": lambda: run_trainer(split, train_cfg, args.preset, device, trim=False),
        "Trainer (trimmed batches)": lambda: run_trainer(split, train_cfg, args.preset, device, trim=True),
    }
    # Interleaved repeats, best time of each: on a shared machine the load drifts during a run.
    times = {name: float("inf") for name in runs}
    for _ in range(args.repeats):
        for name, run in runs.items():
            times[name] = min(times[name], run())
    for name, seconds in times.items():
        print(f"{name:28s} {seconds:7.1f} s  {tokens / seconds:9.0f} tokens/s  (best of {args.repeats})")
    for name in list(times)[1:]:
        print(f"ratio ours / {name}: {times[name] / times['ours']:.2f}x")
    without, with_dropout = attention_dropout_cost(args.preset, args.batch_size, device, args.repeats)
    print(
        f"{args.preset} training step without / with attention dropout 0.1: {without:.3f} s / {with_dropout:.3f} s "
        f"(dropout costs {with_dropout / without:.2f}x)"
    )


if __name__ == "__main__":
    main()
