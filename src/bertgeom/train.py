"""Per-seed training of the BERT variant classifier, on CPU or CUDA, resumable and reproducible.

One call of `train_seed` trains one model (one seed) on results/tokens/train.parquet, checks it on
val.parquet after every epoch, and writes results/models/seed{seed}/ (docs/outputs.md).

Reproducibility: the seed fixes the initial weights, the dropout masks (torch's global generator)
and the data order (a permutation per epoch drawn from numpy's SeedSequence([seed, epoch])); on
CPU deterministic algorithms are enforced, so the same seed and thread count give bit-identical
weights. A checkpoint (weights, AdamW moments, schedule position, RNG states, log so far) is
written after every epoch under results/checkpoints/seed{seed}/ as safetensors + JSON; a rerun
after a kill resumes from the last complete epoch and ends where an uninterrupted run ends.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from sklearn.metrics import f1_score
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from bertgeom import io, resumable
from bertgeom.handoff import add_remote_tokenizer, make_readable
from bertgeom.model import autocast, build_model, count_parameters, predict_probs, select_device, trim_batch
from bertgeom.tokens import TOKENIZER_NAMES, KmerTokenizer

log = logging.getLogger("bertgeom.train")

LOG_COLUMNS = ["step", "epoch", "loss", "lr", "grad_norm", "tokens", "tokens_per_s", "elapsed_s"]
# The files of a model directory: {name in rules and code: file name} (docs/outputs.md).
MODEL_FILES = {
    "model": "model.safetensors",
    "config": "config.json",
    **TOKENIZER_NAMES,
    "train_log": "train_log.csv",
    "training_info": "training_info.json",
}


@dataclass
class Split:
    """One tokenized split in memory: ids int32 [N, max_length], n_tokens/labels int64 [N]."""

    ids: torch.Tensor
    n_tokens: torch.Tensor
    labels: torch.Tensor
    seq_ids: list[str]

    def __len__(self) -> int:
        return len(self.seq_ids)


def load_split(path: str | Path, n_classes: int | None, labelled: bool = True) -> Split:
    """A tokens parquet (docs/outputs.md: seq_id, label, input_ids, n_tokens), validated, as tensors.

    labelled=False or n_classes None: the labels are not checked (background sequences for outlier
    exposure; pre-training, which does not use them).
    """
    table, _ = io.read_tokens(path, n_classes if labelled else None, columns=io.TOKEN_COLUMNS)
    ids = io.to_matrix(table["input_ids"])
    n_tokens = table["n_tokens"].to_numpy().astype(np.int64)
    labels = table["label"].to_numpy().astype(np.int64)
    return Split(
        torch.from_numpy(np.array(ids, dtype=np.int32, order="C")),  # a writable copy
        torch.from_numpy(n_tokens),
        torch.from_numpy(labels),
        table["seq_id"].to_pylist(),
    )


def batch_order(n: int, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """The row indices of each batch of `epoch`: a permutation fixed by (seed, epoch) alone.

    Independent of any generator state, so a resumed run sees exactly the batches it would have seen.
    The last batch may be smaller (nothing is dropped).
    """
    order = np.random.default_rng([seed, epoch]).permutation(n)
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


def configure_torch(device: torch.device, threads: int, deterministic: bool) -> None:
    """Threads on CPU; TF32 matmuls on CUDA; deterministic algorithms (strict on CPU)."""
    torch.set_num_threads(max(1, threads))
    if device.type == "cuda":
        # TF32 for the fp32 matmuls left outside bf16 autocast: ~8x the fp32 rate, 10-bit mantissa
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    # CUDA's fused attention backward has no deterministic variant: warn there instead of failing.
    torch.use_deterministic_algorithms(deterministic, warn_only=device.type == "cuda")


def make_optimizer(model: torch.nn.Module, train_cfg: dict) -> torch.optim.AdamW:
    """AdamW (the fused kernel, CPU or CUDA, as transformers.Trainer's default adamw_torch_fused);
    biases and LayerNorm weights are not decayed (as Trainer does)."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        (no_decay if name.endswith("bias") or "LayerNorm" in name else decay).append(param)
    groups = [
        {"params": decay, "weight_decay": train_cfg["weight_decay"]},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=train_cfg["lr"], eps=train_cfg["eps"], fused=True)


def training_steps(n_train: int, train_cfg: dict) -> tuple[int, int]:
    """(total optimiser steps, warm-up steps) as transformers.Trainer counts them."""
    total = math.ceil(n_train / train_cfg["batch_size"]) * train_cfg["epochs"]
    return total, math.ceil(train_cfg["warmup_ratio"] * total)


# ---------------------------------------------------------------------------------------------
# Checkpoints: {unit}{n}.safetensors (tensors) + {unit}{n}.json (everything else), JSON written last.
# `unit` is "epoch" for fine-tuning (bertgeom.train), "step" for pre-training (bertgeom.pretrain).


def save_checkpoint(ckpt_dir: Path, epoch: int, model, optimizer, scheduler, state: dict, unit: str = "epoch") -> None:
    """Write the state after `epoch` (1-based; a step count when unit is "step") and drop older checkpoints."""
    tensors, seen = {}, set()
    for key, value in model.state_dict().items():
        value = value.detach().cpu().contiguous()
        shared = value.data_ptr() in seen  # tied weights (a masked LM's decoder = word embeddings)
        seen.add(value.data_ptr())
        tensors[f"model.{key}"] = value.clone() if shared else value
    optim = optimizer.state_dict()
    for index, slots in optim["state"].items():
        for key, value in slots.items():
            tensors[f"optim.{index}.{key}"] = value.detach().cpu().contiguous()
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        for i, rng in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = rng
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    weights = ckpt_dir / f"{unit}{epoch}.safetensors"
    with io.atomic_path(weights, ".safetensors") as tmp:
        save_file(tensors, str(tmp))
    meta = {
        **state,
        unit: epoch,
        "param_groups": optim["param_groups"],
        "scheduler": {k: v for k, v in scheduler.state_dict().items() if k != "lr_lambdas"},
        "weights_sha256": io.sha256_file(weights),
    }
    resumable.write_json(ckpt_dir / f"{unit}{epoch}.json", meta)
    for old in ckpt_dir.glob(f"{unit}*.*"):
        if old.stem != f"{unit}{epoch}":
            old.unlink()


def load_checkpoint(ckpt_dir: Path, fingerprint: str, model, optimizer, scheduler, unit: str = "epoch") -> dict | None:
    """Restore the latest intact checkpoint made with the same fingerprint; None if there is none.

    Temporaries of a killed save are removed first; a checkpoint whose JSON or weights fail their
    checksums is logged, deleted and passed over for the one before it (if any).
    """
    io.sweep_temporaries(directories=[ckpt_dir])
    metas = sorted(ckpt_dir.glob(f"{unit}*.json"), key=lambda p: int(p.stem[len(unit) :])) if ckpt_dir.is_dir() else []
    for path in reversed(metas):
        meta = _intact_checkpoint(path)
        if meta is not None:
            break
    else:
        return None
    if meta.get("fingerprint") != fingerprint:
        log.warning("%s: checkpoint from another configuration or data; starting afresh", path)
        return None
    tensors = load_file(str(path.with_suffix(".safetensors")))
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    slots: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, index, name = key.split(".", 2)
            slots.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": slots, "param_groups": meta["param_groups"]})
    scheduler.load_state_dict({**meta["scheduler"], "lr_lambdas": [None] * len(optimizer.param_groups)})
    torch.set_rng_state(tensors["rng.torch"])
    cuda_states = [tensors[k] for k in sorted(tensors) if k.startswith("rng.cuda.")]
    if cuda_states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda_states)
    log.info("resuming from %s (%s %d of the run done)", path, unit, meta[unit])
    return meta


