"""Masked-LM pre-training sweep, judged by the null-calibrated gate labels (issue 15, docs/benchmarks.md).

Per setting: pre-train one seed (bertgeom.pretrain.pretrain_seed; the model directory and its
pretrain_log.csv are kept under --out/<setting>/, a rerun reuses a finished setting), then label
every head of the MLM encoder exactly as the workflow does: the subset sequences of the default
run (the first `activations.subset_per_class` test sequences of each class), the gate scores,
nulls and tests of bertgeom.stats.gates (Labeller), the closed gate's null from the untrained
model of the same architecture with weights from `patterns.nulls.seed`
(bertgeom.stats.null_model), every `patterns` setting from the schema defaults (load_config).
Reported per setting: label counts, the number of gate types besides open (distinct labels among
the six structured gates; `multiple`, `none` and `open` are not counted) and the largest effect
(score / null mean) per gate over the heads.

    snakemake results/tokens/{train,val,test}.parquet --cores 1 --directory WORK   # the default data
    .venv/bin/python benchmarks/sweep_pretrain.py --tokens WORK/results/tokens --out OUT [--only NAME ...]
    .venv/bin/python benchmarks/sweep_pretrain.py --tokens ... --out OUT --finetune NAME --epochs 2 4 [--seeds 0 1 2]
    .venv/bin/python benchmarks/sweep_pretrain.py --out OUT --only NAME ... --plot curves.png
    .venv/bin/python benchmarks/sweep_pretrain.py --tokens ... --out OUT --only NAME ... --offsets

--finetune pre-trains (or reuses) a setting for every --seeds, fine-tunes the classifier from each
encoder (bertgeom.train.fit with the train block of config/config.yaml, a new head), prints test
macro-F1 per epoch count and labels the fine-tuned heads too. Run with nothing else heavy on the
machine and one thread: CPU seconds are part of the result.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import f1_score
from transformers import BertForMaskedLM, BertForSequenceClassification

from bertgeom.config import ROOT, load_config
from bertgeom.model import label_maps, predict_probs
from bertgeom.pretrain import pretrain_seed
from bertgeom.stats.gates import STRUCTURED, Labeller, closed_nulls, scores_of
from bertgeom.stats.null_model import matrices, null_model_tables, subset_sequences
from bertgeom.train import configure_torch, fit, load_split

# Exploration at 600 steps (learning rate, batch, mask rate, window), then around M30 (small,
# windows of 64 tokens, batch 16, 30% single-token masking). LINEAR: warm-up over 5% of the steps,
# then linear decay to 0; WSD: warm-up 5%, constant lr, linear decay over the last 20%.
LINEAR = dict(warmup_ratio=0.05, decay_ratio=0.95)
WSD = dict(warmup_ratio=0.05, decay_ratio=0.2)
X600 = dict(window=64, batch_size=16, mask_rate=0.15, span=1, lr=1e-3, steps=600, **LINEAR)
M30 = dict(window=64, batch_size=16, mask_rate=0.3, span=1, lr=1e-3, steps=2000, **LINEAR)
W30 = {**M30, **WSD}
SIN = dict(position_init="sinusoidal")
SETTINGS: dict[str, tuple[str, dict]] = {
    # first sweep (measured on the data of commit 17015e1; see docs/benchmarks.md)
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
    "wsd-2000": ("small", {**W30, "steps": 2000}),
    "wsd-1500": ("small", {**W30, "steps": 1500}),
    # second sweep (data of the current generator): wsd schedule x position init x masking x window x steps x size
    "wsd-1000": ("small", {**W30, "steps": 1000}),
    "sin-wsd-1000": ("small", {**W30, "steps": 1000, **SIN}),
    "sin-wsd-1500": ("small", {**W30, "steps": 1500, **SIN}),
    "sin-wsd-1500-span3": ("small", {**W30, "steps": 1500, "span": 3, **SIN}),
    "wsd-1500-span3": ("small", {**W30, "steps": 1500, "span": 3}),
    "wsd-1500-span5": ("small", {**W30, "steps": 1500, "span": 5}),
    "wsd-1500-span3-w32": ("small", {**W30, "steps": 1500, "span": 3, "window": 32}),
    "sin-wsd-1500-span3-w32": ("small", {**W30, "steps": 1500, "span": 3, "window": 32, **SIN}),
    "sin-wsd-1500-w32": ("small", {**W30, "steps": 1500, "window": 32, **SIN}),
    "sin-wsd-1500-m15": ("small", {**W30, "steps": 1500, "mask_rate": 0.15, **SIN}),
    "sin-wsd-2000": ("small", {**W30, "steps": 2000, **SIN}),
    "tiny-sin-wsd-3000": ("tiny", {**W30, "steps": 3000, **SIN}),
}
LABELS = ["directional", "closed", "backward_contextual", "forward_contextual", "instance", "cluster",
          "multiple", "none", "open"]  # fmt: skip


def patterns() -> dict:
    return load_config()["patterns"]


def null_of(model_config: Path, tokens: Path, pat: dict, per_class: int) -> tuple[dict, set]:
    """The closed gate's null per layer and the subset's seq_ids, as rule null_model makes them."""
    scores = null_model_tables(str(model_config), [str(tokens / "test.parquet")], pat, per_class)["scores"]
    return closed_nulls(scores, pat["min_effect"]["closed"]), set(scores["seq_id"])


@torch.inference_mode()
def label_heads(encoder, sequences: list, pat: dict, null: tuple, seed: int) -> dict[str, pd.DataFrame]:
    """gates and gate_tests of every head of `encoder` (eager attention) on `sequences`, labelled
    by bertgeom.stats.gates.Labeller as rule attention_patterns does."""
    encoder.eval()
    labeller, rows = Labeller(pat, null, seed), []
    for record, a in matrices(encoder, sequences):
        rows.append({**record, **{f"score_{g}": s for g, s in scores_of(a, pat).items()}})
        labeller.add(record, a)
    tables = labeller.tables(pd.DataFrame(rows), matrices(encoder, sequences))
    return {name: tables[name] for name in ("gates", "gate_tests")}


def label_summary(tables: dict[str, pd.DataFrame]) -> dict:
    """Label counts, gate types besides open, the passed sets of `multiple` heads and the largest
    effect per structured gate."""
    counts = tables["gates"]["gate"].value_counts()
    tests = tables["gate_tests"]
    return {
        **{label: int(counts.get(label, 0)) for label in LABELS},
        "gate_types": sum(int(counts.get(g, 0) > 0) for g in STRUCTURED),
        "multiple_passed": " ".join(sorted(set(tables["gates"].query("gate == 'multiple'")["passed"]))),
        **{f"max_effect_{g}": float(tests.loc[tests.gate == g, "effect"].max()) for g in STRUCTURED},
    }


def pretrained(name: str, tokens: Path, out: Path, seed: int, threads: int) -> tuple[Path, dict]:
    """The model directory of a setting and seed (pre-trained unless it exists) and its info."""
    preset, settings = SETTINGS[name]
    model_dir = out / (name if seed == 0 else f"{name}-seed{seed}")
    if not (model_dir / "pretrain_info.json").is_file():
        pretrain_seed(tokens / "train.parquet", tokens, model_dir, out / f".ckpt-{model_dir.name}", preset, settings,
                      seed, threads)  # fmt: skip
    return model_dir, json.loads((model_dir / "pretrain_info.json").read_text())


def setting_row(name: str, model_dir: Path, info: dict, summary: dict) -> dict:
    preset, settings = SETTINGS[name]
    log = pd.read_csv(model_dir / "pretrain_log.csv")
    return {
        "setting": name,
        "seed": info["seed"],
        "preset": preset,
        **{k: settings.get(k) for k in ("window", "batch_size", "span", "mask_rate", "lr", "steps", "decay_ratio")},
        "position_init": settings.get("position_init", "random"),
        "cpu_s": info["cpu_s_this_run"] if not info["resumed_from_step"] else float("nan"),
        "final_loss": info["final_loss"],
        "final_acc": info["final_accuracy"],
        "loss@500": log.loc[log.step <= 500, "loss"].tail(20).mean(),
        **summary,
    }


def cached_summary(path: Path, model_dir: Path, compute) -> dict:
    """A summary JSON beside the model, recomputed when the model is newer."""
    if path.is_file() and path.stat().st_mtime > (model_dir / "model.safetensors").stat().st_mtime:
        return json.loads(path.read_text())
    summary = compute()
    path.write_text(json.dumps(summary, indent=1))
    return summary


def sweep(args) -> None:
    pat, per_class = patterns(), load_config()["activations"]["subset_per_class"]
    nulls, rows = {}, []
    for name in args.only:
        began = time.perf_counter()
        for seed in args.seeds:
            model_dir, info = pretrained(name, args.tokens, args.out, seed, args.threads)
            if info["preset"] not in nulls:
                nulls[info["preset"]] = null_of(model_dir / "config.json", args.tokens, pat, per_class)
            sequences = subset_sequences([str(args.tokens / "test.parquet")], per_class, 10**9)

            def compute():
                encoder = BertForMaskedLM.from_pretrained(model_dir, attn_implementation="eager").bert
                return label_summary(label_heads(encoder, sequences, pat, nulls[info["preset"]], seed))

            summary = cached_summary(model_dir / "labels.json", model_dir, compute)
            rows.append(setting_row(name, model_dir, info, summary))
            print(pd.DataFrame([rows[-1]]).T.to_string(header=False), flush=True)
        print(f"({name}: {time.perf_counter() - began:.0f} s wall with labelling)", flush=True)
    table = pd.DataFrame(rows)
    table.to_csv(args.out / f"labels-{int(time.time())}.csv", index=False)
    with pd.option_context("display.width", 250, "display.max_columns", 60, "display.float_format", "{:.3g}".format):
        print("\n## summary\n", table.to_string(index=False))


def finetune(args) -> None:
    """Fine-tune the classifier from a setting's encoder (every --seeds, every --epochs); test
    macro-F1 and the fine-tuned heads' labels."""
    config = load_config(ROOT / "config" / "config.yaml")
    classes, train_cfg = config["classes"], config["train"]
    pat, per_class = patterns(), config["activations"]["subset_per_class"]
    train, val, test = (load_split(args.tokens / f"{s}.parquet", len(classes)) for s in ("train", "val", "test"))
    sequences = subset_sequences([str(args.tokens / "test.parquet")], per_class, 10**9)
    id2label, label2id = label_maps(classes)
    rows = []
    for seed in args.seeds:
        model_dir, info = pretrained(args.finetune, args.tokens, args.out, seed, args.threads)
        configure_torch(torch.device("cpu"), args.threads, True)
        null = null_of(model_dir / "config.json", args.tokens, pat, per_class)
        mlm = BertForMaskedLM.from_pretrained(model_dir, attn_implementation="eager").bert
        mlm_summary = label_summary(label_heads(mlm, sequences, pat, null, seed))
        rows.append({"seed": seed, "checkpoint": "mlm", "pretrain_cpu_s": info["cpu_s_this_run"], **mlm_summary})
        for epochs in args.epochs:
            torch.manual_seed(seed)  # the new head, as bertgeom.model.build_model seeds it
            model = BertForSequenceClassification.from_pretrained(
                model_dir, num_labels=len(classes), id2label=id2label, label2id=label2id
            )
            cfg = {**train_cfg, "epochs": epochs}
            cpu, wall = time.process_time(), time.perf_counter()
            ckpt = args.out / f".ckpt-ft-{model_dir.name}-{epochs}"
            fingerprint = f"ft-{model_dir.name}-{epochs}-{cfg['lr']}"
            record = fit(model, train, val, cfg, seed, torch.device("cpu"), ckpt, fingerprint)
            shutil.rmtree(ckpt, ignore_errors=True)  # a rerun fine-tunes afresh
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            pred = predict_probs(model, test.ids, test.n_tokens, 32).argmax(1).numpy()
            f1 = f1_score(test.labels.numpy(), pred, average="macro")
            model.config._attn_implementation = "eager"
            summary = label_summary(label_heads(model.bert, sequences, pat, null, seed))
            val_f1 = " ".join(f"{e['val_macro_f1']:.4f}" for e in record["epochs"])  # per epoch
            rows.append({"seed": seed, "checkpoint": f"finetuned-{epochs}ep", "test_macro_f1": f1,
                         "val_macro_f1": val_f1, "finetune_cpu_s": cpu, "finetune_wall_s": wall, **summary})  # fmt: skip
            print(pd.DataFrame(rows[-2:]).T.to_string(header=False), flush=True)
    table = pd.DataFrame(rows)
    table.to_csv(args.out / f"finetune-{args.finetune}-{int(time.time())}.csv", index=False)
    with pd.option_context("display.width", 250, "display.max_columns", 60, "display.float_format", "{:.4g}".format):
        print("\n## fine-tuned\n", table.to_string(index=False))


