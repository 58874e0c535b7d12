"""Masked-LM pre-training of the BERT encoder on the k-mers of the train split (issue 15).

One call of `pretrain_seed` pre-trains the encoder of one seed (transformers' `BertForMaskedLM`,
the architecture of `bertgeom.model.PRESETS`, the tokens stage's tokenizer) and writes a Hugging
Face directory that `BertForSequenceClassification.from_pretrained` fine-tunes with a new head.

Corpus: every step draws `batch_size` random windows of the train split's k-mers (no val/test
sequence is ever read), each re-wrapped as [CLS] k-mers [SEP] and placed at a random position
offset. Why: the synthetic spikes of one class are nearly identical, so at a fixed position a
masked k-mer is predictable from its absolute position alone (a trial's loss fell from 8.1 to 3.7
with every head uniform). With random crops at random offsets only the neighbouring k-mers tell
what is masked, every position embedding up to tokens.max_length is trained, and [CLS]/[SEP] are
in every window (sink heads need them).

Masking suited to overlapping k-mers (k 12, stride 9: neighbours share 3 nt): contiguous spans of
`span` tokens (1 = single tokens), separated by at least one unmasked token, so every masked span
has both flanks visible; round(mask_rate x k-mers / span) spans per window. Each masked token
becomes [MASK], a random k-mer or stays itself (BERT's 80/10/10); [CLS], [SEP] and [PAD] are never
masked; labels are -100 except at masked tokens.

Reproducibility: the seed fixes the initial weights (`init_model`); the batch of step t (windows,
offsets, masks, replacements) is a function of (seed, t) alone (numpy's SeedSequence), dropout
uses torch's global generator, saved in every checkpoint. A checkpoint (safetensors + JSON,
`bertgeom.train.save_checkpoint`) is written every `checkpoint_every` steps; a killed run resumes
from the last one and ends with the weights of an uninterrupted run (bit-identical on CPU).
"""

from __future__ import annotations

import hashlib
import logging
import math
import shutil
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers import BertForMaskedLM, get_wsd_schedule

from bertgeom import io
from bertgeom.model import autocast, count_parameters, scratch_config
from bertgeom.pretrain_settings import DEFAULTS, NOT_FINGERPRINTED, check_settings
from bertgeom.tokens import KmerTokenizer
from bertgeom.train import (
    Split,
    configure_torch,
    load_checkpoint,
    load_split,
    make_optimizer,
    save_checkpoint,
    save_model_dir,
    select_device,
)

log = logging.getLogger("bertgeom.pretrain")

LOG_COLUMNS = [
    "step", "loss", "accuracy", "perplexity", "lr", "grad_norm", "masked", "tokens", "tokens_per_s", "elapsed_s",
]  # fmt: skip
STREAM = 0x4D4C4D  # "MLM": keeps the batch generator apart from train's data-order stream


# ---------------------------------------------------------------------------------------------
# Batches: windows, masks, replacements; all drawn from the generator of (seed, step).


def step_rng(seed: int, step: int) -> np.random.Generator:
    """The generator of one step's batch: depends on (seed, step) only, so a resumed run redraws it."""
    return np.random.default_rng([seed, step, STREAM])


