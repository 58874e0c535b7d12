"""BERT sequence classifiers: architecture presets, scratch or pretrained initialisation, loading.

The classifier is transformers' `BertForSequenceClassification` with `id2label` = the config's
classes, so every saved model directory loads with `from_pretrained(dir)` (add
`attn_implementation="eager"` to get attention matrices). `load_model(dir,
attn_implementation=EXACT_ATTENTION)` runs transformers' eager attention computed in place, the
activations stage's kernel: bit-identical to eager, registered with transformers here, when a model
asks for it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from transformers import AttentionInterface, AttentionMaskInterface, BertConfig, BertForSequenceClassification
from transformers.masking_utils import eager_mask

from bertgeom.tokens import load_base_vocab

log = logging.getLogger("bertgeom.model")

EXACT_ATTENTION = "bertgeom_eager"  # attn_implementation of eager_attention_in_place

# Architectures for `model.init: scratch`. `base` is bert-base (12 layers, 12 heads, 768) with its
# dropouts. tiny/small drop attention-probability dropout: a dropout mask on the [batch, heads, L, L]
# attention matrix forces SDPA onto its unfused path, which halves CPU training speed at L = 427
# (measured: benchmarks/bench_train.py; docs/benchmarks.md), and the synthetic classes need no such regularisation.
PRESETS: dict[str, dict] = {
    "tiny": dict(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.0,
    ),
    "small": dict(
        hidden_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=512,
        hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.0,
    ),
    "base": dict(
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
        hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1,
    ),
}


def select_device(setting: str = "auto", key: str = "device") -> torch.device:
    """The torch device of a setting (`key` names it in errors): `auto` is CUDA when available, else CPU."""
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if setting == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{key}: 'cuda' requested but torch sees no CUDA device")
    return torch.device(setting)


def eager_attention_in_place(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """transformers' eager_attention_forward for BERT, with the scores scaled, masked and softmaxed in place.

    query, key, value: [batch, head, seq, d_head]; attention_mask: additive [batch, 1, query, key].
    Returns (Z [batch, query, head, d_head], A [batch, head, query, key]). The operations and their
    order are eager's, so the results are bit-identical (tests). Eager fills three fresh [batch,
    head, L, L] buffers after QK^T; on CPU that costs more than its two matmuls.
    """
    if scaling is None:
        scaling = query.size(-1) ** -0.5
    scores = torch.matmul(query, key.transpose(2, 3)).mul_(scaling)
    if attention_mask is not None:
        scores.add_(attention_mask)
    if scores.device.type == "cpu":
        weights = torch.softmax(scores, dim=-1, out=scores)
    else:  # the CUDA caching allocator makes a fresh buffer cheap; keep eager's out-of-place kernel
        weights = torch.softmax(scores, dim=-1)
    weights = torch.nn.functional.dropout(weights, p=dropout, training=module.training)
    return torch.matmul(weights, value).transpose(1, 2).contiguous(), weights


def register_attention(attn_implementation: str) -> str:
    """Make EXACT_ATTENTION known to transformers before a model asks for it (registering twice is
    harmless); returns the name."""
    if attn_implementation == EXACT_ATTENTION:
        AttentionInterface.register(EXACT_ATTENTION, eager_attention_in_place)
        AttentionMaskInterface.register(EXACT_ATTENTION, eager_mask)
    return attn_implementation


def label_maps(classes: list[str]) -> tuple[dict[int, str], dict[str, int]]:
    """id2label and label2id for the config's classes (label = position in the list)."""
    return dict(enumerate(classes)), {name: i for i, name in enumerate(classes)}