@torch.inference_mode()
def offset_profile(args) -> None:
    """Per head of --only's MLM encoders: mean attention of a non-special query on the keys at
    offsets -3..+3 (key - query) and on [CLS] + [SEP], over the subset sequences (uniform: 1/n)."""
    sequences = subset_sequences([str(args.tokens / "test.parquet")], load_config()["activations"]["subset_per_class"], 10**9)
    for name in args.only:
        encoder = BertForMaskedLM.from_pretrained(args.out / name, attn_implementation="eager").bert.eval()
        total = 0
        for _, ids in sequences:
            att = torch.stack(encoder(input_ids=torch.from_numpy(ids.astype("int64"))[None], output_attentions=True).attentions)
            att = att[:, 0].double()  # [layer, head, query, key]
            bands = [torch.diagonal(att, o, -2, -1)[..., 4:-4].mean(-1) for o in range(-3, 4)]  # queries 1..n-2 only
            total = total + torch.stack([*bands, (att[..., 1:-1, 0] + att[..., 1:-1, -1]).mean(-1)], -1)
        profile = (total / len(sequences)).flatten(0, 1).numpy()
        columns = [f"{o:+d}" for o in range(-3, 4)] + ["cls+sep"]
        index = pd.MultiIndex.from_product([range(att.shape[0]), range(att.shape[1])], names=["layer", "head"])
        print(f"\n## {name}: attention per key offset (mean n {np.mean([len(i) for _, i in sequences]):.0f})")
        print(pd.DataFrame(profile, index=index, columns=columns).round(3).to_string())


