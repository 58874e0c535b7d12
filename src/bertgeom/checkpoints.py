"""The checkpoints of a seed whose geometry the workflow measures (docs/outputs.md).

- `init`: the weights the seed's first training stage starts from (random weights of the seed for
  model.init scratch and mlm, the given checkpoint for pretrained): results/init/seed{seed}/;
- `mlm`: the encoder after masked-LM pre-training (model.init mlm only): results/pretrained/seed{seed}/;
- `finetuned`: the trained classifier: results/models/seed{seed}/.

Only `finetuned` has a trained classifier: the activations of the others carry no predictions.
This module imports nothing heavy: the workflow reads it when it parses the config.
"""

from __future__ import annotations

CHECKPOINTS = ("init", "mlm", "finetuned")  # in training order
CLASSIFIED = ("finetuned",)  # checkpoints with a trained classifier
MODEL_DIRS = {
    "init": "results/init/seed{seed}",
    "mlm": "results/pretrained/seed{seed}",
    "finetuned": "results/models/seed{seed}",
}

# The files of a checkpoint's Hugging Face directory (docs/outputs.md); rules name them as outputs.
HF_FILES = {
    "model": "model.safetensors",
    "config": "config.json",
    "tokenizer": "tokenizer.json",
    "tokenizer_config": "tokenizer_config.json",
    "special_tokens_map": "special_tokens_map.json",
}
PRETRAINED_FILES = {**HF_FILES, "log": "pretrain_log.csv", "info": "pretrain_info.json"}
# Settings of the pretrain block that shape the initial weights (bertgeom.pretrain.init_model's keyword
# arguments), so rule init_model receives them: those present in the schema.
INIT_SETTINGS = ("position_init",)


def available(init: str) -> list[str]:
    """The checkpoints a seed has with config model.init `init`, in training order."""
    return [c for c in CHECKPOINTS if c != "mlm" or init == "mlm"]


def analysed(config: dict) -> list[str]:
    """config activations.checkpoints in training order; null: every checkpoint of model.init."""
    chosen = config["activations"]["checkpoints"]
    every = available(config["model"]["init"])
    return every if chosen is None else [c for c in every if c in chosen]
