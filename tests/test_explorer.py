"""The explorer's table -> figure functions on small hand-made tables (bertgeom.explorer)."""

import base64
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from bertgeom.explorer import (FLOOR, LEVELS, cone_figure, cone_stream, dequantise, describe_keys,
                               head_grid_figure, head_values, k90_histogram, lineage_mutations, missing_reason,
                               model_view_figure, pool_matrix, quantise, residual_codes, restore_codes, token_axis,
                               top_keys)  # fmt: skip
from bertgeom.explorer_page import encode_codes
from bertgeom.figures.attention import GATE_COLOURS
from bertgeom.explorer_paths import cone_path, results_root, stage_paths
from bertgeom.stats.attention import GATES


def _gates():
    rows = [{"layer": layer, "head": head, "gate": gate, **{f"score_{g}": 0.1 * layer + 0.01 * head for g in GATES}}
            for layer, head, gate in [(0, 0, "open"), (0, 1, "directional"), (1, 0, "none"), (1, 1, "closed")]]
    return pd.DataFrame(rows)


def _patterns():
    rows = []
    for layer in (0, 1):
        for head in (0, 1):
            rows += [{"layer": layer, "head": head, "source": "all", "measure": "k90", "value": 10.0 * layer + head},
                     {"layer": layer, "head": head, "source": "subset", "measure": "k90", "value": -1.0},
                     {"layer": layer, "head": head, "source": "all", "measure": "entropy", "value": 0.5 + 0.1 * head}]
    return pd.DataFrame(rows)


def _directionality():
    return pd.DataFrame([{"layer": 0, "head": 0, "variant": "ours", "measure": "directionality_index", "value": 0.3},
                         {"layer": 0, "head": 0, "variant": "original_code", "measure": "directionality_index",
                          "value": 9.0}])  # fmt: skip


def test_head_values_take_source_all_and_our_directionality():
    values = head_values(_gates(), _patterns(), _directionality()).set_index(["layer", "head"])
    assert values.loc[(1, 1), "gate"] == "closed"
    assert values.loc[(1, 1), "k90"] == 11.0  # source all, not subset
    assert values.loc[(0, 1), "entropy"] == pytest.approx(0.6)
    assert values.loc[(0, 0), "directionality"] == 0.3  # variant ours
    assert np.isnan(values.loc[(1, 0), "directionality"])  # absent: NaN, not 0


def test_head_grid_colours_gates_and_shows_values():
    values = head_values(_gates(), _patterns(), _directionality())
    gates = head_grid_figure(values, "gate", "t").data[0]
    assert [list(row) for row in gates.text] == [["open", "directional"], ["none", "closed"]]
    assert list(gates.y) == [0, 1] and list(gates.x) == [0, 1]
    order = list(GATE_COLOURS)  # the colour scale's order: code i is the i-th colour
    assert [list(row) for row in gates.z] == [[order.index("open"), order.index("directional")],
                                              [order.index("none"), order.index("closed")]]
    k90 = head_grid_figure(values, "k90", "t").data[0]
    assert [list(row) for row in k90.z] == [[0.0, 1.0], [10.0, 11.0]]
    directionality = head_grid_figure(values, "directionality", "t").data[0]
    assert directionality.text[1][0] == "NaN"


def test_quantise_round_trip_within_half_a_step():
    weights = np.array([[1.0, 0.5, 1e-2], [2e-3, 1e-4, 3e-7]])
    for levels in LEVELS:
        codes = quantise(weights, levels)
        assert codes.dtype == np.uint8 and codes.max() == levels - 1 and codes.min() == 0
        back = dequantise(codes, levels)
        step = 10 ** (-np.log10(FLOOR) / (levels - 1))  # ratio between neighbouring levels
        kept = weights >= FLOOR
        assert np.all(np.abs(np.log(back[kept] / weights[kept])) <= np.log(step) / 2 + 1e-12)
        assert back[1, 2] == pytest.approx(FLOOR)  # below the floor: the floor


def test_encoded_codes_are_zlib_of_the_codes():
    codes = quantise(np.random.default_rng(0).dirichlet(np.ones(7), size=7), 32)
    raw = zlib.decompress(base64.b64decode(encode_codes(codes)))
    assert np.array_equal(np.frombuffer(raw, dtype=np.uint8).reshape(7, 7), codes)