def plot_curves(args) -> None:
    """Masked loss and accuracy per step (means over 20 steps) of the --only settings found under --out."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 3.6), constrained_layout=True)
    for name in args.only:
        path = args.out / name / "pretrain_log.csv"
        if not path.is_file():
            continue
        log = pd.read_csv(path).rolling(20, min_periods=1).mean()
        loss_ax.plot(log["step"], log["loss"], lw=1, label=name)
        acc_ax.plot(log["step"], log["accuracy"], lw=1, label=name)
    loss_ax.set(xlabel="step", ylabel="masked-token loss (nats)", title="MLM loss")
    acc_ax.set(xlabel="step", ylabel="masked-token accuracy", title="MLM accuracy")
    acc_ax.legend(fontsize=6, ncol=2)
    fig.savefig(args.plot, dpi=110)
    print("wrote", args.plot)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=Path, default=Path("results/tokens"))
    parser.add_argument("--out", type=Path, default=Path("results/sweep_pretrain"))
    parser.add_argument("--only", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--finetune", choices=list(SETTINGS))
    parser.add_argument("--epochs", type=int, nargs="+", default=[4])
    parser.add_argument("--offsets", action="store_true", help="only print the per-offset attention of --only")
    parser.add_argument("--plot", type=Path, help="only draw the loss/accuracy curves of --only into this PNG")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    (offset_profile if args.offsets else plot_curves if args.plot else finetune if args.finetune else sweep)(args)


if __name__ == "__main__":
    main()
