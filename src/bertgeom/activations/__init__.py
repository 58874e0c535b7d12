"""Activation dumping: what a trained BERT computes inside, captured exactly, reduced on the fly.

Forward hooks on transformers' own modules (bertgeom.hooks: BertLayer, BertSelfAttention, its
q/k/v projections, BertSelfOutput, BertOutput) capture, per layer, the stages of the information
stream and the masked attention probabilities A. Each captured tensor is reduced as soon as the
hook fires (bertgeom.measures, in torch, on the model's device), so memory is bounded by one
batch, never by the data set:

- every sequence: sufficient statistics per (sequence, layer, stage) and per (sequence, layer,
  head, per-head stage), and attention summaries per (sequence, layer, head);
- a stratified subset: the token vectors and attention matrices themselves (float16);
- per class: the attention matrix averaged over the correctly classified sequences.

Rows are streamed to Parquet (bertgeom.io.ParquetStream); docs/outputs.md is the schema.
PAD positions (position >= n_tokens) never enter any statistic, except the columns named `*_ref`,
the reference-compatible variants of the original analysis code, which sum over every one of the
max_length rows. The model is always run on the full max_length padding so those rows exist.

The model runs with attn_implementation=bertgeom.model.EXACT_ATTENTION: transformers' eager
attention (A is materialised), computed in place; A and every stage are bit-identical to eager's.

Modules: `loop` (the dump: batches, forward passes, files), `reduce` (one batch's reductions and
rows), `writers` (schemas, row groups, the class table).
"""

from bertgeom.activations.loop import dump, subset_ids
from bertgeom.activations.writers import OUTPUT_FILES, schemas

__all__ = ["OUTPUT_FILES", "dump", "schemas", "subset_ids"]