@pytest.mark.parametrize("n, m", [(6, 6), (6, 4), (4, 6)])
def test_residual_codes_round_trip_against_a_base_of_any_size(n, m):
    rng = np.random.default_rng(n * 10 + m)
    levels = 16
    codes, base = rng.integers(0, levels, (n, n), dtype=np.uint8), rng.integers(0, levels, (m, m), dtype=np.uint8)
    stored = residual_codes(codes, base, levels)
    assert stored.dtype == np.uint8 and stored.max() < levels
    assert np.array_equal(restore_codes(stored, base, levels), codes)
    k = min(n, m)
    assert np.array_equal(stored[k:], codes[k:]) and np.array_equal(stored[:, k:], codes[:, k:])  # outside: as is
    assert not residual_codes(codes, codes[:k, :k], levels)[:k, :k].any()  # equal cells: 0


def test_pool_matrix_block_means():
    matrix = np.arange(25, dtype=float).reshape(5, 5)
    pooled = pool_matrix(matrix, 2)
    assert pooled.shape == (3, 3)
    assert pooled[0, 0] == np.mean([0, 1, 5, 6])
    assert pooled[2, 2] == 24.0  # the last, partial block: what is left
    assert pooled[0, 2] == np.mean([4, 9])
    assert pool_matrix(matrix, 1) is matrix


def test_top_keys_skip_special_tokens():
    matrix = np.full((5, 5), 0.05)
    matrix[:, 0] = 0.6  # [CLS] takes most, but is not a key of the sequence
    matrix[:, 3] = 0.2
    matrix /= matrix.sum(axis=1, keepdims=True)
    keys = top_keys(matrix, 2)
    assert [p for p, _ in keys] == [3, 1]
    assert keys[0][1] == pytest.approx(matrix[:, 3].sum() / 5)


def _token_map():
    return pd.DataFrame({"position": [0, 1, 2, 3, 4, 5], "token_kind": ["cls", "kmer", "kmer", "kmer", "sep", "pad"],
                         "aa_start": [None, 1, 4, 7, None, None], "aa_end": [None, 4, 7, 10, None, None],
                         "domains": [[], ["SP", "S1"], ["NTD", "S1"], ["NTD", "S1"], [], []]})  # fmt: skip


def test_token_axis_labels_and_domain_bands():
    axis = token_axis(_token_map(), 5)
    assert axis.labels == ["#0 [CLS]", "#1 aa 1-4 S1/SP", "#2 aa 4-7 NTD/S1", "#3 aa 7-10 NTD/S1", "#4 [SEP]"]
    assert axis.bands == [("SP", 1, 1), ("NTD", 2, 3)]  # subunits (S1) are not drawn as bands
    pooled = token_axis(_token_map(), 5, factor=2)
    assert pooled.labels == ["#0-1 [CLS] aa 1-4 S1/SP", "#2-3 aa 4-10 NTD/S1", "#4 [SEP]"]
    assert pooled.bands == [("SP", 0, 0), ("NTD", 1, 1)]


def test_top_keys_mapped_to_amino_acids_and_lineage_mutations(tmp_path):
    variants = tmp_path / "variants.yaml"
    profiles = [{"lineage": "X.1", "spike_aa_changes": ["P5L", "ins8AB"]}, {"lineage": "X.2", "spike_aa_changes": ["P5L"]}]
    variants.write_text(yaml.safe_dump({"label_order": ["X"], "spike": {}, "classes": [{"name": "X", "profiles": profiles}]}))
    assert lineage_mutations(variants, "X") == {"P5L": 2, "ins8AB": 1}
    assert lineage_mutations(variants, "X", "X.2") == {"P5L": 1}
    rows = describe_keys([(2, 0.5), (3, 0.25), (0, 0.1)], _token_map(), lineage_mutations(variants, "X"), 2)
    assert rows[0] == {"position": 2, "share": 0.5, "aa": "4-7", "domains": "NTD/S1", "mutations": "P5L (2/2)"}
    assert rows[1]["mutations"] == "ins8AB (1/2)"
    assert rows[2]["aa"] == "" and rows[2]["mutations"] == ""  # [CLS]: no amino acid


def test_k90_histogram_counts_every_row():
    k90 = pd.DataFrame({"layer": [0, 0, 0, 1], "head": [0, 0, 0, 1], "k90": [1, 2, 50, 7]})
    hist = k90_histogram(k90, 50)
    assert set(hist) == {(0, 0), (1, 1)}
    centres, counts = hist[(0, 0)]
    assert counts.sum() == 3 and len(centres) == len(counts)
    assert counts[-1] == 1  # K90 = length falls in the last bin


