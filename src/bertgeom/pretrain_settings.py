"""The settings of masked-LM pre-training (bertgeom.pretrain): defaults and validation.

A module of its own, without torch, so that the workflow checks the config's pretrain block when it
is parsed (bertgeom.config.check_config) without importing the training stack.
"""

from __future__ import annotations

# Defaults chosen by the sweep of docs/benchmarks.md ("Masked-LM pre-training").
DEFAULTS: dict = {
    "steps": 1500,  # optimiser steps
    "batch_size": 16,  # windows per step
    "window": 64,  # tokens per window, [CLS] and [SEP] included
    "mask_rate": 0.3,  # share of a window's k-mers masked
    "span": 1,  # masked tokens per contiguous span (1: single tokens)
    "mask_token": 0.8,  # share of masked tokens shown as [MASK] ...
    "random_token": 0.1,  # ... as a random k-mer (the rest stay themselves)
    "lr": 1.0e-3,  # peak AdamW learning rate
    "warmup_ratio": 0.05,  # share of steps with a linear warm-up from 0 to lr ...
    "decay_ratio": 0.2,  # ... and, at the end, with a linear decay to 0 (constant lr in between)
    "weight_decay": 0.01,
    "eps": 1.0e-8,
    "grad_clip": 1.0,
    "checkpoint_every": 200,  # steps between resumable checkpoints
    "log_every": 20,  # steps between log lines (every step is in the CSV)
    "device": "auto",  # auto | cpu | cuda
    "bf16": True,  # bf16 autocast on CUDA (CPU trains in fp32)
    "deterministic": True,
    "position_init": "sinusoidal",  # sinusoidal (see init_model) | random (BERT's normal init)
}
POSITION_INITS = ("random", "sinusoidal")
# Settings that change nothing but logging or where the run stops: not part of the fingerprint.
NOT_FINGERPRINTED = ("log_every", "checkpoint_every")


def check_settings(settings: dict | None, max_length: int) -> dict:
    """DEFAULTS updated with `settings`; a ValueError naming pretrain.<key> for anything invalid."""
    settings = dict(settings or {})
    unknown = sorted(set(settings) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"pretrain: unknown setting(s) {unknown}; expected keys among {sorted(DEFAULTS)}")
    s = {**DEFAULTS, **settings}
    for key in ("steps", "batch_size", "window", "span", "checkpoint_every", "log_every"):
        if not isinstance(s[key], int) or isinstance(s[key], bool) or s[key] < 1:
            raise ValueError(f"pretrain.{key}: expected a positive integer, got {s[key]!r}")
    if not 3 <= s["window"] <= max_length:
        raise ValueError(f"pretrain.window: expected 3..{max_length} (tokens.max_length) tokens, got {s['window']}")
    if s["span"] > s["window"] - 2:
        raise ValueError(f"pretrain.span: {s['span']} is longer than the {s['window'] - 2} k-mers of a window")
    if not 0 < s["mask_rate"] < 1:
        raise ValueError(f"pretrain.mask_rate: expected a share in (0, 1), got {s['mask_rate']}")
    if s["mask_rate"] > s["span"] / (s["span"] + 1):
        raise ValueError(
            f"pretrain.mask_rate: {s['mask_rate']} exceeds span/(span+1) = {s['span'] / (s['span'] + 1):.3f}, "
            f"the most that spans separated by unmasked tokens can cover"
        )
    for key in ("mask_token", "random_token", "warmup_ratio", "decay_ratio"):
        if not 0 <= s[key] <= 1:
            raise ValueError(f"pretrain.{key}: expected a share in [0, 1], got {s[key]}")
    if s["warmup_ratio"] + s["decay_ratio"] > 1:
        raise ValueError("pretrain.warmup_ratio + pretrain.decay_ratio: expected at most 1")
    if s["mask_token"] + s["random_token"] > 1:
        raise ValueError("pretrain.mask_token + pretrain.random_token: expected at most 1")
    for key in ("lr", "eps", "grad_clip"):
        if not s[key] > 0:
            raise ValueError(f"pretrain.{key}: expected a positive number, got {s[key]}")
    if s["position_init"] not in POSITION_INITS:
        raise ValueError(f"pretrain.position_init: expected one of {list(POSITION_INITS)}, got {s['position_init']!r}")
    if s["weight_decay"] < 0:
        raise ValueError(f"pretrain.weight_decay: expected >= 0, got {s['weight_decay']}")
    return s
