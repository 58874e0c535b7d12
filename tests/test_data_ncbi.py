"""The NCBI Datasets client against a local server that speaks the contract and misbehaves."""

import logging
import random
import socket
import zipfile

import numpy as np
import pytest

from bertgeom.data.download import read_manifest, write_genomes
from bertgeom.data.fasta import read_fasta
from bertgeom.data.ncbi import NcbiClient, NcbiUnreachable, ncbi_genomes, sample_accessions

from ncbi_server import FakeNcbi

SETTINGS = {
    "max_per_class": 10,
    "batch_size": 4,
    "page_size": 3,
    "complete_only": True,
    "host_taxon": "9606",
    "max_pages": None,
}
CLASSES = ["A", "B"]
CLASS_DEFS = [{"name": "A", "pango_lineages": ["L.1", "L.2"]}, {"name": "B", "pango_lineages": ["M.1", "M.9"]}]


def _lineages():
    rng = random.Random(7)
    genome = lambda: "".join(rng.choice("ACGT") for _ in range(600))  # noqa: E731
    return {
        "L.1": [(f"OL{100 + i}.1", genome(), f"2021-03-{i + 1:02d}") for i in range(7)],
        "L.2": [(f"OL{200 + i}.1", genome(), f"2021-04-{i + 1:02d}") for i in range(5)],
        "M.1": [(f"OM{300 + i}.2", genome(), f"2022-01-{i + 1:02d}") for i in range(4)],
        # M.9 is unknown to the server: an empty report, as NCBI answers.
    }


def _fetch(server, tmp_path, client, cache="cache"):
    records = ncbi_genomes(CLASSES, CLASS_DEFS, SETTINGS, seed=3, cache_dir=tmp_path / cache, client=client)
    return write_genomes(records, tmp_path / "genomes.fasta", tmp_path / "manifest.tsv")


def _fast_client(url, **kwargs):
    options = dict(api_key="", rate=40.0, timeout=0.5, max_retries=5, backoff_base=0.01, backoff_max=0.05)
    return NcbiClient(url, **{**options, **kwargs})


def _assert_rate(entries, rate, jitter=0.015):
    """Arrival times consistent with request starts at least 1/rate apart: for every pair i < j,
    t_j - t_i >= (j - i) / rate - jitter (jitter: the server's own delay in noting an arrival)."""
    times = np.array([e["time"] for e in entries])
    steps = np.arange(len(times))
    slack = (times[None, :] - times[:, None]) - (steps[None, :] - steps[:, None]) / rate
    upper = np.triu(np.ones_like(slack, dtype=bool), k=1)
    assert slack[upper].min() >= -jitter, f"requests closer than {1 / rate:.3f} s apart: {np.diff(times)}"


def test_download_survives_faults_and_keeps_everything(tmp_path, monkeypatch):
    monkeypatch.delenv("NCBI_API_KEY", raising=False)
    lineages = _lineages()
    faults = {"report": ["429", "ok", "500", "drop"], "download": ["drop", "truncate", "stall", "500"]}
    with FakeNcbi(lineages, faults, retry_after="1", stall_s=1.0) as server:
        manifest = _fetch(server, tmp_path, _fast_client(server.url))
    # Every fault was served, and the client went on.
    served = [e["fault"] for e in server.log if e["fault"] != "ok"]
    assert sorted(served) == sorted(f for f in faults["report"] + faults["download"] if f != "ok")
    # Retry-After honoured: the request after the 429 came at least 1 s later.
    reports = server.requests("report")
    assert reports[0]["fault"] == "429" and reports[1]["time"] - reports[0]["time"] >= 0.99
    # The rate limit held over every request (40/s: starts 25 ms apart).
    _assert_rate(server.log, 40.0)

    # All sampled genomes arrived, once, intact, with their metadata.
    class_a = sample_accessions([a for lin in ("L.1", "L.2") for a, _, _ in lineages[lin]], 10, seed=3, label=0)
    class_b = [a for a, _, _ in lineages["M.1"]]
    assert len(class_a) == 10
    records = dict(read_fasta(tmp_path / "genomes.fasta"))  # read_fasta raises on duplicate ids
    assert list(records) == class_a + class_b
    truth = {a: (s, d, lin) for lin, rows in lineages.items() for a, s, d in rows}
    for accession, sequence in records.items():
        assert sequence == truth[accession][0]
    table = read_manifest(tmp_path / "manifest.tsv")
    assert list(table["seq_id"]) == class_a + class_b
    assert list(table["class"]) == ["A"] * 10 + ["B"] * 4
    assert all(table["lineage"] == [truth[a][2] for a in table["seq_id"]])
    assert all(table["release_date"] == [truth[a][1] for a in table["seq_id"]])
    assert set(table["source"]) == {"ncbi"} and set(table["synthetic"]) == {"false"}
    assert len(manifest) == 14

    # No partial or temporary files: only the accession lists and complete, valid batch zips.
    cache_files = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert [n for n in cache_files if n.startswith(".")] == []
    assert {n.split("-")[0] for n in cache_files} == {"accessions", "batch"}
    zips = [p for p in (tmp_path / "cache").glob("batch-*.zip")]
    assert len(zips) == 3 + 1  # class A: 10 accessions in batches of 4; class B: 4
    for path in zips:
        with zipfile.ZipFile(path) as archive:
            assert archive.testzip() is None
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_rerun_resumes_from_cached_batches(tmp_path, monkeypatch):
    monkeypatch.delenv("NCBI_API_KEY", raising=False)
    lineages = _lineages()
    with FakeNcbi(lineages) as server:
        _fetch(server, tmp_path, _fast_client(server.url))
    first = (tmp_path / "genomes.fasta").read_text()
    lost = sorted((tmp_path / "cache").glob("batch-A-*.zip"))[1]
    lost.unlink()  # as if the job had been killed before this batch
    with FakeNcbi(lineages) as server:
        _fetch(server, tmp_path, _fast_client(server.url))
    assert server.requests("report") == []  # accession lists reused
    assert len(server.requests("download")) == 1  # only the missing batch
    assert lost.exists()
    assert (tmp_path / "genomes.fasta").read_text() == first