def sample_windows(
    split: Split, batch_size: int, window: int, max_length: int, specials: tuple[int, int, int], rng
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random windows re-wrapped as [CLS] k-mers [SEP] at random position offsets.

    `specials` = (cls_id, sep_id, pad_id). Returns ids int64 [batch, window] (right-padded with PAD
    where a sequence has fewer k-mers than the window), real tokens int64 [batch] and position
    ids int64 [batch, window] (offset + 0, 1, ...; offset uniform in 0..max_length - real tokens).
    """
    cls_id, sep_id, pad_id = specials
    rows = rng.integers(0, len(split), batch_size)
    n_kmers = split.n_tokens.numpy()[rows] - 2
    take = np.minimum(window - 2, n_kmers)  # k-mers per window
    start = rng.integers(0, n_kmers - take + 1)  # first k-mer (0-based)
    offset = rng.integers(0, max_length - (take + 2) + 1)
    column = np.arange(window - 2)
    source = np.minimum(1 + start[:, None] + column, split.ids.shape[1] - 1)  # [batch, window - 2]
    kmers = split.ids.numpy()[rows[:, None], source]
    ids = np.full((batch_size, window), pad_id, dtype=np.int64)
    ids[:, 0] = cls_id
    ids[:, 1:-1] = np.where(column < take[:, None], kmers, pad_id)
    ids[np.arange(batch_size), take + 1] = sep_id
    positions = np.minimum(offset[:, None] + np.arange(window), max_length - 1)
    return ids, take + 2, positions


def span_starts(n_kmers: int, n_spans: int, span: int, rng) -> np.ndarray:
    """Sorted 0-based starts of `n_spans` spans of `span` k-mers in 0..n_kmers-1, each pair of spans
    separated by >= 1 unmasked k-mer, uniform over all such placements.

    With q_i = start_i - i x span the constraint becomes q strictly increasing in 0..n_kmers - n_spans x span,
    so the starts are n_spans distinct sorted draws from that range, shifted back.
    """
    q = np.sort(rng.choice(n_kmers - n_spans * span + 1, size=n_spans, replace=False))
    return q + np.arange(n_spans) * span


def n_spans(n_kmers: int, mask_rate: float, span: int) -> int:
    """Spans per window: round(mask_rate x k-mers / span), at least 1, at most what fits with gaps."""
    fits = (n_kmers + 1) // (span + 1)
    return int(min(max(1, round(mask_rate * n_kmers / span)), fits))


def mask_tokens(
    ids: np.ndarray, n_real: np.ndarray, settings: dict, mask_id: int, kmer_ids: np.ndarray, rng
) -> tuple[np.ndarray, np.ndarray]:
    """(model inputs, labels) of windows ids [batch, window] with n_real [batch] real tokens.

    The k-mers of row b sit at 1..n_real[b] - 2 ([CLS] at 0, [SEP] at n_real[b] - 1, then PAD).
    Labels int64 [batch, window]: the original id at masked tokens, -100 elsewhere.
    """
    span = settings["span"]
    masked = np.zeros(ids.shape, dtype=bool)
    for row, n in enumerate(n_real - 2):
        starts = span_starts(int(n), n_spans(int(n), settings["mask_rate"], span), span, rng)
        masked[row, 1 + (starts[:, None] + np.arange(span)).ravel()] = True
    draw = rng.random(ids.shape)
    replacement = kmer_ids[rng.integers(0, len(kmer_ids), ids.shape)]
    p_mask, p_random = settings["mask_token"], settings["mask_token"] + settings["random_token"]
    inputs = np.where(masked & (draw < p_mask), mask_id, ids)
    inputs = np.where(masked & (draw >= p_mask) & (draw < p_random), replacement, inputs)
    return inputs, np.where(masked, ids, -100)


def kmer_ids(tokenizer: KmerTokenizer) -> np.ndarray:
    """Ids of every non-special token (the random replacements), int64 sorted."""
    special = {tokenizer.vocab[token] for token in tokenizer.special_tokens.values()}
    return np.array(sorted(set(tokenizer.vocab.values()) - special), dtype=np.int64)


def make_batch(split: Split, tokenizer: KmerTokenizer, settings: dict, seed: int, step: int) -> dict:
    """The batch of `step` (1-based) as int64 tensors [batch, window]: input_ids, attention_mask,
    position_ids, labels; plus `tokens`, the number of real tokens."""
    rng = step_rng(seed, step)
    specials = (tokenizer.cls_id, tokenizer.sep_id, tokenizer.pad_id)
    ids, n_real, positions = sample_windows(
        split, settings["batch_size"], settings["window"], tokenizer.max_length, specials, rng
    )
    inputs, labels = mask_tokens(ids, n_real, settings, tokenizer.mask_id, kmer_ids(tokenizer), rng)
    mask = np.arange(ids.shape[1])[None, :] < n_real[:, None]
    batch = dict(input_ids=inputs, attention_mask=mask.astype(np.int64), position_ids=positions, labels=labels)
    return {**{k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in batch.items()}, "tokens": int(n_real.sum())}


# ---------------------------------------------------------------------------------------------
# The model and one step.


def init_model(preset: str, tokenizer: KmerTokenizer, seed: int, attn_implementation: str = "sdpa",
               position_init: str = DEFAULTS["position_init"]):  # fmt: skip
    """The random initial weights of `seed` (the `init` checkpoint): a BertForMaskedLM of `preset`
    sized to the tokenizer. `pretrain_seed` starts from exactly this model (with settings["position_init"]).

    position_init "sinusoidal": the position embeddings start as the sinusoids of `sinusoids`
    instead of random vectors (they stay trainable). Why: the inner product of two sinusoidal
    positions depends only on their offset, and a query/key projection can shift it, so "attend to
    the previous (next) token" is one linear map for every position at once; with random position
    vectors each of the max_length positions has to learn its neighbour on its own.
    """
    config = scratch_config(preset, None, len(tokenizer), tokenizer.pad_id, tokenizer.max_length, attn_implementation)
    torch.manual_seed(seed)  # every initial weight is drawn from the global generator
    model = BertForMaskedLM(config)
    if position_init == "sinusoidal":
        table = model.bert.embeddings.position_embeddings.weight  # [position, hidden]
        with torch.no_grad():
            table.copy_(sinusoids(*table.shape) * config.initializer_range * math.sqrt(2))  # RMS = BERT's init std
    return model


def sinusoids(positions: int, hidden: int) -> torch.Tensor:
    """The position encodings of Vaswani et al. 2017, float32 [position, hidden]: sin(p w_i) in even
    and cos(p w_i) in odd columns, w_i = 10000^(-2i/hidden); every column has RMS ~1/sqrt(2)."""
    p = torch.arange(positions, dtype=torch.float64)[:, None]
    w = 10000.0 ** (-torch.arange(0, hidden, 2, dtype=torch.float64) / hidden)  # [hidden / 2]
    table = torch.zeros(positions, hidden, dtype=torch.float64)
    table[:, 0::2] = torch.sin(p * w)
    table[:, 1::2] = torch.cos(p * w)[:, : hidden // 2]
    return table.float()


def state_digest(model: torch.nn.Module) -> str:
    """sha256 over the state dict (names, dtypes, shapes, bytes): equal digests = identical weights."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def mlm_loss(model, batch: dict, device: torch.device, bf16: bool = False):
    """(mean cross-entropy over masked tokens, correct predictions, masked tokens), 0-d tensors.

    The vocabulary projection runs on the masked tokens only ([masked, hidden] instead of
    [batch, window, hidden]); the loss equals BertForMaskedLM's own loss with the same labels.
    """
    labels = batch["labels"].to(device)
    with autocast(device, bf16):
        hidden = model.bert(
            input_ids=batch["input_ids"].to(device),
            attention_mask=batch["attention_mask"].to(device),
            position_ids=batch["position_ids"].to(device),
        ).last_hidden_state  # [batch, window, hidden]
        where = labels != -100
        logits = model.cls(hidden[where])  # [masked, vocab]
    targets = labels[where]
    loss = F.cross_entropy(logits.float(), targets)
    return loss, (logits.argmax(-1) == targets).sum(), where.sum()


def mlm_step(model, optimizer, scheduler, batch: dict, settings: dict, device: torch.device):
    """One AdamW step; returns (loss, correct, masked, grad_norm) as 0-d tensors (no host sync)."""
    loss, correct, masked = mlm_loss(model, batch, device, settings["bf16"])
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), settings["grad_clip"])
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.detach(), correct, masked, grad_norm.detach()


