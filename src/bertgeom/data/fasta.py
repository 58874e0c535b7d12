"""FASTA files: a validating reader (plain or gzip) and an atomic writer.

Every error names the file, the line and the record, so a user with 50,000 GISAID genomes can find
the one that is wrong.
"""

from __future__ import annotations

import gzip
import io
import os
from pathlib import Path
from typing import Iterable, Iterator

from bertgeom.io import atomic_path

# IUPAC nucleotide codes (U is read as T). Gaps ('-', '.') are alignment output, not sequence.
IUPAC = "ACGTURYSWKMBDHVN"
_IUPAC_BYTES = IUPAC.encode()
_COMPLEMENT = str.maketrans("ACGTRYSWKMBDHVN", "TGCAYRSWMKVHDBN")
GZIP_MAGIC = b"\x1f\x8b"


def reverse_complement(sequence: str) -> str:
    """Reverse complement of an uppercase IUPAC sequence (ambiguity codes complemented too)."""
    return sequence.translate(_COMPLEMENT)[::-1]


def _open_text(path: Path) -> io.TextIOBase:
    # Decide by content, not by name: a gzipped file without .gz is still read.
    with open(path, "rb") as handle:
        magic = handle.read(2)
    if magic == GZIP_MAGIC:
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="ascii")
    return open(path, encoding="ascii")


def read_fasta(path: str | os.PathLike) -> Iterator[tuple[str, str]]:
    """Yield (id, sequence) for each record of a FASTA file (plain or gzip).

    The id is the header's first word; the sequence is uppercased, U becomes T, whitespace is dropped.
    Raises FileNotFoundError if the file is missing and ValueError, naming the file, line and record,
    for an empty file, text before the first header, an empty id or sequence, characters outside
    the IUPAC nucleotide codes, or a duplicate id.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: FASTA file not found")
    return _read(path)


def _read(path: Path) -> Iterator[tuple[str, str]]:
    try:
        with _open_text(path) as handle:
            yield from parse_fasta(handle, str(path))
    except (UnicodeDecodeError, EOFError, gzip.BadGzipFile) as exc:
        raise ValueError(f"{path}: not a readable text or gzip FASTA file ({exc})") from exc


def parse_fasta(lines: Iterable[str], name: str) -> Iterator[tuple[str, str]]:
    """read_fasta's parser and checks on any iterable of lines; `name` is used in error messages."""
    seen: dict[str, int] = {}
    record_id, record_line, chunks = None, 0, []
    for line_no, line in enumerate(lines, start=1):
        line = line.strip()
        if line.startswith(">"):
            if record_id is not None:
                yield record_id, _finish(name, record_id, record_line, chunks)
            record_id, record_line, chunks = _header(name, line, line_no, seen), line_no, []
        elif line:
            if record_id is None:
                raise ValueError(f"{name}, line {line_no}: not FASTA (expected a header line starting with '>')")
            chunks.append(line)
    if record_id is None:
        raise ValueError(f"{name}: empty FASTA file (no records)")
    yield record_id, _finish(name, record_id, record_line, chunks)


def _header(path: str, line: str, line_no: int, seen: dict[str, int]) -> str:
    words = line[1:].split()
    if not words:
        raise ValueError(f"{path}, line {line_no}: record with an empty id")
    record_id = words[0]
    if record_id in seen:
        raise ValueError(f"{path}, line {line_no}: duplicate record id {record_id!r} (first at line {seen[record_id]})")
    seen[record_id] = line_no
    return record_id


def _finish(path: str, record_id: str, line_no: int, chunks: list[str]) -> str:
    sequence = "".join(chunks).upper().replace("U", "T")
    if not sequence:
        raise ValueError(f"{path}, line {line_no}: record {record_id!r} has no sequence")
    # bytes.translate with `delete` leaves only the offending characters, at C speed.
    bad = sorted(set(sequence.encode("ascii", "replace").translate(None, _IUPAC_BYTES).decode()))
    if bad:
        raise ValueError(
            f"{path}, line {line_no}: record {record_id!r} has characters outside the IUPAC nucleotide codes "
            f"{IUPAC}: {''.join(bad)!r}"
        )
    return sequence


def write_fasta(path: str | os.PathLike, records: Iterable[tuple[str, str]]) -> int:
    """Write (id, sequence) records, one sequence line each, atomically; returns the record count."""
    count = 0
    with atomic_path(path) as tmp, open(tmp, "w") as handle:
        for record_id, sequence in records:
            handle.write(f">{record_id}\n{sequence}\n")
            count += 1
    return count
