"""The dump: every sequence of the tokens files through the model, batch by batch, into the files."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from bertgeom import io
from bertgeom.activations.reduce import NO_PREDICTION, BatchReducer, batch_tables
from bertgeom.activations.writers import OUTPUT_FILES, KeyedRowGroups, RowGroups, class_table, schemas, writer_options
from bertgeom.hooks import HEAD_STAGES, STAGES, capture, hook_names
from bertgeom.measures import real_mask
from bertgeom.model import EXACT_ATTENTION, load_model, select_device

log = logging.getLogger("bertgeom.activations")

# On CPU a forward chunk is sized so that its fp32 scores [chunk, head, L, L] take about this much
# per torch thread (a core's L2): bigger chunks run ~10% slower per sequence, smaller ones leave
# threads idle (measured on the default model, 1 and 2 threads).
CPU_SCORES_BYTES = 8 * 2**20
TRIM_EVERY = 16  # sequences between returns of freed heap memory to the OS (free_heap_memory)


def forward_batch(batch_size: int, device: torch.device, heads: int, length: int) -> int:
    """Sequences per forward pass: `batch_size` on CUDA; on CPU as many as keep the scores in cache."""
    if device.type != "cpu":
        return batch_size
    budget = CPU_SCORES_BYTES * torch.get_num_threads()
    return max(1, min(batch_size, budget // (4 * heads * length * length)))


def free_heap_memory() -> None:
    """Return freed heap memory to the OS: glibc's malloc_trim(0), a no-op without glibc.

    The CPU chunks' buffers (a few MB) fall under glibc's dynamic mmap threshold, so they come from
    the heap; real sequences differ by a few tokens, so do the buffers, and the fragmented heap grew
    to 3.7 GB on the default run (1.5 GB when trimmed every TRIM_EVERY sequences, at the same speed).
    """
    trim = getattr(ctypes.CDLL(None), "malloc_trim", None)
    if trim is not None:
        trim(0)


def subset_ids(index: pa.Table, per_class: int) -> set[str]:
    """The first `per_class` seq_ids (in seq_id order) of each label: the token-level subset."""
    frame = index.select(["seq_id", "label"]).to_pandas().sort_values(["label", "seq_id"])
    return set(frame.groupby("label").head(per_class)["seq_id"])


def _check_classes(model, classes: list[str]) -> None:
    names = [model.config.id2label[i] for i in range(model.config.num_labels)]
    if names != list(classes):
        raise ValueError(f"model id2label {names} does not match config classes {list(classes)}")


def dump(
    model_dir: str | Path,
    token_files: dict[str, str | Path],
    outputs: dict[str, str | Path],
    classes: list[str],
    settings: dict,
    top_keys: int,
    classifier: bool = True,
) -> dict:
    """Dump the activations of every sequence of `token_files` ({split: tokens parquet}) to `outputs`.

    outputs: {name: path} for every name in OUTPUT_FILES. settings: config `activations`
    (subset_per_class, token_stages, and the execution-only batch_size, device, row_group_mb).
    top_keys: config patterns.top_keys, the k of the attention measure col_top{k}.
    classifier False: a checkpoint without a trained classifier (init, mlm): the columns pred and
    correct are null, and the class-averaged matrices run over every sequence of the class.
    Returns counts (sequences, seconds) for logging. Outputs appear only if everything succeeded.
    """
    classes = list(classes)
    device = select_device(settings["device"], "config activations.device")
    model = load_model(model_dir, device, attn_implementation=EXACT_ATTENTION)  # A is materialised
    if classifier:
        _check_classes(model, classes)
    cfg = model.config
    n_layers, heads, hidden = cfg.num_hidden_layers, cfg.num_attention_heads, cfg.hidden_size
    d_head = hidden // heads
    unknown = sorted(set(settings["token_stages"]) - set(STAGES))
    if unknown:
        raise ValueError(f"config activations.token_stages: unknown stage(s) {unknown}; expected some of {list(STAGES)}")

    indexes, widths = {}, {}
    for split, path in token_files.items():
        indexes[split], widths[split] = io.read_tokens(path, len(classes), max_positions=cfg.max_position_embeddings)
    if len(set(widths.values())) > 1:
        raise ValueError(f"tokens files differ in max_length: {widths}")
    class_len = max(int(pc.max(idx.column("n_tokens")).as_py()) for idx in indexes.values())
    total = sum(idx.num_rows for idx in indexes.values())

    meta = io.provenance(
        {"classes": classes, "activations": settings, "patterns": {"top_keys": top_keys}}, model_dir, splits=list(token_files), stages=list(STAGES), head_stages=list(HEAD_STAGES),
        token_stages=list(settings["token_stages"]), hook_points=hook_names(n_layers), layers=n_layers,
        heads=heads, hidden=hidden, d_head=d_head, max_length=next(iter(widths.values())), device=str(device),
    )  # fmt: skip
    schema = schemas(hidden, d_head, top_keys)
    # Class heatmaps: A of the batch waits in class_buf until the predictions are known, then the
    # correctly classified sequences (every sequence without a classifier) are summed into class_sum
    # (float32: sums of values in [0, 1]).
    class_sum = torch.zeros((len(classes), n_layers, heads, class_len, class_len), device=device)
    class_buf = torch.empty((settings["batch_size"], n_layers, heads, class_len, class_len), device=device)
    class_hist = np.zeros((len(classes), class_len + 1), dtype=np.int64)  # averaged sequences per (label, n)
    target = int(settings["row_group_mb"] * 2**20)
    done, start = 0, time.perf_counter()
    log.info("dumping %d sequences of %s on %s: %d layers, %d heads, hidden %d", total, list(token_files), device, n_layers, heads, hidden)
    with contextlib.ExitStack() as stack:
        streams = {
            name: stack.enter_context(
                io.ParquetStream(outputs[name], schema[name], meta={**meta, "file": name}, **writer_options(schema[name]))
            )
            for name in OUTPUT_FILES
        }
        # Entered after the streams, so it exits first: no write is in flight when they close or abort.
        # Two writers: Arrow encodes float16 at ~180 MB/s, so the token-level files need both.
        pool = stack.enter_context(ThreadPoolExecutor(max_workers=2, thread_name_prefix="parquet"))
        groups = {name: RowGroups(streams[name], target, pool) for name in OUTPUT_FILES if name != "class_attention"}
        groups["tokens"] = KeyedRowGroups(streams["tokens"], target, pool)  # a row group per (layer, stage)
        for split, path in token_files.items():
            keep = subset_ids(indexes[split], settings["subset_per_class"])
            chunk = forward_batch(settings["batch_size"], device, heads, widths[split])
            reader = pq.ParquetFile(path).iter_batches(batch_size=chunk, columns=list(io.TOKEN_COLUMNS))
            for record in reader:
                seq_ids = record.column("seq_id").to_pylist()
                labels = record.column("label").to_numpy().astype(np.int64)
                n_np = record.column("n_tokens").to_numpy().astype(np.int64)
                ids = torch.from_numpy(io.to_matrix(record.column("input_ids")).astype(np.int64)).to(device)
                n = torch.from_numpy(n_np).to(device)
                subset = np.array([s in keep for s in seq_ids])
                red = BatchReducer(n, ids.shape[1], subset, heads, settings["token_stages"], top_keys, class_buf)
                with torch.inference_mode(), capture(model, red):
                    logits = model(input_ids=ids, attention_mask=real_mask(n, ids.shape[1]).long()).logits
                preds = logits.argmax(-1).cpu().numpy() if classifier else np.full(len(labels), NO_PREDICTION)
                averaged = np.flatnonzero(preds == labels) if classifier else np.arange(len(labels))
                if len(averaged):
                    at = torch.from_numpy(averaged).to(device)
                    class_sum.index_add_(0, torch.from_numpy(labels[averaged]).to(device), class_buf.index_select(0, at))
                    np.add.at(class_hist, (labels[averaged], n_np[averaged]), 1)
                for name, table in batch_tables(red, seq_ids, split, labels, preds, n_np, n_layers, heads, schema).items():
                    groups[name].add(table)
                done += len(seq_ids)
                _progress(done, total, start)
                if done // TRIM_EVERY != (done - len(seq_ids)) // TRIM_EVERY:
                    free_heap_memory()
        for group in groups.values():
            group.flush()
        for group in groups.values():
            group.wait()
        streams["class_attention"].write(class_table(class_sum, class_hist, classes, schema["class_attention"]))
    seconds = time.perf_counter() - start
    log.info("dumped %d sequences in %.1f s (%.2f sequences/s)", done, seconds, done / max(seconds, 1e-9))
    return {"sequences": done, "seconds": seconds}


def _progress(done: int, total: int, start: float) -> None:
    step = max(1, total // 20)
    if done == total or done // step != (done - 1) // step or done < 2:
        rate = done / max(time.perf_counter() - start, 1e-9)
        log.info("%d/%d sequences (%.0f%%), %.2f sequences/s", done, total, 100 * done / max(total, 1), rate)
