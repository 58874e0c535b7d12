"""bertgeom.config: schema defaults, config values as canonical rule params, the checks before the first job."""

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from bertgeom.config import Settings, canonical, check_config, leaf_keys, load_config, load_schema, schema_node
from bertgeom.data.spike import SpikeExtractor, longest_accepted
from bertgeom.data.variants import SPIKE_END, SPIKE_START, read_reference
from bertgeom.tokens import split_sizes, stratified_split

ROOT = Path(__file__).resolve().parents[1]


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


@pytest.mark.parametrize("name", ["config.yaml", "tiny.yaml", "paper.yaml"])
def test_shipped_configs_pass_the_parse_time_checks(name):
    check_config(load_config(ROOT / "config" / name))


def test_every_violation_is_reported_on_its_own_line():
    config = load_config(tokens={"stride": 13, "k": 12}, figures={"example_seed": 7, "gallery_class": "Zeta"})
    with pytest.raises(ValueError) as error:
        check_config(config)
    lines = str(error.value).splitlines()
    assert [line.split(" ")[1] for line in lines] == ["tokens.stride", "figures.example_seed", "figures.gallery_class"]


@pytest.mark.parametrize("n, test, val", [(96, 0.2, 0.08), (96, 0.2, 0.15), (40, 0.25, 0.1), (27, 0.34, 0.5), (9, 0.2, 0.3)])
def test_split_sizes_are_those_of_the_stratified_split(n, test, val):
    """split_sizes (used before the first job) predicts what stratified_split (scikit-learn) draws;
    where a split would hold fewer sequences than classes, stratified_split fails."""
    n_classes = 3
    labels = np.arange(n) % n_classes
    sizes = split_sizes(n, test, val)
    if min(sizes.values()) < n_classes:
        with pytest.raises(ValueError):
            stratified_split(labels, test, val)
    else:
        assert {name: len(rows) for name, rows in stratified_split(labels, test, val).items()} == sizes


def test_longest_accepted_spike_is_the_qc_boundary():
    reference = ROOT / "resources" / "NC_045512.2.fasta"
    extractor = SpikeExtractor(reference, max_length_change=91, max_n_fraction=1)
    spike = read_reference(reference)[SPIKE_START - 1 : SPIKE_END]
    assert longest_accepted(91) == 3822 + 90  # whole codons

    def with_codons(n: int):  # n codons inserted inside the spike
        return extractor.extract("x", spike[:1800] + "GCT" * n + spike[1800:])

    assert with_codons(30).status == "pass" and with_codons(30).length == longest_accepted(91)
    assert with_codons(31).reason == "partial_spike"