@pytest.mark.parametrize("key, rate", [(None, 5.0), ("s3cr3t-test-key", 10.0)])
def test_real_rate_limit_and_api_key(tmp_path, monkeypatch, caplog, key, rate):
    if key:
        monkeypatch.setenv("NCBI_API_KEY", key)
    else:
        monkeypatch.delenv("NCBI_API_KEY", raising=False)
    lineage = {"L.1": [(f"OL{i}.1", "ACGT" * 10, "2021-01-01") for i in range(4)]}
    caplog.set_level(logging.DEBUG)
    with FakeNcbi(lineage) as server:
        client = NcbiClient(server.url)  # the production defaults
        accessions, total = client.lineage_accessions("L.1", page_size=1)
    assert client.rate == rate
    assert accessions == [f"OL{i}.1" for i in range(4)] and total == 4
    assert len(server.log) == 4
    _assert_rate(server.log, rate)
    assert {e["api_key"] for e in server.log} == {key}
    if key:
        assert key not in caplog.text and key not in repr(client)


def test_unreachable_network_says_what_to_do(tmp_path):
    with socket.socket() as sock:  # a port with nobody listening
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = _fast_client(f"http://127.0.0.1:{port}")
    with pytest.raises(NcbiUnreachable, match="data.source: synthetic.*data.source: fasta"):
        list(ncbi_genomes(CLASSES, CLASS_DEFS, SETTINGS, seed=0, cache_dir=tmp_path, client=client))
    assert client.requests_sent == 3  # two quick retries, then the error


def test_gives_up_after_max_retries(tmp_path):
    with FakeNcbi(_lineages(), {"report": ["500"] * 10}) as server:
        client = _fast_client(server.url, max_retries=2)
        with pytest.raises(RuntimeError, match="gave up after 3 attempts.*HTTP 500"):
            client.lineage_accessions("L.1")
    assert len(server.log) == 3


def test_class_without_genomes_is_an_error(tmp_path):
    with FakeNcbi(_lineages()) as server:
        defs = [{"name": "A", "pango_lineages": ["L.1"]}, {"name": "B", "pango_lineages": ["M.9"]}]
        with pytest.raises(ValueError, match="class 'B': NCBI has no genomes for its Pango lineages"):
            list(ncbi_genomes(CLASSES, defs, SETTINGS, seed=0, cache_dir=tmp_path, client=_fast_client(server.url)))


def test_sampling_is_seeded_and_without_replacement():
    pool = [f"X{i}" for i in range(50)]
    first = sample_accessions(pool, 20, seed=1, label=2)
    assert first == sample_accessions(list(reversed(pool)), 20, seed=1, label=2)
    assert len(set(first)) == 20 and set(first) <= set(pool)
    assert first != sample_accessions(pool, 20, seed=2, label=2)
    assert sample_accessions(pool[:5], 20, seed=1, label=2) == sorted(pool[:5])
