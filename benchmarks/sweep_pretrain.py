"""Masked-LM pre-training sweep: which corpus/objective/budget makes structured attention emerge.

Per setting: pre-train one seed (bertgeom.pretrain.pretrain_seed), keep the model directory and its
loss CSV under --out/<setting>/ (a rerun reuses a finished setting), then measure every head's
attention on the first --per-class full-length test sequences of each class (eager attention,
positions 0..n-1 as the activations stage sees them) with the project's own measures
(bertgeom.stats.attention.matrix_metrics and gate_scores, the patterns defaults of the schema).
Each gate score is printed beside the score of uniform attention over the same n keys
(1 for the entropy, w/n for the contextual masses, 1/n for self, 2/n for [CLS]+[SEP], 5/n for the
top-5 column share, 0 for cluster) and beside the same model's random initial weights (`init`).
These are effect sizes, not the null-calibrated gate labels of issue 14: the saved checkpoints are
kept so that the labels can be computed later.

    .venv/bin/python benchmarks/sweep_pretrain.py [--only NAME ...] [--tokens DIR] [--out DIR]
    .venv/bin/python benchmarks/sweep_pretrain.py --finetune NAME --epochs 1 2 4

--finetune fine-tunes the classifier from a setting's encoder (bertgeom.train.fit, the default
config's train block, new head) and prints test macro-F1 per epoch count, plus the heads after
fine-tuning. Run with nothing else heavy on the machine: CPU seconds are part of the result.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import f1_score
from transformers import BertForMaskedLM, BertForSequenceClassification

from bertgeom.config import ROOT, load_config
from bertgeom.model import label_maps, predict_probs
from bertgeom.pretrain import init_model, pretrain_seed
from bertgeom.stats.attention import GATES, gate_scores, matrix_metrics
from bertgeom.tokens import KmerTokenizer
from bertgeom.train import Split, configure_torch, fit, load_split

# Exploration at 600 steps (learning rate, batch, mask rate, window), then the sweep proper around
# the candidate default M30 (small, windows of 64 tokens, batch 16, 30% single-token masking).
X600 = dict(window=64, batch_size=16, mask_rate=0.15, span=1, lr=1e-3, steps=600)
M30 = dict(window=64, batch_size=16, mask_rate=0.3, span=1, lr=1e-3, steps=2000, warmup_ratio=0.05)
SETTINGS: dict[str, tuple[str, dict]] = {
    "x-lr1e-3": ("small", X600),
    "x-lr3e-3": ("small", {**X600, "lr": 3e-3}),
    "x-lr1e-2": ("small", {**X600, "lr": 1e-2}),
    "x-b8-lr3e-3": ("small", {**X600, "steps": 1200, "batch_size": 8, "lr": 3e-3}),
    "x-m30": ("small", {**X600, "mask_rate": 0.3}),
    "x-w128-b8": ("small", {**X600, "window": 128, "batch_size": 8}),
    "x-w32-b32": ("small", {**X600, "window": 32, "batch_size": 32}),
    "x-lr2e-3-wu10": ("small", {**X600, "lr": 2e-3, "warmup_ratio": 0.1}),
    "w64-single-1500": ("small", {**X600, "steps": 1500}),
    "m30-2000": ("small", M30),
    "m30-span3": ("small", {**M30, "span": 3}),
    "m15-2000": ("small", {**M30, "mask_rate": 0.15}),
    "m30-w32": ("small", {**M30, "window": 32}),
    "m30-w128-b8": ("small", {**M30, "window": 128, "batch_size": 8}),
    "m30-1000": ("small", {**M30, "steps": 1000}),
    "m30-4000": ("small", {**M30, "steps": 4000}),
    "tiny-m30-2000": ("tiny", M30),
    "tiny-m30-8000": ("tiny", {**M30, "steps": 8000}),
}
SHOWN = ["open", "backward_contextual", "forward_contextual", "instance", "closed", "directional", "cluster"]


def patterns() -> dict:
    return load_config()["patterns"]


def test_sequences(tokens: Path, per_class: int) -> Split:
    """The first `per_class` test sequences of each class (by seq_id)."""
    split = load_split(tokens / "test.parquet", None)
    order = np.argsort(split.seq_ids)
    labels = split.labels.numpy()[order]
    rows = torch.from_numpy(np.concatenate([order[labels == label][:per_class] for label in np.unique(labels)]))
    return Split(split.ids[rows], split.n_tokens[rows], split.labels[rows], [split.seq_ids[i] for i in rows])


@torch.inference_mode()
def head_table(encoder, split: Split, pat: dict) -> pd.DataFrame:
    """Per (layer, head): the mean over sequences of matrix_metrics and gate_scores, beside uniform."""
    encoder.eval()
    rows = []
    for i in range(len(split)):
        n = int(split.n_tokens[i])
        ids = split.ids[i : i + 1, :n].long()
        attentions = encoder(input_ids=ids, output_attentions=True).attentions  # per layer [1, head, query, key]
        for layer, a in enumerate(attentions):
            for head in range(a.shape[1]):
                metrics = matrix_metrics(
                    a[0, head].double().numpy(),
                    pat["window"],
                    pat["top_keys"],
                    pat["min_block"],
                    pat["singular_values"],
                    pat["rank_tol"],
                )
                rows.append({"layer": layer, "head": head, **gate_scores(metrics, pat["top_keys"])})
    return pd.DataFrame(rows).groupby(["layer", "head"], as_index=False).mean()


def uniform_scores(split: Split, pat: dict) -> dict[str, float]:
    """Gate scores of uniform attention over each sequence's n keys, averaged over the sequences."""
    scores = []
    for n in split.n_tokens.tolist():
        metrics = matrix_metrics(
            np.full((n, n), 1.0 / n), pat["window"], pat["top_keys"], pat["min_block"], pat["singular_values"], 1e-3
        )
        scores.append(gate_scores(metrics, pat["top_keys"]))
    return pd.DataFrame(scores).mean().to_dict()


