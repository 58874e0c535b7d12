"""tokens.parquet for tests, written as the dump writes it: its encoding (float32 mean + float16
deviations), its tables and one row group per (layer, stage) (bertgeom.token_vectors)."""

from __future__ import annotations

import numpy as np
import torch

from bertgeom.activations import schemas
from bertgeom.activations.reduce import encode_tokens, token_table
from bertgeom.io import ParquetStream


def write_tokens(path, blocks) -> None:
    """blocks: dicts {seq_id, label, layer, stage, x [n, hidden]} (split "test", pred = label)."""
    blocks = list(blocks)
    schema = schemas(blocks[0]["x"].shape[1], 1, 5)["tokens"]
    keys = list(dict.fromkeys((b["layer"], b["stage"]) for b in blocks))
    with ParquetStream(path, schema) as stream:
        for layer, stage in keys:
            mine = [b for b in blocks if (b["layer"], b["stage"]) == (layer, stage)]
            encoded = []
            for b in mine:
                x = torch.from_numpy(np.asarray(b["x"], dtype=np.float32))
                encoded.append(encode_tokens(x, x.mean(0)))
            labels = np.array([b["label"] for b in mine])
            seq_ids = [b["seq_id"] for b in mine]
            stream.write(token_table(encoded, seq_ids, "test", labels, labels, layer, stage, schema))