# ---------------------------------------------------------------------------------------------
# The loop.


def make_scheduler(optimizer, settings: dict):
    """Linear warm-up over warmup_ratio of the steps, constant lr, linear decay to 0 over the last
    decay_ratio (decay_ratio = 1 - warmup_ratio: the usual linear warm-up/decay). Why a constant
    phase: at lr 1e-3 the neighbour look-up forms after ~1,000-1,500 steps (docs/benchmarks.md); a
    decay over the whole of a short budget delays it past the end."""
    steps = settings["steps"]
    warmup = math.ceil(settings["warmup_ratio"] * steps)
    decay = min(math.ceil(settings["decay_ratio"] * steps), steps - warmup)
    return get_wsd_schedule(optimizer, warmup, decay, num_training_steps=steps, decay_type="linear")


def fit_mlm(
    model,
    split: Split,
    tokenizer: KmerTokenizer,
    settings: dict,
    seed: int,
    device: torch.device,
    ckpt_dir: Path,
    fingerprint: str,
) -> dict:
    """Pre-train `model` in place for settings["steps"] steps (resuming from `ckpt_dir` if it holds
    a checkpoint of the same fingerprint); returns {log, steps, resumed_from_step, init_digest}."""
    steps = settings["steps"]
    optimizer = make_optimizer(model, settings)
    scheduler = make_scheduler(optimizer, settings)
    record = {"log": [], "resumed_from_step": 0, "init_digest": state_digest(model), "fingerprint": fingerprint}
    resumed = load_checkpoint(ckpt_dir, fingerprint, model, optimizer, scheduler, unit="step")
    if resumed:
        record.update(log=resumed["log"], resumed_from_step=resumed["step"], init_digest=resumed["init_digest"])
    model.train()
    done = record["resumed_from_step"]
    bar = tqdm(total=steps, initial=done, desc=f"pretrain seed {seed}", unit="step", disable=None, mininterval=2)
    start = time.perf_counter() - (record["log"][-1]["elapsed_s"] if record["log"] else 0.0)
    pending, mark = [], time.perf_counter()
    for step in range(done + 1, steps + 1):
        batch = make_batch(split, tokenizer, settings, seed, step)
        lr = scheduler.get_last_lr()[0]
        pending.append((step, lr, batch["tokens"], *mlm_step(model, optimizer, scheduler, batch, settings, device)))
        bar.update()
        if len(pending) == settings["log_every"] or step % settings["checkpoint_every"] == 0 or step == steps:
            mark = _flush(pending, record["log"], mark, start, bar)
        if step % settings["checkpoint_every"] == 0 and step < steps:
            state = {k: record[k] for k in ("log", "fingerprint", "init_digest")}
            save_checkpoint(ckpt_dir, step, model, optimizer, scheduler, state, unit="step")
    bar.close()
    record["steps"] = steps
    return record