def effect_summary(table: pd.DataFrame, uniform: dict) -> dict:
    """Per gate the largest effect over heads (score / uniform score; for open 1 - entropy, the
    selectivity) and the heads with effect >= 3 (a provisional yardstick, not a label)."""
    summary = {"min_entropy": table["open"].min()}
    for gate in ("backward_contextual", "forward_contextual", "instance", "closed", "directional"):
        effect = table[gate] / uniform[gate]
        summary[f"{gate}_max_x"] = effect.max()
        summary[f"{gate}_heads_3x"] = int((effect >= 3).sum())
    summary["cluster_max"] = table["cluster"].max()
    return summary


def print_heads(name: str, table: pd.DataFrame, uniform: dict) -> None:
    shown = table[["layer", "head", *SHOWN]].copy()
    for gate in SHOWN[1:-1]:
        shown[gate] = [f"{v:.3f} ({v / uniform[gate]:.1f}x)" for v in table[gate]]
    shown["open"] = table["open"].map("{:.3f}".format)
    shown["cluster"] = table["cluster"].map("{:.3f}".format)
    print(f"\n## {name}: per-head gate scores (x = / uniform attention)")
    print(shown.to_string(index=False))


def run_setting(name: str, tokens: Path, out: Path, seed: int, threads: int) -> dict:
    """Pre-train (or reuse) one setting; returns its loss/time record."""
    preset, settings = SETTINGS[name]
    model_dir = out / name
    info_path = model_dir / "pretrain_info.json"
    if not info_path.is_file():
        pretrain_seed(
            tokens / "train.parquet", tokens, model_dir, out / f".ckpt-{name}", preset, settings, seed, threads
        )
    info = json.loads(info_path.read_text())
    log = pd.read_csv(model_dir / "pretrain_log.csv")
    curve = {
        f"loss@{s}": log.loc[log.step <= s, "loss"].tail(20).mean()
        for s in (100, 500, 1000, 2000, 3000)
        if s <= len(log)
    }
    return {
        "setting": name,
        "preset": preset,
        **{k: settings[k] for k in ("window", "batch_size", "span", "mask_rate", "lr", "steps") if k in settings},
        "cpu_s": info["cpu_s_this_run"] if not info["resumed_from_step"] else float("nan"),
        "final_loss": info["final_loss"],
        "final_acc": info["final_accuracy"],
        **curve,
    }