def _intact_checkpoint(meta_path: Path) -> dict | None:
    """A checkpoint's metadata if its JSON and its weights are intact; else None (the checkpoint deleted)."""
    weights = meta_path.with_suffix(".safetensors")
    try:
        meta = resumable.read_json(meta_path)
        resumable.check_file(weights, meta.get("weights_sha256", ""))
    except resumable.Damaged as damage:
        resumable.discard(damage, meta_path, weights)
        return None
    return meta


# ---------------------------------------------------------------------------------------------
# The loop.


def device_batch(split: Split, rows: np.ndarray, device: torch.device):
    """(ids, mask, labels) of `rows`, trimmed to the longest real sequence, on `device`.

    ids/mask int64 [batch, L], labels int64 [batch]. On CUDA, L is rounded up to a multiple of 8
    (tensor-core shapes) and the copy goes through pinned memory so it overlaps the running step.
    """
    rows = torch.from_numpy(rows)
    cuda = device.type == "cuda"
    ids, mask = trim_batch(split.ids[rows], split.n_tokens[rows], multiple=8 if cuda else 1)
    tensors = (ids, mask, split.labels[rows])
    if cuda:
        tensors = (t.pin_memory() for t in tensors)
    return tuple(t.to(device, non_blocking=cuda) for t in tensors)