def scratch_config(
    preset: str,
    classes: list[str] | None,
    vocab_size: int,
    pad_id: int,
    max_length: int,
    attn_implementation: str = "sdpa",
) -> BertConfig:
    """A BertConfig for a preset, sized to the tokenizer (vocabulary, PAD id, input length).

    classes None: no label maps (a masked-LM encoder; the classifier fine-tuned from it sets them).
    The attention implementation is not saved with the model: whoever loads it chooses its own.
    """
    if preset not in PRESETS:
        raise ValueError(f"model.preset: unknown preset {preset!r}; expected one of {sorted(PRESETS)}")
    labels = {}
    if classes is not None:
        id2label, label2id = label_maps(classes)
        labels = dict(num_labels=len(classes), id2label=id2label, label2id=label2id)
    return BertConfig(
        vocab_size=vocab_size,
        pad_token_id=pad_id,
        max_position_embeddings=max_length,
        attn_implementation=register_attention(attn_implementation),
        **labels,
        **PRESETS[preset],
    )


def build_model(
    model_cfg: dict, classes: list[str], tokenizer, seed: int, attn_implementation: str = "sdpa", encoder=None
):
    """A fresh classifier for training, initialised from `seed`.

    `model_cfg` is the config's `model` block. `tokenizer` is a `bertgeom.tokens.KmerTokenizer`
    (len, pad_id, max_length, vocab). scratch: random weights of `model_cfg["preset"]`.
    pretrained: the checkpoint `model_cfg["pretrained"]` (local directory or hub id) with a new
    classification head and its word embeddings resized to len(tokenizer): rows of the original
    vocabulary are kept as they are, the appended k-mer rows are drawn by transformers around the
    mean of the old rows. mlm: the pre-trained encoder directory `encoder` (rule pretrain) with a new
    classification head (and pooler, which masked-LM pre-training does not train).
    """
    torch.manual_seed(seed)  # weight init and the new head/rows are drawn from the global generator
    init = model_cfg.get("init", "scratch")
    if init == "mlm":
        if encoder is None:
            raise ValueError("model.init mlm: no pre-trained encoder directory given (rule pretrain's output)")
        return load_pretrained(str(encoder), classes, tokenizer, attn_implementation, extended_vocab=False)
    if init == "scratch":
        config = scratch_config(
            model_cfg["preset"], classes, len(tokenizer), tokenizer.pad_id, tokenizer.max_length, attn_implementation
        )
        return BertForSequenceClassification(config)
    return load_pretrained(model_cfg["pretrained"], classes, tokenizer, attn_implementation)


def load_pretrained(
    source: str, classes: list[str], tokenizer, attn_implementation: str = "sdpa", extended_vocab: bool = True
):
    """A pretrained BERT with a fresh `len(classes)`-way head, embeddings resized to the tokenizer.

    extended_vocab False: `source` was trained with `tokenizer` itself (model.init mlm), whose vocabulary
    it must have exactly; True: the tokenizer extends the checkpoint's own vocabulary (model.init pretrained).
    """
    id2label, label2id = label_maps(classes)
    try:
        model = BertForSequenceClassification.from_pretrained(
            source,
            num_labels=len(classes),
            id2label=id2label,
            label2id=label2id,
            attn_implementation=register_attention(attn_implementation),
        )
    except OSError as err:
        raise FileNotFoundError(
            f"model.pretrained: cannot load a BERT checkpoint from {source!r} "
            f"(a local directory with config.json and weights, or a hub id when online): {err}"
        ) from None
    if not extended_vocab:
        if model.config.vocab_size != len(tokenizer) or model.config.pad_token_id != tokenizer.pad_id:
            raise ValueError(
                f"{source}: vocabulary {model.config.vocab_size} (PAD {model.config.pad_token_id}) differs from the "
                f"tokenizer's {len(tokenizer)} (PAD {tokenizer.pad_id}): pre-train with the same tokens stage"
            )
        return model
    check_pretrained_vocab(source, tokenizer, model.config)
    old_rows = model.config.vocab_size
    if len(tokenizer) < old_rows:
        raise ValueError(
            f"tokenizer has {len(tokenizer)} tokens but {source!r} has {old_rows}: the tokens stage must "
            f"extend the pretrained vocabulary (config model.init: pretrained) before training"
        )
    if tokenizer.max_length > model.config.max_position_embeddings:
        raise ValueError(
            f"tokens.max_length {tokenizer.max_length} exceeds the {model.config.max_position_embeddings} "
            f"positions of {source!r}"
        )
    model.resize_token_embeddings(len(tokenizer))
    log.info("pretrained %s: vocabulary %d -> %d rows (original rows kept)", source, old_rows, len(tokenizer))
    return model


