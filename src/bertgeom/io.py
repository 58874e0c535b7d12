"""Shared I/O: atomic writes, Parquet with a provenance block, fixed-size-list columns, job logs,
and the table helpers every stage uses (batched reads, column checks, the tokens-file validator).

Every output is written to a temporary file beside its target and renamed into place only when
complete, so an interrupted job never leaves a partial file that looks finished. Temporaries are
named `.<target name>.<8 random characters><suffix>` (files: `atomic_path`; directories of files
renamed one by one: `staging_directory`); the ones a killed job left are removed when a job owning
their target starts (`job_log(..., outputs=...)`, `sweep_temporaries`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import platform
import re
import shutil
import sys
import tempfile
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

METADATA_KEY = b"bertgeom"
PACKAGES = ("bertgeom", "torch", "transformers", "tokenizers", "numpy", "pyarrow", "scikit-learn", "mappy")
PARQUET_OPTIONS = dict(compression="zstd", compression_level=3)

log = logging.getLogger("bertgeom")
_UMASK = os.umask(0o022)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or ".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; outputs should be readable like any file
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_UMASK)  # again: a writer may have replaced the file (safetensors writes 0600)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def staging_directory(anchor: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory beside `anchor` (a file the caller will move out of it into place),
    named like atomic_path's temporaries so that sweep_temporaries finds it after a kill."""
    anchor = Path(anchor)
    anchor.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{anchor.name}.", suffix=".staging", dir=anchor.parent) as tmp:
        yield Path(tmp)


# .<target name>.<mkstemp's 8 random characters><suffix>: our temporaries and nothing else.
_RANDOM_SUFFIX = r"\.[a-z0-9_]{8}\.[A-Za-z0-9]+"
TEMPORARY = re.compile(rf"\..+{_RANDOM_SUFFIX}")


def sweep_temporaries(
    outputs: Iterable[str | os.PathLike] = (), directories: Iterable[str | os.PathLike] = ()
) -> list[Path]:
    """Remove what an interrupted job left of its writes: the temporaries of each of `outputs`
    (beside it, named after it) and every temporary inside `directories` (which a job owns whole,
    such as a checkpoint folder). Call it when the owning job starts, before it writes anything."""
    found = []
    for output in map(Path, outputs):
        pattern = re.compile(rf"\.{re.escape(output.name)}{_RANDOM_SUFFIX}")
        if output.parent.is_dir():
            found += [p for p in output.parent.iterdir() if pattern.fullmatch(p.name)]
    for directory in map(Path, directories):
        if directory.is_dir():
            found += [p for p in directory.iterdir() if TEMPORARY.fullmatch(p.name)]
    for path in found:
        log.warning("%s: removing a temporary left by an interrupted job", path)
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    return found


def file_directory(paths: dict[str, str | os.PathLike], names: dict[str, str]) -> Path:
    """The one directory holding `paths` ({key: path}), which must be the files `names` ({key: file
    name}) there: a Hugging Face model or tokenizer is read and written as a directory of fixed names.
    """
    paths = {key: Path(path) for key, path in paths.items()}
    wrong = {key: str(path) for key, path in paths.items() if key not in names or path.name != names[key]}
    directories = {path.parent for path in paths.values()}
    if wrong or len(directories) != 1:
        expected = ", ".join(f"{key}={name}" for key, name in names.items())
        raise ValueError(f"{sorted(map(str, paths.values()))}: expected one directory holding {expected}")
    return directories.pop()


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def as_json(obj: Any) -> Any:
    """`obj` as it reads back from JSON (numpy numbers as Python ones, paths and dict keys as strings)."""
    return json.loads(json.dumps(obj, default=_json_default))


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            pass
    return versions


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def config_hash(config: dict) -> str:
    """sha256 of the config as canonical JSON (key order does not matter)."""
    blob = json.dumps(config, sort_keys=True, default=_json_default).encode()
    return hashlib.sha256(blob).hexdigest()


def model_hash(model_dir: str | os.PathLike) -> str:
    """sha256 over the weights and config of a saved model directory."""
    model_dir = Path(model_dir)
    digest = hashlib.sha256()
    for name in ("config.json", "model.safetensors"):
        if (model_dir / name).exists():
            digest.update(sha256_file(model_dir / name).encode())
    return digest.hexdigest()


