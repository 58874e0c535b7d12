"""Resumable state (training checkpoints, download caches): checksummed when written, checked when reused.

A job that saves work for a rerun (a checkpoint, a cached download) writes a checksum with it: JSON
files carry the sha256 of their own content under CHECKSUM_KEY, other files a sidecar `<name>.sha256`.
On reuse a damaged entry (cut short, altered, checksum missing) is logged as a warning with its path
and discarded, and the caller redoes the work it stood for: a damaged cache is never fatal and never
silently used.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from bertgeom import io

log = logging.getLogger("bertgeom.resumable")

CHECKSUM_KEY = "content_sha256"  # in a checked JSON file: io.config_hash of the rest of it
SIDECAR = ".sha256"  # beside any other checked file: its io.sha256_file


class Damaged(Exception):
    """A resumable file that fails its check; the message names the file and what is wrong."""


def write_json(path: str | os.PathLike, obj: dict) -> None:
    """`obj` as JSON (atomically) with the checksum of its content."""
    body = io.as_json(obj)
    io.write_json(path, {**body, CHECKSUM_KEY: io.config_hash(body)})


def read_json(path: str | os.PathLike) -> dict:
    """A file written by write_json, without its checksum; Damaged unless intact."""
    try:
        body = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise Damaged(f"{path}: unreadable ({type(exc).__name__}: {exc})") from exc
    if not isinstance(body, dict) or CHECKSUM_KEY not in body:
        raise Damaged(f"{path}: no {CHECKSUM_KEY} (not written by bertgeom.resumable)")
    expected = body.pop(CHECKSUM_KEY)
    if io.config_hash(body) != expected:
        raise Damaged(f"{path}: content does not match its {CHECKSUM_KEY}")
    return body


def write_bytes(path: str | os.PathLike, content: bytes) -> None:
    """`content` to `path` (atomically), then its checksum to the sidecar."""
    with io.atomic_path(path, Path(path).suffix or ".tmp") as tmp:
        tmp.write_bytes(content)
    io.write_text(f"{path}{SIDECAR}", io.sha256_file(path) + "\n")


def check_file(path: str | os.PathLike, sha256: str | None = None) -> None:
    """Damaged unless `path` has the checksum `sha256` (default: the one in its sidecar)."""
    path = Path(path)
    if sha256 is None:
        sidecar = Path(f"{path}{SIDECAR}")
        if not sidecar.is_file():
            raise Damaged(f"{path}: no checksum file {sidecar.name} (cut short before it was written)")
        sha256 = sidecar.read_text().strip()
    if not path.is_file():
        raise Damaged(f"{path}: missing")
    actual = io.sha256_file(path)
    if actual != sha256:
        raise Damaged(f"{path}: sha256 {actual[:12]}... differs from the {sha256[:12]}... written with it")


def discard(damage: Damaged, *paths: str | os.PathLike) -> None:
    """Log `damage` and delete `paths` (with their sidecars), so that the work is redone."""
    log.warning("%s; discarded, the work it saved is redone", damage)
    for path in paths:
        Path(path).unlink(missing_ok=True)
        Path(f"{path}{SIDECAR}").unlink(missing_ok=True)


def load_json(path: str | os.PathLike) -> dict[str, Any] | None:
    """A checked JSON file to reuse, or None when there is none or it is damaged (then discarded)."""
    if not Path(path).exists():
        return None
    try:
        return read_json(path)
    except Damaged as damage:
        discard(damage, path)
        return None


def intact(path: str | os.PathLike) -> bool:
    """Whether a file written by write_bytes can be reused; a damaged one is discarded (False)."""
    if not Path(path).exists():
        return False
    try:
        check_file(path)
    except Damaged as damage:
        discard(damage, path)
        return False
    return True
