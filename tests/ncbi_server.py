"""A local stand-in for NCBI Datasets v2 (127.0.0.1, a thread), speaking the endpoint contract the
client uses, with scripted faults. Test helper, not a test module.

- GET  /virus/taxon/2697049/dataset_report: paged JSON ({"reports": [{"accession"}], "total_count",
  "next_page_token"}), filtered by filter.pangolin_classification; the filters the client must send
  (returned_content=ACCESSIONS_ONLY, filter.complete_only, filter.host, page_size) are checked (400).
- POST /virus/genome/download {"accessions": [...]}: a zip with ncbi_dataset/data/genomic.fna,
  data_report.jsonl (camelCase releaseDate, as NCBI writes it), README.md, dataset_catalog.json.

Faults, consumed in order per endpoint ("report" / "download"); "ok" means no fault:
"429" (Retry-After: retry_after), "500", "drop" (connection closed without a response),
"stall" (no answer for stall_s), "truncate" (a zip cut in half, with a matching Content-Length).
"""

from __future__ import annotations

import base64
import io
import json
import threading
import time
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

REPORT_PATH = "/virus/taxon/2697049/dataset_report"
DOWNLOAD_PATH = "/virus/genome/download"


class FakeNcbi:
    def __init__(self, lineages: dict, faults: dict | None = None, retry_after: str = "1", stall_s: float = 1.0):
        """lineages: {lineage: [(accession, sequence, release_date), ...]}."""
        self.lineages = lineages
        self.genomes = {acc: (seq, date) for rows in lineages.values() for acc, seq, date in rows}
        self.faults = {kind: list(items) for kind, items in (faults or {}).items()}
        self.retry_after = retry_after
        self.stall_s = stall_s
        self.log: list[dict] = []  # one entry per request, in arrival order
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> "FakeNcbi":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def next_fault(self, kind: str) -> str:
        with self._lock:
            queue = self.faults.get(kind) or []
            return queue.pop(0) if queue else "ok"

    def record(self, **entry) -> dict:
        with self._lock:
            self.log.append(entry)
        return entry

    def requests(self, kind: str | None = None) -> list[dict]:
        return [e for e in self.log if kind is None or e["kind"] == kind]

    def report_page(self, query: dict) -> tuple[int, dict]:
        required = {"returned_content": "ACCESSIONS_ONLY"}
        for key, value in required.items():
            if query.get(key) != value:
                return 400, {"error": f"expected {key}={value}"}
        for key in ("filter.pangolin_classification", "filter.complete_only", "filter.host", "page_size"):
            if key not in query:
                return 400, {"error": f"missing {key}"}
        rows = self.lineages.get(query["filter.pangolin_classification"], [])
        size = int(query["page_size"])
        offset = int(base64.b64decode(query["page_token"]).decode().split(":")[1]) if query.get("page_token") else 0
        if not rows:
            return 200, {}
        page = {"reports": [{"accession": acc} for acc, _, _ in rows[offset : offset + size]], "total_count": len(rows)}
        if offset + size < len(rows):
            page["next_page_token"] = base64.b64encode(f"offset:{offset + size}".encode()).decode()
        return 200, page

    def genome_zip(self, accessions: list[str]) -> bytes:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            fna, reports = [], []
            for acc in accessions:
                if acc in self.genomes:
                    seq, date = self.genomes[acc]
                    wrapped = "\n".join(seq[i : i + 70] for i in range(0, len(seq), 70))
                    fna.append(
                        f">{acc} Severe acute respiratory syndrome coronavirus 2 isolate X, complete genome\n{wrapped}\n"
                    )
                    reports.append(
                        json.dumps({"accession": acc, "releaseDate": f"{date}T00:00:00Z", "isComplete": True})
                    )
            archive.writestr("README.md", "NCBI Datasets (test double)\n")
            archive.writestr("ncbi_dataset/data/genomic.fna", "".join(fna))
            archive.writestr("ncbi_dataset/data/data_report.jsonl", "\n".join(reports) + "\n")
            archive.writestr("ncbi_dataset/data/dataset_catalog.json", json.dumps({"files": ["genomic.fna"]}))
        return buffer.getvalue()


def _handler(fake: FakeNcbi):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # quiet
            pass

        def _send(self, status: int, body: bytes, content_type: str, headers: dict | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body)

        def _fault(self, entry: dict) -> bool:
            """Apply the entry's fault; True if the request has been answered (or dropped)."""
            fault = entry["fault"]
            if fault == "429":
                self._send(
                    429, b'{"error": "too many requests"}', "application/json", {"Retry-After": fake.retry_after}
                )
            elif fault == "500":
                self._send(500, b'{"error": "internal"}', "application/json")
            elif fault == "drop":
                self.close_connection = True
            elif fault == "stall":
                time.sleep(fake.stall_s)
                self.close_connection = True
            return fault in ("429", "500", "drop", "stall")

        def do_GET(self) -> None:
            url = urlparse(self.path)
            query = {k: v[-1] for k, v in parse_qs(url.query).items()}
            entry = fake.record(
                kind="report",
                time=time.monotonic(),
                method="GET",
                path=url.path,
                query=query,
                api_key=self.headers.get("api-key"),
                fault=fake.next_fault("report"),
            )
            if url.path != REPORT_PATH:
                return self._send(404, b'{"error": "not found"}', "application/json")
            if self._fault(entry):
                return
            status, page = fake.report_page(query)
            self._send(status, json.dumps(page).encode(), "application/json")

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            url = urlparse(self.path)
            entry = fake.record(
                kind="download",
                time=time.monotonic(),
                method="POST",
                path=url.path,
                api_key=self.headers.get("api-key"),
                fault=fake.next_fault("download"),
            )
            if url.path != DOWNLOAD_PATH:
                return self._send(404, b'{"error": "not found"}', "application/json")
            accessions = json.loads(body)["accessions"]
            entry["accessions"] = accessions
            if self._fault(entry):
                return
            content = fake.genome_zip(accessions)
            if entry["fault"] == "truncate":
                content = content[: len(content) // 2]
            self._send(200, content, "application/zip")

    return Handler