def provenance(config: dict | None = None, model_dir: str | os.PathLike | None = None, **extra: Any) -> dict:
    """The metadata block stored in every Parquet file: versions, config hash, model hash."""
    block: dict[str, Any] = {"versions": package_versions()}
    if config is not None:
        block["config_sha256"] = config_hash(config)
    if model_dir is not None:
        block["model_dir"] = str(model_dir)
        block["model_sha256"] = model_hash(model_dir)
    block.update(extra)
    return block


def _with_metadata(schema: pa.Schema, meta: dict | None) -> pa.Schema:
    if not meta:
        return schema
    merged = dict(schema.metadata or {})
    merged[METADATA_KEY] = json.dumps(meta, default=_json_default).encode()
    return schema.with_metadata(merged)


def write_parquet(data: pa.Table | Any, path: str | os.PathLike, meta: dict | None = None, **options: Any) -> None:
    """Write a pyarrow Table or pandas DataFrame atomically with zstd and the metadata block."""
    table = data if isinstance(data, pa.Table) else pa.Table.from_pandas(data, preserve_index=False)
    table = table.replace_schema_metadata(_with_metadata(table.schema, meta).metadata)
    with atomic_path(path, ".parquet") as tmp:
        pq.write_table(table, tmp, **{**PARQUET_OPTIONS, **options})


def read_metadata(path: str | os.PathLike) -> dict:
    """The bertgeom metadata block of a Parquet file ({} if absent)."""
    raw = (pq.read_schema(path).metadata or {}).get(METADATA_KEY)
    return json.loads(raw) if raw else {}


class ParquetStream:
    """Append record batches to a Parquet file, one row group per write; atomic on close.

    Memory stays bounded by one batch: nothing is kept after `write`.
    """

    def __init__(self, path: str | os.PathLike, schema: pa.Schema, meta: dict | None = None, **options: Any):
        self.path = Path(path)
        self.schema = _with_metadata(schema, meta)
        self._ctx = atomic_path(self.path, ".parquet")
        self._tmp = self._ctx.__enter__()
        self._writer = pq.ParquetWriter(self._tmp, self.schema, **{**PARQUET_OPTIONS, **options})
        self.rows = 0

    def write(self, columns: dict[str, Any] | pa.Table) -> None:
        table = columns if isinstance(columns, pa.Table) else pa.table(columns, schema=self.schema)
        if table.num_rows:
            self._writer.write_table(table.cast(self.schema))
            self.rows += table.num_rows

    def close(self) -> None:
        self._writer.close()
        self._ctx.__exit__(None, None, None)

    def abort(self) -> None:
        self._writer.close()
        self._ctx.__exit__(RuntimeError, RuntimeError("aborted"), None)

    def __enter__(self) -> "ParquetStream":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def fixed_size_list(matrix: np.ndarray, dtype: pa.DataType | None = None) -> pa.FixedSizeListArray:
    """A [rows, width] numpy array as a pyarrow FixedSizeListArray of `width` per row."""
    matrix = np.ascontiguousarray(matrix)
    if matrix.ndim != 2:
        raise ValueError(f"expected a 2-D array, got shape {matrix.shape}")
    values = pa.array(matrix.reshape(-1), type=dtype)
    return pa.FixedSizeListArray.from_arrays(values, matrix.shape[1])


def to_matrix(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A fixed-size-list column back to a [rows, width] numpy array (zero-copy where possible)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    width = column.type.list_size
    values = column.flatten().to_numpy(zero_copy_only=False)
    return values.reshape(-1, width)


# ---------------------------------------------------------------------------------------------
# Reading tables


# The columns of a tokens file (docs/outputs.md, Tokens) that training and the dump read.
TOKEN_COLUMNS = ("seq_id", "label", "input_ids", "n_tokens")


def require_columns(path: str | os.PathLike, columns) -> None:
    """ValueError naming the file and the missing columns, if any."""
    names = set(pq.read_schema(path).names)
    missing = [c for c in columns if c not in names]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing} (see docs/outputs.md)")


