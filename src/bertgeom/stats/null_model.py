"""The null model: an independently initialised, untrained model of the trained models' architecture.

Built from a trained model's config.json with weights drawn from `patterns.nulls.seed` (a seed no
trained model uses; bertgeom.config.check_config), it reads the same subset sequences as the
activation dump (the first `activations.subset_per_class` per class and split). Its attention gives
the closed gate's null (a row permutation cannot move mass off [CLS]/[SEP]), and its own gate labels
are what matching heads across seeds is compared with (bertgeom.stats.matching).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import torch
from transformers import BertConfig, BertForSequenceClassification

from bertgeom.activations import subset_ids
from bertgeom.io import provenance, read_tokens, to_matrix, write_parquet
from bertgeom.stats.attention import GATES
from bertgeom.stats.gates import Labeller, closed_nulls, scores_of

log = logging.getLogger(__name__)


def untrained_model(model_config: str, seed: int) -> BertForSequenceClassification:
    """The architecture of `model_config` (a config.json) with weights initialised from `seed`, eager attention."""
    config = BertConfig.from_json_file(model_config)
    torch.manual_seed(seed)
    return BertForSequenceClassification._from_config(config, attn_implementation="eager").eval()


def subset_sequences(token_files: list[str], per_class: int, max_positions: int) -> list[tuple[str, np.ndarray]]:
    """(seq_id, real token ids [n]) of the dump's subset: the first `per_class` seq_ids of each label and split."""
    sequences = []
    for path in token_files:
        table, _ = read_tokens(path, None, ("seq_id", "label", "input_ids", "n_tokens"), max_positions)
        keep = subset_ids(table, per_class)
        ids, n = to_matrix(table.column("input_ids")), table.column("n_tokens").to_numpy()
        sequences += [(s, ids[i, : n[i]]) for i, s in enumerate(table.column("seq_id").to_pylist()) if s in keep]
    if not sequences:
        raise ValueError(f"{token_files}: no subset sequence (config activations.subset_per_class must be >= 1)")
    return sorted(sequences, key=lambda item: item[0])


@torch.no_grad()
def matrices(model, sequences: list[tuple[str, np.ndarray]]) -> Iterator[tuple[dict, np.ndarray]]:
    """(record, A [query, key] float64) for every sequence, layer and head; one sequence per forward."""
    for seq_id, ids in sequences:
        tokens = torch.from_numpy(ids.astype(np.int64))[None]
        attentions = model(input_ids=tokens, attention_mask=torch.ones_like(tokens), output_attentions=True).attentions
        for layer, a in enumerate(attentions):  # a [batch 1, head, query, key]
            for head in range(a.shape[1]):
                yield {"seq_id": seq_id, "layer": layer, "head": head}, a[0, head].double().numpy()


def null_model_tables(model_config: str, token_files: list[str], patterns: dict, per_class: int) -> dict[str, pd.DataFrame]:
    """scores (per sequence, layer, head: the seven gate scores and the rows' [CLS] + [SEP] mass) and
    gates (the null model's own labels, its closed null being itself)."""
    seed = patterns["nulls"]["seed"]
    model = untrained_model(model_config, seed)
    sequences = subset_sequences(token_files, per_class, model.config.max_position_embeddings)
    log.info("null model: seed %d, %d layers x %d heads, %d sequences", seed, model.config.num_hidden_layers,
             model.config.num_attention_heads, len(sequences))  # fmt: skip
    rows = []
    for record, a in matrices(model, sequences):
        rows.append({**record, **{f"score_{g}": s for g, s in scores_of(a, patterns).items()},
                     "row_closed": (a[:, 0] + a[:, -1]).astype(np.float32)})  # fmt: skip
    scores = pd.DataFrame(rows).astype({"layer": "int16", "head": "int16"})
    labeller = Labeller(patterns, (closed_nulls(scores, patterns["min_effect"]["closed"]), set(scores["seq_id"])), seed)
    for record, a in matrices(model, sequences):
        labeller.add(record, a)
    gates = labeller.tables(scores[["layer", "head", *(f"score_{g}" for g in GATES)]], matrices(model, sequences))
    return {"scores": scores, "gates": gates["gates"]}


def write_null_model(model_config: str, token_files: list[str], outputs: dict[str, str], patterns: dict,
                     subset_per_class: int) -> None:  # fmt: skip
    """Rule null_model: the null model's per-matrix scores and gate labels (`outputs` keys scores, gates)."""
    tables = null_model_tables(model_config, list(token_files), patterns, subset_per_class)
    meta = provenance({"patterns": patterns, "subset_per_class": subset_per_class}, null_seed=patterns["nulls"]["seed"],
                      model_config=str(model_config))  # fmt: skip
    scores = pa.Table.from_pandas(tables["scores"], preserve_index=False)
    write_parquet(scores.set_column(scores.schema.get_field_index("row_closed"), "row_closed",
                                    pa.array(tables["scores"]["row_closed"], pa.list_(pa.float32()))),
                  outputs["scores"], meta=meta)  # fmt: skip
    write_parquet(tables["gates"], outputs["gates"], meta=meta)
    log.info("wrote %s, %s", outputs["scores"], outputs["gates"])