def check_pretrained_vocab(source: str, tokenizer, config: BertConfig) -> None:
    """The tokenizer must keep every id of the checkpoint's own vocabulary (else rows would be misread)."""
    if tokenizer.pad_id != config.pad_token_id:
        raise ValueError(
            f"tokenizer [PAD] id {tokenizer.pad_id} differs from {source!r} pad_token_id {config.pad_token_id}: "
            f"build the tokens with model.init: pretrained and the same model.pretrained"
        )
    base_vocab, _ = load_base_vocab(source)  # the vocabulary the tokens stage extended
    moved = [token for token, index in base_vocab.items() if tokenizer.vocab.get(token) != index]
    if moved:
        raise ValueError(
            f"tokenizer does not keep the vocabulary of {source!r}: {len(moved)} token(s) have other ids "
            f"(e.g. {moved[:3]}); build the tokens with model.init: pretrained and the same model.pretrained"
        )


def load_model(model_dir: str | Path, device: str | torch.device = "cpu", attn_implementation: str = "sdpa"):
    """A trained classifier from a model directory, in eval mode on `device`."""
    model_dir = Path(model_dir)
    for name in ("config.json", "model.safetensors"):
        if not (model_dir / name).is_file():
            raise FileNotFoundError(f"{model_dir}: not a trained model directory (missing {name})")
    model = BertForSequenceClassification.from_pretrained(model_dir, attn_implementation=register_attention(attn_implementation))
    return model.to(device).eval()


def count_parameters(model: torch.nn.Module, embeddings: bool = True) -> int:
    """Number of parameters; embeddings=False leaves out the word/position/type embedding tables."""
    return sum(p.numel() for name, p in model.named_parameters() if embeddings or ".embeddings." not in f".{name}")


def trim_batch(ids: torch.Tensor, n_tokens: torch.Tensor, multiple: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Cut a padded batch to its longest real length; returns (input_ids, attention_mask).

    ids: [batch, max_length] token ids, right-padded; n_tokens: [batch] real tokens per row.
    Returns int64 [batch, L] and int64 [batch, L] with L = max(n_tokens) rounded up to `multiple`
    (at most max_length). The PAD columns beyond L are masked out of every attention row, so
    dropping them changes nothing but the time spent on them ([CLS] at position 0 feeds the head).
    """
    width = int(n_tokens.max())
    width = min(ids.shape[1], -(-width // multiple) * multiple)
    mask = torch.arange(width, device=n_tokens.device)[None, :] < n_tokens[:, None]
    return ids[:, :width].long(), mask.long()


def autocast(device: torch.device, bf16: bool):
    """bf16 autocast on CUDA when asked; a no-op context on CPU (training stays fp32 there)."""
    enabled = bf16 and device.type == "cuda"
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)


@torch.inference_mode()
def predict_probs(
    model,
    ids: torch.Tensor,
    n_tokens: torch.Tensor,
    batch_size: int = 32,
    device: torch.device | str = "cpu",
    bf16: bool = False,
) -> torch.Tensor:
    """Class probabilities, float32 [N, classes], for token ids [N, max_length] with n_tokens [N].

    The model is put in eval mode (no dropout); batches are trimmed to their longest sequence.
    """
    device = torch.device(device)
    model.eval()
    out = []
    for start in range(0, len(ids), batch_size):
        batch_ids, mask = trim_batch(ids[start : start + batch_size], n_tokens[start : start + batch_size])
        with autocast(device, bf16):
            logits = model(input_ids=batch_ids.to(device), attention_mask=mask.to(device)).logits
        out.append(torch.softmax(logits.float(), dim=-1).cpu())
    return torch.cat(out) if out else torch.empty(0, model.config.num_labels)
