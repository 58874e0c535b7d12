"""FASTA files: a validating reader (plain or gzip) and an atomic writer.

Every error names the file, the line and the record, so a user with 50,000 GISAID genomes can find
the one that is wrong.
"""

from __future__ import annotations

import gzip
import io
import os
from dataclasses import dataclass
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


def read_fasta(path: str | os.PathLike, strip_gaps: bool = False) -> Iterator[tuple[str, str]]:
    """Yield (id, sequence) for each record of a FASTA file (plain or gzip).

    The id is the header's first word; the sequence is uppercased, U becomes T, whitespace is dropped;
    with `strip_gaps` the alignment gaps '-' and '.' are removed (else they are an error).
    Raises FileNotFoundError if the file is missing and ValueError, naming the file, line and record,
    for an empty file, text before the first header, an empty id or sequence, characters outside
    the IUPAC nucleotide codes, or a duplicate id.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: FASTA file not found")
    return _read(path, strip_gaps)


def _read(path: Path, strip_gaps: bool) -> Iterator[tuple[str, str]]:
    for record in read_records(path, strip_gaps):
        if record.problem:
            raise ValueError(f"{path}, line {record.line}: {record.problem}")
        yield record.seq_id, record.sequence


@dataclass
class FastaRecord:
    """One record as read, checked but not refused: `problem` says what is wrong ("" when nothing)."""

    seq_id: str
    sequence: str
    line: int  # of the header
    gaps: int = 0  # alignment gap characters removed
    problem: str = ""


def read_records(path: str | os.PathLike, strip_gaps: bool = True) -> Iterator[FastaRecord]:
    """Every record of a FASTA file, one at a time (constant memory), bad records included as such.

    A record with an empty id, no sequence, characters outside the IUPAC codes (after removing gaps
    when `strip_gaps`) or an id seen before gets a `problem`; only a file that is missing, empty,
    not FASTA or not decodable raises (FileNotFoundError / ValueError naming the file).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: FASTA file not found")
    try:
        with _open_text(path) as handle:
            yield from parse_records(handle, str(path), strip_gaps)
    except (UnicodeDecodeError, EOFError, gzip.BadGzipFile) as exc:
        raise ValueError(f"{path}: not a readable text or gzip FASTA file ({exc})") from exc


def parse_fasta(lines: Iterable[str], name: str, strip_gaps: bool = False) -> Iterator[tuple[str, str]]:
    """read_fasta's parser and checks on any iterable of lines; `name` is used in error messages."""
    for record in parse_records(lines, name, strip_gaps):
        if record.problem:
            raise ValueError(f"{name}, line {record.line}: {record.problem}")
        yield record.seq_id, record.sequence


def parse_records(lines: Iterable[str], name: str, strip_gaps: bool = False) -> Iterator[FastaRecord]:
    """read_records' parser on any iterable of lines; `name` is used in error messages."""
    seen: dict[str, int] = {}
    record_id, record_line, chunks = None, 0, []
    for line_no, line in enumerate(lines, start=1):
        line = line.strip()
        if line.startswith(">"):
            if record_id is not None:
                yield _finish(record_id, record_line, chunks, seen, strip_gaps)
            words = line[1:].split()
            record_id, record_line, chunks = (words[0] if words else ""), line_no, []
        elif line:
            if record_id is None:
                raise ValueError(f"{name}, line {line_no}: not FASTA (expected a header line starting with '>')")
            chunks.append(line)
    if record_id is None:
        raise ValueError(f"{name}: empty FASTA file (no records)")
    yield _finish(record_id, record_line, chunks, seen, strip_gaps)


def _finish(record_id: str, line_no: int, chunks: list[str], seen: dict[str, int], strip_gaps: bool) -> FastaRecord:
    sequence = "".join(chunks).upper().replace("U", "T")
    gaps = 0
    if strip_gaps:
        stripped = sequence.replace("-", "").replace(".", "")
        gaps, sequence = len(sequence) - len(stripped), stripped
    record = FastaRecord(record_id, sequence, line_no, gaps)
    if not record_id:
        record.problem = "record with an empty id"
    elif record_id in seen:
        record.problem = f"duplicate record id {record_id!r} (first at line {seen[record_id]})"
    elif not sequence:
        record.problem = f"record {record_id!r} has no sequence" + (f" ({gaps} gap characters only)" if gaps else "")
    else:
        # bytes.translate with `delete` leaves only the offending characters, at C speed.
        bad = sorted(set(sequence.encode("ascii", "replace").translate(None, _IUPAC_BYTES).decode()))
        if bad:
            record.problem = (
                f"record {record_id!r} has characters outside the IUPAC nucleotide codes {IUPAC}: {''.join(bad)!r}"
            )
    seen.setdefault(record_id, line_no)
    return record


def write_fasta(path: str | os.PathLike, records: Iterable[tuple[str, str]]) -> int:
    """Write (id, sequence) records, one sequence line each, atomically; returns the record count."""
    count = 0
    with atomic_path(path) as tmp, open(tmp, "w") as handle:
        for record_id, sequence in records:
            handle.write(f">{record_id}\n{sequence}\n")
            count += 1
    return count