def _cone(checkpoint_offset):
    rows = []
    for layer in (0, 1):
        for stage in ("input", "output"):
            for scope, variant, measure in [("sequence", "ours", "cone_normalised"), ("pooled", "ours", "cone_normalised"),
                                            ("sequence", "reference", "cone_index")]:  # fmt: skip
                mean = 0.1 * layer + (0.05 if stage == "output" else 0) + checkpoint_offset
                rows.append({"split": "test", "scope": scope, "class": "all", "layer": layer, "stage": stage, "head": -1,
                             "variant": variant, "measure": measure, "mean": mean, "ci_low": mean - 0.01,
                             "ci_high": mean + 0.01, "n_seeds": 3})  # fmt: skip
    return pd.DataFrame(rows)


def test_cone_stream_one_line_per_checkpoint_with_seed_band():
    stream = cone_stream(_cone(0.0))
    assert list(stream["where"]) == ["0.input", "0.output", "1.input", "1.output"]
    assert list(stream["mean"]) == pytest.approx([0.0, 0.05, 0.1, 0.15])
    fig = cone_figure({"init": cone_stream(_cone(0.5)), "finetuned": stream}, {"mlm": "No data for checkpoint mlm"})
    lines = [t for t in fig.data if t.mode == "lines+markers"]
    assert [t.name for t in lines] == ["init", "finetuned"]
    bands = [t for t in fig.data if t.fill == "toself"]
    assert len(bands) == 2 and max(bands[1].y) == pytest.approx(0.16)
    assert "No data for checkpoint mlm" in fig.layout.title.text


def test_model_view_one_thumbnail_per_head():
    fig = model_view_figure([np.eye(3), None, np.full((3, 3), 1 / 3)], "layer 0")
    assert len(fig.data) == 3 and fig.data[1].z is None
    assert np.asarray(fig.data[0].z)[0, 1] == pytest.approx(np.log10(FLOOR))


def test_stage_paths_layout_and_missing_tables(tmp_path):
    finetuned = stage_paths(tmp_path, 0, "finetuned")
    assert finetuned["gates"] == tmp_path / "stats" / "seed0" / "finetuned" / "gates.parquet"
    assert stage_paths(tmp_path, 0, "init")["class_attention"] == tmp_path / "activations/seed0/init/class_attention.parquet"
    assert cone_path(tmp_path, "mlm") == tmp_path / "stats/all_seeds/mlm/cone_index.parquet"
    reason = missing_reason(list(finetuned.values()), "finetuned", 0)
    assert "checkpoint finetuned, seed 0" in reason and "6 table(s) missing" in reason
    for path in finetuned.values():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    assert missing_reason(list(finetuned.values()), "finetuned", 0) is None
    assert results_root(tmp_path / "tokens" / "token_map.parquet") == tmp_path
    with pytest.raises(ValueError, match="expected <results>/tokens/token_map.parquet"):
        results_root(Path("results/token_map.parquet"))


def test_read_sources_class_averages_and_first_sequences_per_class(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from bertgeom.explorer import read_sources

    eye = np.eye(3, dtype=np.float32).ravel().tolist()
    pq.write_table(pa.Table.from_pylist([
        {"label": 0, "class": "A", "layer": 0, "head": 0, "n_seqs": 3, "length": 3, "matrix": eye},
        {"label": 1, "class": "B", "layer": 0, "head": 0, "n_seqs": 0, "length": 0, "matrix": []},
    ]), tmp_path / "class_attention.parquet")  # fmt: skip
    rows = [{"seq_id": seq_id, "label": 0, "pred": pred, "layer": 0, "head": 0, "n": 3, "matrix": eye}
            for seq_id, pred in [("s3", 0), ("s1", 1), ("s2", 0)]]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "attention.parquet")
    paths = {"class_attention": tmp_path / "class_attention.parquet", "attention": tmp_path / "attention.parquet"}
    sources = read_sources(paths, {"s1": "A.1"}, full_sequences=2)
    assert [s.id for s in sources] == ["class:0", "seq:s1", "seq:s2"]  # class B has no sequence; s3 is the third
    assert sources[1].name == "sequence s1 (A, predicted B)" and sources[1].lineage == "A.1"
    assert np.array_equal(sources[2].matrices[(0, 0)], np.eye(3))
    light = read_sources(paths, {}, full_sequences=2, with_matrices=False)
    assert [s.id for s in light] == [s.id for s in sources] and light[0].matrices == {(0, 0): None}