def _flush(pending: list[tuple], rows: list[dict], mark: float, start: float, bar) -> float:
    """Turn pending steps into log rows (one host sync per interval) and log the interval."""
    values = torch.stack([torch.stack([v.float() for v in p[3:]]) for p in pending]).tolist()
    now = time.perf_counter()
    rate = sum(p[2] for p in pending) / max(now - mark, 1e-9)
    for (step, lr, tokens, *_), (loss, correct, masked, norm) in zip(pending, values):
        rows.append(
            dict(
                step=step,
                loss=loss,
                accuracy=correct / max(masked, 1),
                perplexity=math.exp(min(loss, 50.0)),
                lr=lr,
                grad_norm=norm,
                masked=int(masked),
                tokens=tokens,
                tokens_per_s=rate,
                elapsed_s=now - start,
            )
        )
    loss = float(np.mean([v[0] for v in values]))
    accuracy = sum(v[1] for v in values) / max(sum(v[2] for v in values), 1)
    bar.set_postfix(loss=f"{loss:.3f}", acc=f"{accuracy:.3f}", tok_s=f"{rate:.0f}")
    log.info(
        "step %d loss %.4f masked accuracy %.4f lr %.3g %.0f tokens/s",
        rows[-1]["step"],
        loss,
        accuracy,
        rows[-1]["lr"],
        rate,
    )
    pending.clear()
    return now


# ---------------------------------------------------------------------------------------------
# One seed, end to end.


def pretrain_seed(
    train_path: str | Path,
    tokenizer_dir: str | Path,
    out_dir: str | Path,
    ckpt_dir: str | Path,
    preset: str,
    settings: dict | None,
    seed: int,
    threads: int = 1,
) -> dict:
    """Pre-train the encoder of `seed` on the train split's tokens; returns pretrain_info.

    train_path: results/tokens/train.parquet; tokenizer_dir: the tokens stage's tokenizer files.
    Writes into out_dir (each file atomically) model.safetensors, config.json, the tokenizer
    files, pretrain_log.csv (LOG_COLUMNS, one row per step) and pretrain_info.json, then removes
    ckpt_dir.
    """
    train_path, out_dir, ckpt_dir = Path(train_path), Path(out_dir), Path(ckpt_dir)
    tokenizer = KmerTokenizer.load(tokenizer_dir)
    settings = check_settings(settings, tokenizer.max_length)
    device = select_device(settings["device"])
    configure_torch(device, threads, settings["deterministic"])
    split = load_split(train_path, None)
    if not len(split):
        raise ValueError(f"{train_path}: no training sequences to pre-train on")
    fingerprint = io.config_hash(
        {
            "preset": preset,
            "settings": {k: v for k, v in settings.items() if k not in NOT_FINGERPRINTED},
            "seed": seed,
            "device": device.type,
            "train_sha256": io.sha256_file(train_path),
            "vocab": len(tokenizer),
        }
    )
    model = init_model(preset, tokenizer, seed, position_init=settings["position_init"]).to(device)
    log.info(
        "seed %d: %s masked LM, %d parameters, vocabulary %d", seed, preset, count_parameters(model), len(tokenizer)
    )
    began, cpu_began = time.perf_counter(), time.process_time()
    record = fit_mlm(model, split, tokenizer, settings, seed, device, ckpt_dir, fingerprint)
    info = {
        "seed": seed,
        "preset": preset,
        "settings": settings,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
        "n_train": len(split),
        "steps": record["steps"],
        "resumed_from_step": record["resumed_from_step"],
        "wall_s_this_run": time.perf_counter() - began,
        "cpu_s_this_run": time.process_time() - cpu_began,
        "final_loss": float(np.mean([r["loss"] for r in record["log"][-20:]])),
        "final_accuracy": float(np.mean([r["accuracy"] for r in record["log"][-20:]])),
        "parameters": count_parameters(model),
        "init_digest": record["init_digest"],
        "fingerprint": fingerprint,
        "versions": io.package_versions(),
    }
    save_model_dir(
        model, tokenizer, out_dir, record["log"], info, LOG_COLUMNS, "pretrain_log.csv", "pretrain_info.json"
    )
    shutil.rmtree(ckpt_dir, ignore_errors=True)
    return info