def sweep(args) -> None:
    pat = patterns()
    split = test_sequences(args.tokens, args.per_class)
    uniform = uniform_scores(split, pat)
    print("uniform attention:", {k: round(v, 4) for k, v in uniform.items()})
    tokenizer = KmerTokenizer.load(args.tokens)
    rows = []
    for preset in sorted({SETTINGS[name][0] for name in args.only}):
        table = head_table(init_model(preset, tokenizer, args.seed, "eager").bert, split, pat)
        print_heads(f"init ({preset}, seed {args.seed})", table, uniform)
        rows.append({"setting": f"init-{preset}", "preset": preset, **effect_summary(table, uniform)})
    for name in args.only:
        began = time.perf_counter()
        record = run_setting(name, args.tokens, args.out, args.seed, args.threads)
        encoder = BertForMaskedLM.from_pretrained(args.out / name, attn_implementation="eager").bert
        table = head_table(encoder, split, pat)
        table.to_csv(args.out / name / "heads.csv", index=False)
        print_heads(name, table, uniform)
        rows.append({**record, **effect_summary(table, uniform)})
        print(f"({name}: {time.perf_counter() - began:.0f} s wall with measurement)")
    summary = pd.DataFrame(rows)
    summary.to_csv(args.out / f"summary-{int(time.time())}.csv", index=False)
    with pd.option_context("display.width", 250, "display.max_columns", 40, "display.float_format", "{:.3g}".format):
        print("\n## summary\n", summary.to_string(index=False))


def finetune(args) -> None:
    """Fine-tune the classifier from a setting's encoder for each epoch count; test macro-F1."""
    config = load_config(ROOT / "config" / "config.yaml")
    classes, train_cfg = config["classes"], config["train"]
    configure_torch(torch.device("cpu"), args.threads, True)
    train = load_split(args.tokens / "train.parquet", len(classes))
    val = load_split(args.tokens / "val.parquet", len(classes))
    test = load_split(args.tokens / "test.parquet", len(classes))
    pat, split = patterns(), test_sequences(args.tokens, args.per_class)
    uniform = uniform_scores(split, pat)
    id2label, label2id = label_maps(classes)
    for epochs in args.epochs:
        torch.manual_seed(args.seed)  # the new head, as bertgeom.model.build_model seeds it
        model = BertForSequenceClassification.from_pretrained(
            args.out / args.finetune, num_labels=len(classes), id2label=id2label, label2id=label2id
        )
        cfg = {**train_cfg, "epochs": epochs, **({"lr": args.lr} if args.lr else {})}
        cpu, wall = time.process_time(), time.perf_counter()
        ckpt = args.out / f".ckpt-ft-{args.finetune}-{epochs}"
        record = fit(model, train, val, cfg, args.seed, torch.device("cpu"), ckpt, f"ft-{epochs}-{cfg['lr']}")
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        pred = predict_probs(model, test.ids, test.n_tokens, 32).argmax(1).numpy()
        f1 = f1_score(test.labels.numpy(), pred, average="macro")
        print(
            f"\n{args.finetune} fine-tuned {epochs} epoch(s), lr {cfg['lr']}: test macro-F1 {f1:.4f}, "
            f"val {[round(e['val_macro_f1'], 4) for e in record['epochs']]}, {cpu:.0f} CPU s, {wall:.0f} s wall"
        )
        model.config._attn_implementation = "eager"
        table = head_table(model.bert, split, pat)
        print_heads(f"{args.finetune} fine-tuned {epochs} epoch(s)", table, uniform)
        print({k: round(float(v), 3) for k, v in effect_summary(table, uniform).items()})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=Path, default=Path("/work/baseline/results/tokens"))
    parser.add_argument("--out", type=Path, default=Path("/work/scratch/pretrain"))
    parser.add_argument("--only", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--per-class", type=int, default=2, help="test sequences per class measured")
    parser.add_argument("--finetune", choices=list(SETTINGS))
    parser.add_argument("--epochs", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--lr", type=float, help="fine-tuning learning rate (default: the config's)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    (finetune if args.finetune else sweep)(args)


if __name__ == "__main__":
    main()