def train_step(
    model, optimizer, scheduler, ids, mask, labels, grad_clip: float, device, bf16: bool, outliers=None, weight=0.0
):
    """One AdamW step on one batch; returns (loss, grad_norm) as 0-d tensors (no host sync).

    outliers: (ids, mask) of background sequences, pushed towards the uniform distribution with
    `weight` (outlier exposure, Hendrycks et al. 2019: cross-entropy to uniform = logsumexp - mean logit).
    """
    with autocast(device, bf16):
        logits = model(input_ids=ids, attention_mask=mask).logits
    loss = F.cross_entropy(logits.float(), labels)
    if outliers is not None:
        with autocast(device, bf16):
            out = model(input_ids=outliers[0], attention_mask=outliers[1]).logits.float()
        loss = loss + weight * (torch.logsumexp(out, dim=1) - out.mean(dim=1)).mean()
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.detach(), grad_norm.detach()


def validate(model, split: Split, batch_size: int, device, bf16: bool) -> dict:
    """Loss, accuracy and macro-F1 of the model on a split (eval mode; back to train mode after)."""
    if not len(split):
        return {}
    probs = predict_probs(model, split.ids, split.n_tokens, batch_size, device, bf16)
    model.train()
    pred = probs.argmax(1).numpy()
    labels = split.labels.numpy()
    nll = F.nll_loss(torch.log(probs.clamp_min(1e-12)), split.labels).item()
    return {
        "val_loss": nll,
        "val_accuracy": float((pred == labels).mean()),
        "val_macro_f1": float(f1_score(labels, pred, average="macro", zero_division=0)),
    }


