"""Rule `extract_spike`: cut the spike gene out of each genome, with QC reasons for every record.

Alignment: minimap2 (mappy) against the reference's spike locus, NC_045512.2:21563-25384 plus
`flank` nt each side (one index, built once; the whole reference with flank=None). Only the locus
matters for the lift, and aligning 4.4 kb instead of 30 kb is several times faster. Forward genomes
are first aligned on a window of `window` nt each side of the spike's reference position, and
again in full if anything is unusual (see SpikeExtractor._locate).

Lift: the spike's first base (21563) and the end of its last base (25384) are carried through the
alignment's CIGAR: a boundary inside a deletion moves to the deletion's edge; insertions inside the
spike are kept, insertions just outside its ends are not. Reverse-strand genomes are reverse-
complemented first. A boundary the alignment does not reach (clipped or unaligned end, an N run over
it) is extrapolated ungapped from the nearest aligned block; if it then falls outside the sequence,
the spike is partial (trimmed end).

QC (first failing check wins): missing_spike, partial_spike (a trimmed end, or a length more than
qc.max_length_change nt away from the reference's 3,822), too_many_n (non-ACGT fraction above
qc.max_n_fraction), frameshift (length not a multiple of 3), internal_stop (an in-frame TAA/TAG/TGA
before the last codon, unless qc.allow_internal_stops), and, across the data set, duplicate (the same
spike as an earlier record of the class, when qc.drop_duplicates).
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from itertools import islice
from typing import Iterable, Iterator

import mappy
import pandas as pd
import pyarrow as pa

from bertgeom.data.download import read_manifest, write_tsv
from bertgeom.data.fasta import read_fasta, reverse_complement
from bertgeom.data.variants import SPIKE_END, SPIKE_START, read_reference
from bertgeom.io import provenance, write_parquet

log = logging.getLogger("bertgeom.data.spike")

REASONS = ("missing_spike", "partial_spike", "too_many_n", "frameshift", "internal_stop", "duplicate")
STOP_CODONS = frozenset({"TAA", "TAG", "TGA"})
REFERENCE_LENGTH = SPIKE_END - SPIKE_START + 1  # 3,822 nt, stop codon included


def longest_accepted(max_length_change: int) -> int:
    """The longest spike (nt) the QC passes: at most qc.max_length_change over the reference's, whole
    codons (a length not a multiple of 3 is a frameshift)."""
    longest = REFERENCE_LENGTH + int(max_length_change)
    return longest - longest % 3


@dataclass
class SpikeResult:
    """One record's spike. `sequence` is the located spike (uppercase nt; set even when a QC check
    rejects it, so callers can inspect it) or None when it could not be located; use it only when
    `status == "pass"`. `reason` is one of REASONS ("" on pass); `detail` says why in words."""

    seq_id: str
    status: str
    reason: str = ""
    detail: str = ""
    sequence: str | None = None
    strand: int = 0  # +1 / -1 relative to the reference; 0 when not aligned
    n_fraction: float = float("nan")

    @property
    def length(self) -> int:
        return len(self.sequence) if self.sequence is not None else 0


class SpikeExtractor:
    """Find the spike gene in a whole genome or a bare spike sequence, and QC it.

    >>> ex = SpikeExtractor("resources/NC_045512.2.fasta")
    >>> res = ex.extract("my-genome", genome)   # res.status, res.reason, res.sequence

    reference: NC_045512.2 FASTA. QC thresholds: max_n_fraction, allow_internal_stops,
    max_length_change (as config qc). Alignment: minimap2 `preset`; `flank` nt of reference each side
    of the spike are indexed (None: the whole reference); `window` nt each side of the spike's
    reference position are aligned first for forward genomes (None: always the whole sequence).
    """

    def __init__(
        self,
        reference: str | os.PathLike,
        *,
        max_n_fraction: float = 0.05,
        allow_internal_stops: bool = False,
        max_length_change: int = 90,
        preset: str = "asm20",
        flank: int | None = 300,
        window: int | None = 2000,
    ):
        ref = read_reference(reference)
        if ref[SPIKE_START - 1 : SPIKE_START + 2] != "ATG" or ref[SPIKE_END - 3 : SPIKE_END] not in STOP_CODONS:
            raise ValueError(f"{reference}: not NC_045512.2 (no spike ATG..stop at {SPIKE_START}..{SPIKE_END})")
        self.reference = str(reference)
        self.max_n_fraction = float(max_n_fraction)
        self.allow_internal_stops = bool(allow_internal_stops)
        self.max_length_change = int(max_length_change)
        self.preset, self.flank, self.window = preset, flank, window
        w0 = 0 if flank is None else max(0, SPIKE_START - 1 - flank)
        w1 = len(ref) if flank is None else min(len(ref), SPIKE_END + flank)
        self._aligner = mappy.Aligner(seq=ref[w0:w1], preset=preset)
        if not self._aligner:
            raise ValueError(f"{reference}: minimap2 could not index the reference with preset {preset!r}")
        self._s0, self._s1 = SPIKE_START - 1 - w0, SPIKE_END - w0  # spike, 0-based half-open, in the index

    def options(self) -> dict:
        return dict(
            max_n_fraction=self.max_n_fraction,
            allow_internal_stops=self.allow_internal_stops,
            max_length_change=self.max_length_change,
            preset=self.preset,
            flank=self.flank,
            window=self.window,
        )

    def extract(self, seq_id: str, sequence: str) -> SpikeResult:
        """Locate and QC the spike of one sequence (genome or spike gene; any case, U read as T)."""
        sequence = sequence.upper().replace("U", "T")
        located = self._locate(sequence)
        if isinstance(located, SpikeResult):
            located.seq_id = seq_id
            return located
        spike, strand, note = located
        length = len(spike)
        n_fraction = 1.0 - sum(spike.count(base) for base in "ACGT") / length
        result = SpikeResult(seq_id, "pass", "", note, spike, strand, n_fraction)
        change = length - REFERENCE_LENGTH
        if abs(change) > self.max_length_change:
            return _reject(
                result,
                "partial_spike",
                f"length {length} nt is {change:+d} nt from the reference's 3822 (qc.max_length_change {self.max_length_change})",
            )
        if n_fraction > self.max_n_fraction:
            return _reject(
                result,
                "too_many_n",
                f"{n_fraction:.1%} of {length} nt are N or ambiguous (qc.max_n_fraction {self.max_n_fraction})",
            )
        if length % 3:
            return _reject(result, "frameshift", f"length {length} nt is not a multiple of 3")
        stops = [i // 3 + 1 for i in range(0, length - 3, 3) if spike[i : i + 3] in STOP_CODONS]
        if stops and not self.allow_internal_stops:
            shown = ", ".join(map(str, stops[:5])) + (" ..." if len(stops) > 5 else "")
            return _reject(
                result,
                "internal_stop",
                f"{len(stops)} in-frame stop codon(s) before the end, at codon(s) {shown} of {length // 3}",
            )
        return result

    def _locate(self, sequence: str) -> tuple[str, int, str] | SpikeResult:
        """(spike, strand, note) or a rejected SpikeResult (missing or partial spike)."""
        # Fast path (~30% less time): a forward genome has its spike near the reference position,
        # so align only that window; any doubt (no hit, reverse strand, a boundary not inside an
        # aligned block) falls back to the whole sequence.
        if self.window is None:
            return self._align(sequence)
        lo, hi = max(0, SPIKE_START - 1 - self.window), SPIKE_END + self.window
        if len(sequence) > hi + self.window:
            found = self._align(sequence[lo:hi])
            if not isinstance(found, SpikeResult) and found[1] == 1 and not found[2]:
                return found
        return self._align(sequence)

    def _align(self, sequence: str) -> tuple[str, int, str] | SpikeResult:
        s0, s1 = self._s0, self._s1
        hits = [h for h in self._aligner.map(sequence) if h.is_primary] if sequence else []
        if not hits:
            return SpikeResult("", "reject", "missing_spike", "no alignment to the reference spike locus")
        best = max(hits, key=lambda h: _overlap(h.r_st, h.r_en, s0, s1))
        if _overlap(best.r_st, best.r_en, s0, s1) == 0:
            return SpikeResult(
                "",
                "reject",
                "missing_spike",
                f"alignments do not overlap the spike (reference {SPIKE_START}-{SPIKE_END})",
            )
        strand, n = best.strand, len(sequence)
        query = sequence if strand == 1 else reverse_complement(sequence)
        # Query coordinates of reverse-strand hits count from the end of the forward sequence.
        blocks = sorted(
            (h.r_st, h.r_en, h.q_st if strand == 1 else n - h.q_en, h.q_en if strand == 1 else n - h.q_st, h.cigar)
            for h in hits
            if h.strand == strand
        )
        start, start_note = _lift(blocks, s0, "start")
        end, end_note = _lift(blocks, s1, "end")
        notes = [note for note in ("reverse strand" if strand == -1 else "", start_note, end_note) if note]
        if start < 0 or end > n:
            lost = []
            if start < 0:
                lost.append(f"{-start} nt before the start")
            if end > n:
                lost.append(f"{end - n} nt after the end")
            return SpikeResult(
                "",
                "reject",
                "partial_spike",
                f"the spike extends {' and '.join(lost)} of the sequence (trimmed end)",
                None,
                strand,
            )
        if end - start < 3:
            return SpikeResult("", "reject", "missing_spike", "the spike is deleted in this sequence", None, strand)
        return query[start:end], strand, "; ".join(notes)


def _reject(result: SpikeResult, reason: str, detail: str) -> SpikeResult:
    result.status, result.reason, result.detail = "reject", reason, detail
    return result


def _overlap(a0: int, a1: int, b0: int, b1: int) -> int:
    return max(0, min(a1, b1) - max(a0, b0))


def _lift(blocks: list[tuple], pos: int, side: str) -> tuple[int, str]:
    """Query position of reference boundary `pos` (side "start": base pos; "end": just after base pos-1).

    blocks: (r_st, r_en, q_st, q_en, cigar) of one strand's alignments, sorted by r_st, with query
    coordinates on the aligned strand. Returns (position, note); the note says when extrapolated.
    """
    for r_st, r_en, q_st, _, cigar in blocks:
        if (r_st <= pos < r_en) if side == "start" else (r_st < pos <= r_en):
            return _walk(cigar, r_st, q_st, pos, side), ""
    # Not covered: extrapolate ungapped from the nearest block on the inner side of the boundary.
    if side == "start":
        after = [b for b in blocks if b[0] > pos]
        q = after[0][2] - (after[0][0] - pos) if after else blocks[-1][3] + (pos - blocks[-1][1])
    else:
        before = [b for b in blocks if b[1] < pos]
        q = before[-1][3] + (pos - before[-1][1]) if before else blocks[0][2] - (blocks[0][0] - pos)
    return q, f"{side} extrapolated through an unaligned stretch"


def _walk(cigar: list, r: int, q: int, pos: int, side: str) -> int:
    """Walk a mappy CIGAR ([length, op] with M=0 I=1 D=2 N=3 ==7 X=8) from (r, q) to boundary `pos`."""
    for length, op in cigar:
        inside = pos < r + length if side == "start" else pos <= r + length
        if op in (0, 7, 8):
            if inside:
                return q + pos - r
            r, q = r + length, q + length
        elif op in (2, 3):
            if inside:  # boundary deleted: the spike starts/ends at the deletion's edge
                return q
            r += length
        elif op == 1:  # insertions before the start boundary stay outside; inside ones are walked over
            q += length
    return q


# ---- many records: optional worker processes (mappy holds the GIL while aligning) ----

_WORKER: SpikeExtractor | None = None  # one per worker process


def _init_worker(reference: str, options: dict) -> None:
    global _WORKER
    _WORKER = SpikeExtractor(reference, **options)


def _extract_chunk(chunk: list[tuple[str, str]]) -> list[SpikeResult]:
    return [_WORKER.extract(seq_id, sequence) for seq_id, sequence in chunk]


def extract_many(
    records: Iterable[tuple[str, str]], extractor: SpikeExtractor, threads: int = 1, chunk: int = 200
) -> Iterator[SpikeResult]:
    """extractor.extract over (id, sequence) records, in input order; `threads` > 1 uses processes.

    Memory stays bounded: at most threads * 4 chunks of sequences are in flight.
    """
    records = iter(records)
    chunks = iter(lambda: list(islice(records, chunk)), [])
    if threads <= 1:
        for part in chunks:
            yield from (extractor.extract(seq_id, sequence) for seq_id, sequence in part)
        return
    with ProcessPoolExecutor(
        threads, initializer=_init_worker, initargs=(extractor.reference, extractor.options())
    ) as pool:
        while window := list(islice(chunks, threads * 4)):
            for results in pool.map(_extract_chunk, window):
                yield from results


# ---- the rule: whole data set, duplicates, tables ----


def extract_dataset(
    genomes: str | os.PathLike,
    manifest: str | os.PathLike,
    reference: str | os.PathLike,
    classes: list[str],
    qc: dict,
    threads: int = 1,
) -> tuple[pa.Table, pd.DataFrame]:
    """The spike table (passing records) and the QC table (every record) of genomes.fasta.

    qc = config qc (max_n_fraction, drop_duplicates, allow_internal_stops, max_length_change, preset, flank).
    Raises ValueError for records missing from the manifest (or the reverse), classes not in
    `classes`, and a class left with no sequence after QC.
    """
    manifest_table = read_manifest(manifest)
    columns = (manifest_table[c] for c in ("class", "lineage", "source"))
    meta = dict(zip(manifest_table["seq_id"], zip(*columns)))
    unknown = sorted(set(manifest_table["class"]) - set(classes))
    if unknown:
        raise ValueError(f"{manifest}: class(es) {unknown} are not in config classes {classes}")
    extractor = SpikeExtractor(
        reference,
        max_n_fraction=qc["max_n_fraction"],
        allow_internal_stops=qc["allow_internal_stops"],
        max_length_change=qc["max_length_change"],
        preset=qc["preset"],
        flank=qc["flank"],
    )
    first_of: dict[tuple[str, str], str] = {}  # (class, spike) -> first seq_id
    spikes, qc_rows, seen = [], [], set()
    started = time.monotonic()

    def checked() -> Iterator[tuple[str, str]]:
        for seq_id, sequence in read_fasta(genomes):
            if seq_id not in meta:
                raise ValueError(f"{genomes}: record {seq_id!r} is not in {manifest}")
            seen.add(seq_id)
            yield seq_id, sequence

    for res in extract_many(checked(), extractor, threads):
        name, lineage, source = meta[res.seq_id]
        if res.status == "pass" and qc["drop_duplicates"]:
            first = first_of.setdefault((name, res.sequence), res.seq_id)
            if first != res.seq_id:
                _reject(res, "duplicate", f"same spike as {first}")
        qc_rows.append(
            {
                "seq_id": res.seq_id,
                "class": name,
                "status": res.status,
                "reason": res.reason,
                "detail": res.detail,
                "length": res.length,
                "n_fraction": round(res.n_fraction, 5),
                "strand": res.strand,
            }
        )
        if res.status == "pass":
            spikes.append(
                (res.seq_id, name, classes.index(name), lineage, source, res.sequence, res.n_fraction, res.strand)
            )
        if len(qc_rows) % 1000 == 0:
            log.info("%d genomes aligned (%.0f/s)", len(qc_rows), len(qc_rows) / (time.monotonic() - started))
    absent = [seq_id for seq_id in meta if seq_id not in seen]
    if absent:
        raise ValueError(f"{manifest}: {len(absent)} genome(s) are not in {genomes}, e.g. {absent[:5]}")
    qc_table = pd.DataFrame(
        qc_rows, columns=["seq_id", "class", "status", "reason", "detail", "length", "n_fraction", "strand"]
    )
    _check_classes(qc_table, classes)
    log.info(
        "%d genomes: %d pass, %d reject in %.1f s",
        len(qc_table),
        len(spikes),
        len(qc_table) - len(spikes),
        time.monotonic() - started,
    )
    return _spike_table(spikes), qc_table


def _check_classes(qc_table: pd.DataFrame, classes: list[str]) -> None:
    """Log the QC counts per class; raise ValueError for a class with no passing sequence."""
    for name in classes:
        rows = qc_table[qc_table["class"] == name]
        passed = int((rows["status"] == "pass").sum())
        reasons = dict(Counter(rows.loc[rows["status"] != "pass", "reason"]))
        log.info("class %s: %d genomes, %d pass, rejected: %s", name, len(rows), passed, reasons or "none")
        if passed == 0:
            raise ValueError(
                f"class {name!r} has no sequence left after QC ({len(rows)} genomes in the manifest; rejected: {reasons or 'none'})"
            )


def _spike_table(spikes: list[tuple]) -> pa.Table:
    columns = list(zip(*spikes)) if spikes else [[]] * 8
    sequences = columns[5]
    return pa.table(
        {
            "seq_id": pa.array(columns[0], pa.string()),
            "class": pa.array(columns[1], pa.string()),
            "label": pa.array(columns[2], pa.int16()),
            "lineage": pa.array(columns[3], pa.string()),
            "source": pa.array(columns[4], pa.string()),
            "sequence": pa.array(sequences, pa.string()),
            "length": pa.array([len(s) for s in sequences], pa.int32()),
            "n_fraction": pa.array(columns[6], pa.float32()),
            "qc": pa.array(["pass"] * len(sequences), pa.string()),
            "strand": pa.array(columns[7], pa.int8()),
        }
    )


def extract_spike(
    genomes: str | os.PathLike,
    manifest: str | os.PathLike,
    reference: str | os.PathLike,
    spike_out: str | os.PathLike,
    qc_out: str | os.PathLike,
    classes: list[str],
    qc: dict,
    threads: int = 1,
) -> None:
    """Rule extract_spike: spike.parquet (passing records) and qc.tsv (every record)."""
    spikes, qc_table = extract_dataset(genomes, manifest, reference, classes, qc, threads)
    meta = provenance({"classes": classes, "qc": qc}, reference=str(reference), stage="extract_spike")
    write_parquet(spikes, spike_out, meta=meta)
    write_tsv(qc_table, qc_out)
