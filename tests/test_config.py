"""bertgeom.config: schema defaults, and config values as canonical rule params."""

from types import SimpleNamespace

import pytest

from bertgeom.config import Settings, canonical, leaf_keys, load_config, load_schema, schema_node


def test_canonical_sorts_keys_and_types_numbers_by_the_schema():
    schema = load_schema()
    train = canonical({"lr": 1, "epochs": 2.0, "seeds": [2, 0]}, schema_node(schema, "train"))
    assert list(train) == ["epochs", "lr", "seeds"]  # sorted keys: their order in the file does not matter
    assert train == {"epochs": 2, "lr": 1.0, "seeds": [2, 0]}  # list order is meaning (kept)
    assert type(train["lr"]) is float and type(train["epochs"]) is int
    assert repr(canonical({"b": 1, "a": 2}, {})) == repr(canonical({"a": 2, "b": 1}, {}))


def test_settings_split_results_from_execution_keys():
    settings = Settings(load_config())
    train = settings.block("train", exclude=("seeds",))
    assert "device" not in train and "log_every" not in train and "seeds" not in train
    assert train["lr"] == 1e-3 and list(train) == sorted(train)
    run = settings.execution("train")
    assert isinstance(run, SimpleNamespace)
    assert vars(run) == {"compile": False, "device": "auto", "eval_batch_size": 32, "log_every": 10}
    with pytest.raises(ValueError, match="config train.device is execution-only"):
        settings.get("train.device")
    with pytest.raises(KeyError, match="'train.nope' is not in the schema"):
        settings.get("train.nope")


def test_leaf_keys_descend_into_fixed_blocks_only():
    keys = leaf_keys(load_schema())
    assert "patterns.thresholds.open" in keys and "data.synthetic.per_class" in keys
    assert "data.fasta" in keys and not any(k.startswith("data.fasta.") for k in keys)
    assert "train" not in keys
