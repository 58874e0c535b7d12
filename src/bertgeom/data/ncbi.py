"""NCBI Datasets v2 REST client for SARS-CoV-2 genomes, and the `ncbi` data source built on it.

Endpoints (https://api.ncbi.nlm.nih.gov/datasets/v2):
- GET  /virus/taxon/2697049/dataset_report?filter.pangolin_classification=L&filter.complete_only=true
       &filter.host=9606&returned_content=ACCESSIONS_ONLY&page_size=1000[&page_token=T]
       -> {"reports": [{"accession": ...}, ...], "next_page_token": ..., "total_count": ...}
- POST /virus/genome/download  {"accessions": [...], "include_sequence": ["GENOME"]}
       -> a zip with ncbi_dataset/data/genomic.fna (and data_report.jsonl with release dates).

Politeness and robustness: at most 5 requests/s (10 with an API key, read from the environment
variable NCBI_API_KEY and sent as the `api-key` header; it is never logged); 429, 5xx, timeouts,
dropped connections and corrupt zips are retried with exponential backoff, honouring Retry-After.
Downloaded batches are cached as validated zips (written atomically, with a sha256 sidecar), so a
rerun resumes where an interrupted one stopped; a cached zip or accession list that fails its
checksum is logged, discarded and fetched again (bertgeom.resumable).
"""

from __future__ import annotations

import email.utils
import hashlib
import io
import json
import logging
import os
import random
import time
import zipfile
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import requests
from urllib3.exceptions import NewConnectionError

from bertgeom import resumable
from bertgeom.data.fasta import parse_fasta
from bertgeom.io import sweep_temporaries

log = logging.getLogger("bertgeom.data.ncbi")

BASE_URL = "https://api.ncbi.nlm.nih.gov/datasets/v2"
TAXON = "2697049"  # SARS-CoV-2
GENOMIC_FNA = "ncbi_dataset/data/genomic.fna"
DATA_REPORT = "ncbi_dataset/data/data_report.jsonl"
UNREACHABLE_HINT = (
    "check the network connection, or run offline with data.source: synthetic (demo genomes) "
    "or data.source: fasta (your own FASTA files, per class in data.fasta)"
)


class NcbiUnreachable(RuntimeError):
    """NCBI Datasets cannot be reached at all (no network, DNS failure, connection refused)."""


class _BadPayload(Exception):
    """A 200 response whose body is unusable (truncated zip, invalid JSON): worth retrying."""


class RateLimiter:
    """At most `rate` request starts per second: each start waits until 1/rate after the previous."""

    def __init__(self, rate: float):
        self.interval = 1.0 / rate
        self._next = 0.0

    def wait(self) -> None:
        now = time.monotonic()
        start = max(now, self._next)
        if start > now:
            time.sleep(start - now)
        self._next = start + self.interval


