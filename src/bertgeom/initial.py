"""The `init` checkpoint of a seed (rule init_model): the weights its first training stage starts from.

model.init scratch: the classifier `bertgeom.train` builds for the seed (random weights);
mlm: the masked LM `bertgeom.pretrain` starts from (random weights of the seed);
pretrained: the given checkpoint with the classification head and k-mer rows the seed draws.
Both stages build their starting model with the functions used here, and record its digest
(`init_digest` of training_info.json / pretrain_info.json), so that the tests can check that the
saved `init` weights are exactly those.
"""

from __future__ import annotations

import logging
from pathlib import Path

from bertgeom import io
from bertgeom.model import build_model, count_parameters
from bertgeom.pretrain import init_model, state_digest
from bertgeom.tokens import KmerTokenizer
from bertgeom.train import save_hf_directory

log = logging.getLogger("bertgeom.initial")


def initial_model(
    model_cfg: dict, classes: list[str], tokenizer: KmerTokenizer, seed: int, init_settings: dict | None = None
):
    """The model the seed's first training stage starts from (module docstring); init_settings: the
    pretrain settings that shape the masked LM's initial weights (checkpoints.INIT_SETTINGS), mlm only."""
    if model_cfg["init"] == "mlm":
        return init_model(model_cfg["preset"], tokenizer, seed, **(init_settings or {}))
    return build_model(model_cfg, classes, tokenizer, seed)


def write_initial_model(
    tokenizer_dir: str | Path,
    out_dir: str | Path,
    info_path: str | Path,
    classes: list[str],
    model_cfg: dict,
    seed: int,
    init_settings: dict | None = None,
) -> dict:
    """Save the `init` checkpoint of `seed` as a Hugging Face directory into out_dir (weights, config,
    tokenizer files, each atomically) and its digest to info_path (init_info.json); returns that info."""
    tokenizer = KmerTokenizer.load(tokenizer_dir)
    model = initial_model(model_cfg, classes, tokenizer, seed, init_settings)
    info = {
        "seed": seed,
        "init": model_cfg["init"],
        "architecture": type(model).__name__,
        "parameters": count_parameters(model),
        "init_digest": state_digest(model),
        "versions": io.package_versions(),
    }
    save_hf_directory(model, tokenizer, Path(out_dir))
    io.write_json(info_path, info)
    log.info("seed %d: %s initial weights (%s, %d parameters)", seed, model_cfg["init"], info["architecture"],
             info["parameters"])  # fmt: skip
    return info
