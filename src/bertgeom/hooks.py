"""The capture points inside BERT: one vocabulary of stage and hook names, and the hooks themselves.

As TransformerLens names its `hook_*` points, every tensor a forward pass exposes has one name,
`layer.{i}.{stage}`, and one shape written with fixed dimension names:

    batch   sequences of the batch            seq     token positions (max_length, PAD included)
    head    attention heads of a layer        query, key   positions of an attention matrix A
    hidden  model width                       d_head  hidden / heads

The stage names are the `stage` column of the activation tables and the stats tables
(docs/outputs.md); per-head stages are column blocks of their whole-layer stage (HEAD_SOURCE).
Importing this module imports no torch: the stats read its names without loading a model.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

# The stages of one layer, in the order of the information stream, and what each captures.
STAGE_SHAPES = {
    "input": "[batch, seq, hidden]  BertLayer's input hidden states",
    "q": "[batch, seq, hidden]  X W_Q^T + b_Q (attention.self.query); head h = columns h*d_head:(h+1)*d_head",
    "k": "[batch, seq, hidden]  X W_K^T + b_K (attention.self.key)",
    "v": "[batch, seq, hidden]  X W_V^T + b_V (attention.self.value)",
    "context": "[batch, seq, hidden]  Z_h = A_h V_h, heads concatenated (BertSelfAttention's output)",
    "attn_output": "[batch, seq, hidden]  W_O context + b_O (attention.output.dense, before the residual)",
    "attn_ln": "[batch, seq, hidden]  LayerNorm(attn_output + input) (attention.output)",
    "ffn": "[batch, seq, hidden]  W_2 gelu(W_1 attn_ln + b_1) + b_2 (output.dense, before the residual)",
    "output": "[batch, seq, hidden]  LayerNorm(ffn + attn_ln), the layer's output (BertLayer)",
}
STAGES = tuple(STAGE_SHAPES)
# The attention probabilities A = softmax(Q_h K_h^T / sqrt(d_head) + mask): [batch, head, query, key].
ATTENTION = "attn"
# Per-head stages ([batch, seq, head, d_head]) and the whole-layer stage whose column block h is head h.
HEAD_SOURCE = {"q": "q", "k": "k", "v": "v", "context": "z"}
HEAD_STAGES = tuple(HEAD_SOURCE.values())


def hook_name(layer: int, stage: str) -> str:
    """`layer.{layer}.{stage}`: the name of a capture point (stage in STAGES or ATTENTION)."""
    return f"layer.{layer}.{stage}"


def hook_names(num_layers: int) -> list[str]:
    """Every capture point of a model, in the order a forward pass reaches them."""
    order = (*STAGES[:4], ATTENTION, *STAGES[4:])
    return [hook_name(i, stage) for i in range(num_layers) for stage in order]


def check_capturable(model, implementations: tuple[str, ...]) -> None:
    """ValueError unless the model materialises A (an eager implementation) and runs in eval mode."""
    if model.config._attn_implementation not in implementations:
        raise ValueError(
            f"model uses attn_implementation={model.config._attn_implementation!r}; load it with "
            f"attn_implementation in {list(implementations)} so the attention probabilities exist"
        )
    if model.training:
        raise ValueError("model is in training mode: call model.eval() (dropout would change every captured tensor)")


@contextlib.contextmanager
def capture(model, sink: Callable) -> Iterator[list[str]]:
    """Register forward hooks that call `sink(layer, stage, tensor)` as each tensor is computed.

    Stages and shapes: STAGE_SHAPES, and ATTENTION for A. Yields the hook names (hook_names).
    Dropout after the dense layers is the identity in eval mode, so a dense output is its stage.
    """
    from bertgeom.model import EXACT_ATTENTION

    check_capturable(model, ("eager", EXACT_ATTENTION))

    def after(layer: int, stage: str, pick: int | None = None):
        def hook(module, args, output):
            sink(layer, stage, output if pick is None else output[pick])

        return hook

    def before(layer: int):
        def hook(module, args, kwargs):
            sink(layer, "input", args[0] if args else kwargs["hidden_states"])

        return hook

    handles = []
    for i, block in enumerate(model.bert.encoder.layer):
        attention = block.attention
        handles.append(block.register_forward_pre_hook(before(i), with_kwargs=True))
        handles.append(attention.self.query.register_forward_hook(after(i, "q")))
        handles.append(attention.self.key.register_forward_hook(after(i, "k")))
        handles.append(attention.self.value.register_forward_hook(after(i, "v")))
        handles.append(attention.self.register_forward_hook(after(i, ATTENTION, pick=1)))
        handles.append(attention.self.register_forward_hook(after(i, "context", pick=0)))
        handles.append(attention.output.dense.register_forward_hook(after(i, "attn_output")))
        handles.append(attention.output.register_forward_hook(after(i, "attn_ln")))
        handles.append(block.output.dense.register_forward_hook(after(i, "ffn")))
        handles.append(block.register_forward_hook(after(i, "output")))
    try:
        yield hook_names(len(model.bert.encoder.layer))
    finally:
        for handle in handles:
            handle.remove()


def capture_batch(model, input_ids, attention_mask) -> tuple:
    """Run one (small) batch and keep every captured tensor: (logits [batch, classes], {hook name: tensor})."""
    import torch

    captured: dict = {}

    def keep(layer: int, stage: str, tensor) -> None:
        captured[hook_name(layer, stage)] = tensor

    # no_grad rather than inference_mode: the caller may compute with these tensors and the weights.
    with torch.no_grad(), capture(model, keep):
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
    return logits, captured