class NcbiClient:
    """A small NCBI Datasets v2 client: paged accession reports and zip genome downloads.

    `rate` defaults to 5 requests/s, or 10 when an API key is given (argument or NCBI_API_KEY).
    The backoff before retry k (0-based) is min(backoff_max, backoff_base * 2**k) times a random
    factor in [0.5, 1], or the server's Retry-After if that is longer.
    """

    def __init__(
        self,
        base_url: str = BASE_URL,
        api_key: str | None = None,
        rate: float | None = None,
        timeout: float = 120.0,
        max_retries: int = 8,
        backoff_base: float = 1.0,
        backoff_max: float = 60.0,
        session: requests.Session | None = None,
    ):
        self.base_url = base_url.rstrip("/")
        key = os.environ.get("NCBI_API_KEY") if api_key is None else api_key
        self._headers = {"api-key": key} if key else {}
        self.rate = rate or (10.0 if key else 5.0)
        self.limiter = RateLimiter(self.rate)
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.session = session or requests.Session()
        self.requests_sent = 0
        self._contacted = False  # has any response ever arrived?

    def __repr__(self) -> str:  # never shows the key
        return f"NcbiClient({self.base_url!r}, rate={self.rate}, api_key={'set' if self._headers else 'unset'})"

    def _backoff(self, attempt: int) -> float:
        return min(self.backoff_max, self.backoff_base * 2**attempt) * random.uniform(0.5, 1.0)

    def _call(self, method: str, path: str, parse: Callable[[requests.Response], Any], **kwargs: Any) -> Any:
        """One API call with rate limiting and retries; `parse` turns a 200 response into the result."""
        url = f"{self.base_url}{path}"
        problem = "no attempt"
        for attempt in range(self.max_retries + 1):
            self.limiter.wait()
            self.requests_sent += 1
            delay = self._backoff(attempt)
            try:
                response = self.session.request(method, url, headers=self._headers, timeout=self.timeout, **kwargs)
            except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as exc:
                problem = f"{type(exc).__name__}: {exc}"
                if not self._contacted and _is_unreachable(exc) and attempt >= min(2, self.max_retries):
                    raise NcbiUnreachable(
                        f"cannot reach NCBI Datasets at {self.base_url} ({problem}); {UNREACHABLE_HINT}"
                    ) from exc
            else:
                self._contacted = True
                if response.status_code == 429 or response.status_code >= 500:
                    problem = f"HTTP {response.status_code}"
                    delay = max(delay, _retry_after(response))
                elif response.status_code >= 400:
                    raise RuntimeError(
                        f"NCBI Datasets {method} {path}: HTTP {response.status_code}: {response.text[:300]}"
                    )
                else:
                    try:
                        return parse(response)
                    except _BadPayload as exc:
                        problem = f"unusable response: {exc}"
            if attempt < self.max_retries:
                log.warning(
                    "%s %s: %s; retry %d/%d in %.2f s", method, path, problem, attempt + 1, self.max_retries, delay
                )
                time.sleep(delay)
        raise RuntimeError(
            f"NCBI Datasets {method} {path}: gave up after {self.max_retries + 1} attempts (last: {problem})"
        )

    def lineage_accessions(
        self,
        lineage: str,
        page_size: int = 1000,
        complete_only: bool = True,
        host: str = "9606",
        max_pages: int | None = None,
    ) -> tuple[list[str], int]:
        """Accessions of one Pango lineage (first `max_pages` pages), and the total NCBI reports."""
        params = {
            "filter.pangolin_classification": lineage,
            "filter.complete_only": "true" if complete_only else "false",
            "filter.host": host,
            "returned_content": "ACCESSIONS_ONLY",
            "page_size": int(page_size),
        }
        accessions, total, pages = [], 0, 0
        while True:
            page = self._call("GET", f"/virus/taxon/{TAXON}/dataset_report", _parse_json, params=dict(params))
            accessions += [report["accession"] for report in page.get("reports", []) if report.get("accession")]
            total = int(page.get("total_count", 0) or 0)
            pages += 1
            token = page.get("next_page_token")
            if not token or (max_pages and pages >= max_pages):
                break
            params["page_token"] = token
        log.info("lineage %s: %d accessions read in %d page(s) of %d reports", lineage, len(accessions), pages, total)
        return accessions, total

    def download_batch(self, accessions: list[str], path: str | os.PathLike) -> None:
        """Download the genomes of `accessions` as a zip, check it, and write it atomically to `path`."""
        content = self._call(
            "POST",
            "/virus/genome/download",
            _check_zip,
            json={"accessions": list(accessions), "include_sequence": ["GENOME"]},
        )
        resumable.write_bytes(path, content)


