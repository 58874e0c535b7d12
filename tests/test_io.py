"""bertgeom.io: atomic writes, Parquet metadata block, fixed-size lists."""

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
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


def write_tokens(path, n_tokens, labels, width=6, ids_type=None):
    ids = np.zeros((len(labels), width), dtype=np.int32)
    column = io.fixed_size_list(ids, pa.int32()) if ids_type is None else pa.array(ids.tolist(), ids_type)
    table = pa.table({"seq_id": [f"s{i}" for i in range(len(labels))], "label": pa.array(labels, pa.int16()),
                      "input_ids": column, "n_tokens": pa.array(n_tokens, pa.int32())})  # fmt: skip
    io.write_parquet(table, path)
    return path


def test_read_tokens_validates_and_names_the_record(tmp_path):
    """The one tokens-file validator of training and the dump: each bad input names file and record."""
    good = write_tokens(tmp_path / "good.parquet", [2, 6, 4], [0, 1, 0])
    table, width = io.read_tokens(good, 2)
    assert width == 6 and table.column_names == ["seq_id", "label", "n_tokens"]
    assert io.read_tokens(good, 2, columns=io.TOKEN_COLUMNS)[0].column_names == list(io.TOKEN_COLUMNS)
    cases = {
        "n_tokens": (write_tokens(tmp_path / "n.parquet", [2, 7, 4], [0, 1, 0]), {}, r"n\.parquet: record s1: n_tokens=7, expected 2\.\.6"),
        "short": (write_tokens(tmp_path / "short.parquet", [1], [0]), {}, r"record s0: n_tokens=1"),
        "label": (write_tokens(tmp_path / "l.parquet", [3, 3], [0, 2]), {}, r"l\.parquet: record s1: label 2: labels must lie in 0\.\.1"),
        "positions": (good, {"max_positions": 5}, r"max_length 6 exceeds the model's max_position_embeddings 5"),
        "list": (write_tokens(tmp_path / "v.parquet", [3], [0], ids_type=pa.list_(pa.int32())), {}, r"input_ids must be fixed_size_list"),
    }  # fmt: skip
    for name, (path, kwargs, message) in cases.items():
        with pytest.raises(ValueError, match=message):
            io.read_tokens(path, 2, **kwargs)
    assert io.read_tokens(tmp_path / "l.parquet", None)[0].num_rows == 2  # no classes: labels unchecked
    io.write_parquet(pa.table({"seq_id": ["a"], "label": pa.array([0], pa.int16())}), tmp_path / "cols.parquet")
    with pytest.raises(ValueError, match=r"missing column\(s\) \['input_ids', 'n_tokens'\]"):
        io.read_tokens(tmp_path / "cols.parquet", 2)
    with pytest.raises(FileNotFoundError, match="tokens file not found"):
        io.read_tokens(tmp_path / "none.parquet", 2)


def test_table_helpers(tmp_path):
    path = tmp_path / "t.parquet"
    io.write_parquet(pa.table({"x": np.arange(10), "y": np.arange(10) % 3}), path)
    batches = list(io.iter_batches(path, ["x", "y"], 4, filter=pc.field("y") == 0))
    assert [b.column("x").to_pylist() for b in batches] == [[0, 3], [6], [9]]
    with pytest.raises(ValueError, match=r"t\.parquet: missing column\(s\) \['z'\]"):
        io.require_columns(path, ["x", "z"])
    assert io.class_name(1, ["A", "B"], path) == "B"
    with pytest.raises(ValueError, match=r"t\.parquet: label 2 outside config classes \(0\.\.1\)"):
        io.class_name(2, ["A", "B"], path)
