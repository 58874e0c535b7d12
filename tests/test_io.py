"""bertgeom.io: atomic writes, Parquet metadata block, fixed-size lists."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bertgeom import io


def test_fixed_size_list_round_trip():
    matrix = np.arange(12, dtype=np.float32).reshape(4, 3)
    column = io.fixed_size_list(matrix)
    assert column.type.list_size == 3
    np.testing.assert_array_equal(io.to_matrix(column), matrix)


def test_write_parquet_metadata_and_no_partial_file(tmp_path):
    path = tmp_path / "t.parquet"
    io.write_parquet(pa.table({"x": [1, 2]}), path, meta={"config_sha256": "abc"})
    assert io.read_metadata(path)["config_sha256"] == "abc"
    assert pq.read_metadata(path).row_group(0).column(0).compression == "ZSTD"
    with pytest.raises(RuntimeError):
        with io.atomic_path(path) as tmp:
            tmp.write_text("partial")
            raise RuntimeError("killed")
    assert pq.read_table(path).column("x").to_pylist() == [1, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.parquet"]


def test_parquet_stream_row_groups_and_abort(tmp_path):
    schema = pa.schema([("x", pa.int32())])
    path = tmp_path / "s.parquet"
    with io.ParquetStream(path, schema, meta={"k": 1}) as out:
        out.write({"x": [1, 2]})
        out.write({"x": [3]})
    assert pq.ParquetFile(path).num_row_groups == 2
    assert io.read_metadata(path) == {"k": 1}
    with pytest.raises(ValueError):
        with io.ParquetStream(tmp_path / "a.parquet", schema) as out:
            out.write({"x": [1]})
            raise ValueError("boom")
    assert not (tmp_path / "a.parquet").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.parquet"]


def test_config_hash_ignores_key_order():
    assert io.config_hash({"a": 1, "b": [1, 2]}) == io.config_hash({"b": [1, 2], "a": 1})
    assert io.config_hash({"a": 1}) != io.config_hash({"a": 2})


def test_atomic_outputs_follow_umask(tmp_path):
    path = tmp_path / "x.json"
    io.write_json(path, {"a": 1})
    assert path.stat().st_mode & 0o777 == 0o666 & ~io._UMASK