def iter_batches(path: str | os.PathLike, columns: list[str], batch_rows: int, filter=None) -> Iterator[pa.RecordBatch]:
    """Record batches of `columns` of a Parquet file, `batch_rows` rows at a time (optionally the
    rows matching `filter`, a pyarrow.compute expression). Memory is bounded by a batch or so.

    pre_buffer off: by default the reader fetches the column chunks of every row group up front, so
    memory grew with the file (benchmarks/bench_stats.py); the dataset scanner's read-ahead did too.
    """
    require_columns(path, columns)
    reader = pq.ParquetFile(path, pre_buffer=False)
    for batch in reader.iter_batches(batch_size=batch_rows, columns=columns):
        if filter is not None:
            batch = batch.filter(filter)
        if batch.num_rows:
            yield batch


def class_name(label, classes: list[str], path: str | os.PathLike) -> str:
    """The name of class `label` (its index in config classes); ValueError naming `path` if outside."""
    if not 0 <= int(label) < len(classes):
        raise ValueError(f"{path}: label {label} outside config classes (0..{len(classes) - 1})")
    return classes[int(label)]


def read_tokens(
    path: str | os.PathLike, n_classes: int | None, columns=("seq_id", "label", "n_tokens"), max_positions: int | None = None
) -> tuple[pa.Table, int]:
    """`columns` of a tokens file (docs/outputs.md, Tokens), validated, and its max_length.

    Checks, before anything is computed: the file and TOKEN_COLUMNS exist, input_ids is
    fixed_size_list<int>[max_length] with max_length <= `max_positions` (the model's positions,
    when given), and every record has 2 <= n_tokens <= max_length and 0 <= label < n_classes
    (n_classes None: labels unchecked, sequences of no class).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: tokens file not found (run the tokens stage first)")
    schema = pq.read_schema(path)
    missing = [c for c in TOKEN_COLUMNS if c not in schema.names]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; expected {list(TOKEN_COLUMNS)} (docs/outputs.md)")
    ids_type = schema.field("input_ids").type
    if not pa.types.is_fixed_size_list(ids_type):
        raise ValueError(f"{path}: input_ids must be fixed_size_list<int32>[max_length], got {ids_type}")
    width = ids_type.list_size
    if max_positions is not None and width > max_positions:
        raise ValueError(f"{path}: max_length {width} exceeds the model's max_position_embeddings {max_positions}")
    table = pq.read_table(path, columns=list(dict.fromkeys([*columns, "seq_id", "label", "n_tokens"])))
    n = table.column("n_tokens").to_numpy()
    labels = table.column("label").to_numpy()
    checks = [((n < 2) | (n > width), lambda i: f"n_tokens={n[i]}, expected 2..{width} ([CLS] and [SEP] included)")]
    if n_classes is not None:
        checks.append(((labels < 0) | (labels >= n_classes), lambda i: f"label {labels[i]}: labels must lie in 0..{n_classes - 1} (config classes)"))
    for bad, what in checks:
        if bad.any():
            first = int(np.flatnonzero(bad)[0])
            raise ValueError(f"{path}: record {table.column('seq_id')[first]}: {what(first)}")
    return table.select(list(columns)), width


# ---------------------------------------------------------------------------------------------
# Logs


def setup_logging(log_file: str | os.PathLike | None = None, level: int = logging.INFO) -> logging.Logger:
    """Send bertgeom's log (and warnings, and tracebacks) to a job's log file and to stderr."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file, mode="w"))
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=handlers,
        force=True,
    )
    logging.captureWarnings(True)
    return log


@contextlib.contextmanager
def job_log(log_file: str | os.PathLike | None, outputs: Iterable[str | os.PathLike] = ()) -> Iterator[logging.Logger]:
    """For Snakemake scripts: log to the rule's log file, first removing the temporaries that a killed
    earlier run of the job left beside its `outputs`; an exception is logged in full, then re-raised."""
    logger = setup_logging(log_file)
    try:
        sweep_temporaries(outputs)
        yield logger
    except Exception:
        logger.exception("job failed")
        raise