def fit(
    model,
    train: Split,
    val: Split,
    train_cfg: dict,
    seed: int,
    device: torch.device,
    ckpt_dir: Path,
    fingerprint: str,
    background: Split | None = None,
) -> dict:
    """Train `model` in place for train_cfg["epochs"] epochs; returns the run's record.

    background: sequences of no class; each step also sees batch_size // 2 of them (drawn per epoch
    from SeedSequence([seed, 1000 + epoch])) with outlier-exposure weight train_cfg["outlier_weight"].

    The record has `log` (one dict per step, LOG_COLUMNS), `epochs` (validation after each epoch),
    `resumed_from_epoch`, `steps`.
    """
    batch_size, epochs = train_cfg["batch_size"], train_cfg["epochs"]
    bf16, log_every = train_cfg["bf16"], train_cfg["log_every"]
    optimizer = make_optimizer(model, train_cfg)
    total, warmup = training_steps(len(train), train_cfg)
    scheduler = get_linear_schedule_with_warmup(optimizer, warmup, total)
    record = {"log": [], "epochs": [], "resumed_from_epoch": 0, "fingerprint": fingerprint}
    resumed = load_checkpoint(ckpt_dir, fingerprint, model, optimizer, scheduler)
    if resumed:
        record.update(log=resumed["log"], epochs=resumed["epochs"], resumed_from_epoch=resumed["epoch"])
    step = len(record["log"])
    forward = torch.compile(model) if train_cfg["compile"] and device.type == "cuda" else model
    log.info(
        "training %d sequences, %d steps (%d warm-up), batch %d, %d epochs on %s",
        len(train),
        total,
        warmup,
        batch_size,
        epochs,
        device,
    )
    model.train()
    bar = tqdm(total=total, initial=step, desc=f"seed {seed}", unit="step", disable=None, mininterval=2)
    start = time.perf_counter() - (record["log"][-1]["elapsed_s"] if record["log"] else 0.0)
    for epoch in range(record["resumed_from_epoch"] + 1, epochs + 1):
        pending: list[tuple] = []
        mark = time.perf_counter()
        batches = batch_order(len(train), batch_size, seed, epoch)
        extra = outlier_batches(background, len(batches), max(1, batch_size // 2), seed, epoch)
        for batch, out_rows in zip(batches, extra):
            ids, mask, labels = device_batch(train, batch, device)
            outliers = device_batch(background, out_rows, device)[:2] if out_rows is not None else None
            lr = scheduler.get_last_lr()[0]
            loss, grad_norm = train_step(
                forward, optimizer, scheduler, ids, mask, labels, train_cfg["grad_clip"], device, bf16,
                outliers, train_cfg["outlier_weight"],
            )
            step += 1
            pending.append((step, epoch, loss, lr, grad_norm, int(train.n_tokens[batch].sum())))
            bar.update()
            if len(pending) == log_every:
                mark = _flush(pending, record["log"], mark, start, bar)
        if pending:
            _flush(pending, record["log"], mark, start, bar)
        record["epochs"].append(
            {"epoch": epoch, "step": step, **validate(model, val, train_cfg["eval_batch_size"], device, bf16)}
        )
        log.info("epoch %d/%d: %s", epoch, epochs, _fmt(record["epochs"][-1]))
        save_checkpoint(
            ckpt_dir, epoch, model, optimizer, scheduler, {k: record[k] for k in ("log", "epochs", "fingerprint")}
        )
    bar.close()
    record["steps"] = step
    return record


def outlier_batches(background: Split | None, n_batches: int, size: int, seed: int, epoch: int) -> list:
    """Rows of the background split for each step of an epoch (None everywhere without one)."""
    if background is None or not len(background):
        return [None] * n_batches
    rng = np.random.default_rng([seed, 1000 + epoch])
    return [rng.choice(len(background), size=min(size, len(background)), replace=False) for _ in range(n_batches)]


def _flush(pending: list[tuple], rows: list[dict], mark: float, start: float, bar) -> float:
    """Turn pending steps into log rows (one host sync per interval) and log the interval."""
    losses = torch.stack([p[2] for p in pending]).float().tolist()
    norms = torch.stack([p[4] for p in pending]).float().tolist()
    now = time.perf_counter()
    tokens = sum(p[5] for p in pending)
    rate = tokens / max(now - mark, 1e-9)
    for (step, epoch, _, lr, _, n), loss, norm in zip(pending, losses, norms):
        rows.append(
            dict(
                step=step,
                epoch=epoch,
                loss=loss,
                lr=lr,
                grad_norm=norm,
                tokens=n,
                tokens_per_s=rate,
                elapsed_s=now - start,
            )
        )
    last = rows[-1]
    bar.set_postfix(loss=f"{np.mean(losses):.4f}", tok_s=f"{rate:.0f}")
    log.info(
        "step %d epoch %d loss %.4f lr %.3g grad_norm %.3f %.0f tokens/s",
        last["step"],
        last["epoch"],
        np.mean(losses),
        last["lr"],
        last["grad_norm"],
        rate,
    )
    pending.clear()
    return now


def _fmt(d: dict) -> str:
    return ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in d.items())


# ---------------------------------------------------------------------------------------------
# One seed, end to end.


def train_seed(
    train_path: str | Path,
    val_path: str | Path,
    tokenizer_dir: str | Path,
    out_dir: str | Path,
    ckpt_dir: str | Path,
    classes: list[str],
    model_cfg: dict,
    train_cfg: dict,
    seed: int,
    threads: int = 1,
    recorded: dict | None = None,
    background: str | Path | None = None,
    encoder: str | Path | None = None,
) -> dict:
    """Train the model of one seed on the tokens at `train_path` into `out_dir`; returns training_info.

    model_cfg: config `model` (init and its preset or checkpoint); train_cfg: config `train`
    (execution-only keys included: device, compile, eval_batch_size, log_every). `recorded`: other
    settings stored in training_info.json's `config` beside classes, model and train (the QC settings
    and reference that `bertgeom predict` applies to new genomes). Writes model.safetensors,
    config.json, the tokenizer files, train_log.csv and training_info.json into out_dir (each
    atomically), then removes `ckpt_dir`. background: a tokens parquet of sequences of no class for
    outlier exposure with weight train_cfg["outlier_weight"]; None: none. encoder: model.init mlm, the
    seed's pre-trained encoder directory (rule pretrain), fine-tuned with a new classification head.
    training_info.json's init_digest identifies the weights training started from (pretrain.state_digest).
    """
    from bertgeom.pretrain import state_digest  # not at the top: bertgeom.pretrain imports this module

    out_dir, ckpt_dir = Path(out_dir), Path(ckpt_dir)
    device = select_device(train_cfg["device"], "config train.device")
    configure_torch(device, threads, train_cfg["deterministic"])
    tokenizer = KmerTokenizer.load(tokenizer_dir)
    train = load_split(train_path, len(classes))
    val = load_split(val_path, len(classes))
    if not len(train):
        raise ValueError(f"{train_path}: no training sequences")
    outliers = load_split(background, len(classes), labelled=False) if background else None
    fingerprint = io.config_hash(
        {
            "classes": classes,
            "model": model_cfg,
            "train": {k: v for k, v in train_cfg.items() if k not in ("seeds", "log_every", "eval_batch_size")},
            "seed": seed,
            "device": device.type,
            "train_sha256": io.sha256_file(train_path),
            "vocab": len(tokenizer),
            "background_sha256": io.sha256_file(background) if background else None,
            "encoder_sha256": io.sha256_file(Path(encoder) / MODEL_FILES["model"]) if encoder else None,
        }
    )
    model = build_model(model_cfg, classes, tokenizer, seed, encoder=encoder).to(device)
    init_digest = state_digest(model)
    log.info(
        "seed %d: %s model, %d parameters (%d outside the embeddings), vocabulary %d",
        seed,
        model_cfg["init"],
        count_parameters(model),
        count_parameters(model, embeddings=False),
        len(tokenizer),
    )
    began = time.perf_counter()
    record = fit(model, train, val, train_cfg, seed, device, ckpt_dir, fingerprint, outliers)
    config = {"classes": classes, "model": model_cfg, "train": train_cfg, **(recorded or {})}
    info = {
        "seed": seed,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
        "deterministic": train_cfg["deterministic"],
        "n_train": len(train),
        "n_val": len(val),
        "n_background": len(outliers) if outliers is not None else 0,
        "steps": record["steps"],
        "resumed_from_epoch": record["resumed_from_epoch"],
        "wall_s_this_run": time.perf_counter() - began,
        "train_tokens_per_s": _mean_rate(record["log"]),
        "parameters": count_parameters(model),
        "epochs": record["epochs"],
        "fingerprint": record["fingerprint"],
        "init_digest": init_digest,
        "config_sha256": io.config_hash(config),
        "config": config,
        "versions": io.package_versions(),
    }
    save_model_dir(model, tokenizer, out_dir, record["log"], info)
    shutil.rmtree(ckpt_dir, ignore_errors=True)
    return info


def _mean_rate(rows: list[dict]) -> float:
    """Real tokens per second over the whole run (from the per-step log)."""
    return sum(r["tokens"] for r in rows) / rows[-1]["elapsed_s"] if rows else float("nan")


def save_model_dir(
    model,
    tokenizer,
    out_dir: Path,
    log_rows: list[dict],
    info: dict,
    columns: list[str] = LOG_COLUMNS,
    log_name: str = "train_log.csv",
    info_name: str = "training_info.json",
) -> None:
    """Model, tokenizer, the log CSV and the info JSON, each file renamed into place when complete."""
    save_hf_directory(model, tokenizer, out_dir)
    with io.atomic_path(out_dir / log_name, ".csv") as tmp:
        with open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            writer.writerows(log_rows)
    io.write_json(out_dir / info_name, info)


def save_hf_directory(model, tokenizer, out_dir: Path) -> None:
    """A Hugging Face directory (weights, config, tokenizer files), each file renamed into place when complete."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with io.staging_directory(out_dir / MODEL_FILES["model"]) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save(tmp)
        add_remote_tokenizer(tmp)  # AutoTokenizer(dir, trust_remote_code=True) takes raw spike sequences
        make_readable(tmp)  # safetensors writes 0600
        for path in tmp.iterdir():
            os.replace(path, out_dir / path.name)