def _is_unreachable(exc: Exception) -> bool:
    """True for errors that mean 'no route to the server' rather than 'the server misbehaved'."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, (NewConnectionError, ConnectionRefusedError)):
            return True
        nested = getattr(exc, "reason", None) or (
            exc.args[0] if exc.args and isinstance(exc.args[0], Exception) else None
        )
        exc = nested or exc.__cause__ or exc.__context__
    return False


def _retry_after(response: requests.Response) -> float:
    """Seconds asked for by a Retry-After header (delta-seconds or HTTP date); 0 if absent."""
    value = response.headers.get("Retry-After")
    if not value:
        return 0.0
    try:
        return max(0.0, float(value))
    except ValueError:
        when = email.utils.parsedate_to_datetime(value)
        return max(0.0, when.timestamp() - time.time()) if when else 0.0


def _parse_json(response: requests.Response) -> dict:
    try:
        return response.json()
    except ValueError as exc:
        raise _BadPayload(f"invalid JSON ({exc})") from exc


def _check_zip(response: requests.Response) -> bytes:
    content = response.content
    try:
        with zipfile.ZipFile(io.BytesIO(content)) as archive:
            bad = archive.testzip()
            if bad:
                raise _BadPayload(f"CRC error in {bad}")
            if GENOMIC_FNA not in archive.namelist():
                raise _BadPayload(f"zip without {GENOMIC_FNA}")
    except (zipfile.BadZipFile, EOFError) as exc:
        raise _BadPayload(f"corrupt or truncated zip of {len(content)} bytes ({exc})") from exc
    return content


def read_batch(path: str | os.PathLike) -> tuple[dict[str, str], dict[str, str]]:
    """Genomes {accession: sequence} and release dates {accession: YYYY-MM-DD} of a downloaded zip."""
    with zipfile.ZipFile(path) as archive:
        text = archive.read(GENOMIC_FNA).decode("ascii")
        genomes = dict(parse_fasta(text.splitlines(), f"{path}:{GENOMIC_FNA}"))
        dates = {}
        if DATA_REPORT in archive.namelist():
            for line in archive.read(DATA_REPORT).decode().splitlines():
                if line.strip():
                    report = json.loads(line)
                    date = report.get("releaseDate") or report.get("release_date") or ""
                    dates[report.get("accession", "")] = date[:10]
    return genomes, dates


def sample_accessions(accessions: list[str], max_count: int, seed: int, label: int) -> list[str]:
    """Up to `max_count` accessions, drawn without replacement with Generator(SeedSequence([seed, label])), sorted."""
    pool = sorted(set(accessions))
    if len(pool) <= max_count:
        return pool
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(label)]))
    return sorted(pool[i] for i in rng.choice(len(pool), size=max_count, replace=False))


def _class_accessions(client: NcbiClient, class_def: dict, settings: dict, cache_dir: Path) -> dict[str, str]:
    """{accession: Pango lineage} over the class's lineages, cached per class and query."""
    query = {
        "lineages": list(class_def.get("pango_lineages") or []),
        **{k: settings[k] for k in ("page_size", "complete_only", "host_taxon", "max_pages")},
    }
    cache = cache_dir / f"accessions-{class_def['name']}.json"
    cached = resumable.load_json(cache)
    if cached and cached.get("query") == query:
        log.info("class %s: accession lists reused from %s", class_def["name"], cache)
        return cached["accessions"]
    if not query["lineages"]:
        raise ValueError(f"variants file: class {class_def['name']!r} has no pango_lineages to query at NCBI")
    lineage_of: dict[str, str] = {}
    for lineage in query["lineages"]:
        found, _ = client.lineage_accessions(
            lineage, settings["page_size"], settings["complete_only"], settings["host_taxon"], settings["max_pages"]
        )
        for accession in found:
            lineage_of.setdefault(accession, lineage)
    resumable.write_json(cache, {"query": query, "accessions": lineage_of})
    return lineage_of


def ncbi_genomes(
    classes: list[str],
    class_defs: list[dict],
    settings: dict,
    seed: int,
    cache_dir: str | os.PathLike,
    client: NcbiClient | None = None,
) -> Iterator[tuple[str, str, dict]]:
    """Yield (accession, genome, manifest row without sha256) for every class, sampling `max_per_class` per class.

    settings = config data.ncbi (schema defaults filled). Intact batches already in `cache_dir` are
    reused; the temporaries of a killed download there are removed first.
    """
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    sweep_temporaries(directories=[cache_dir])
    client = client or NcbiClient(
        settings["base_url"], timeout=settings["timeout_s"], max_retries=settings["max_retries"]
    )
    log.info("NCBI Datasets client: %r", client)
    emitted: set[str] = set()
    for label, (name, class_def) in enumerate(zip(classes, class_defs)):
        lineage_of = _class_accessions(client, class_def, settings, cache_dir)
        if not lineage_of:
            raise ValueError(
                f"class {name!r}: NCBI has no genomes for its Pango lineages {class_def.get('pango_lineages')} "
                f"with the filters in config data.ncbi"
            )
        chosen = sample_accessions(list(lineage_of), int(settings["max_per_class"]), seed, label)
        size = int(settings["batch_size"])
        batches = [chosen[i : i + size] for i in range(0, len(chosen), size)]
        log.info(
            "class %s: %d of %d accessions sampled, %d batch(es)", name, len(chosen), len(lineage_of), len(batches)
        )
        for number, batch in enumerate(batches, start=1):
            digest = hashlib.sha256("\n".join(batch).encode()).hexdigest()[:16]
            path = cache_dir / f"batch-{name}-{digest}.zip"
            if resumable.intact(path):
                log.info("class %s batch %d/%d: cached (%s)", name, number, len(batches), path.name)
            else:
                log.info("class %s batch %d/%d: downloading %d genomes", name, number, len(batches), len(batch))
                client.download_batch(batch, path)
            genomes, dates = read_batch(path)
            missing = [acc for acc in batch if acc not in genomes]
            if missing:
                log.warning(
                    "class %s: NCBI returned no sequence for %d accession(s): %s", name, len(missing), missing[:20]
                )
            for accession in batch:
                if accession in genomes and accession not in emitted:
                    emitted.add(accession)
                    yield accession, genomes[accession], {
                        "seq_id": accession,
                        "class": name,
                        "lineage": lineage_of[accession],
                        "source": "ncbi",
                        "release_date": dates.get(accession, ""),
                        "origin": accession,
                        "synthetic": False,
                    }
