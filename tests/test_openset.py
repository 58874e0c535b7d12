"""bertgeom.openset: Mahalanobis scores, threshold rule, temperature scaling, ECE, open_set.json round trip;
bertgeom.data.outofclass: the genomes the open set is chosen and measured on."""

import math

import numpy as np
import pytest
from scipy.spatial.distance import mahalanobis as scipy_mahalanobis

from bertgeom.config import load_config
from bertgeom.data.outofclass import (
    background_genomes,
    calibration_genomes,
    control_sequences,
    out_of_class_definitions,
)
from bertgeom.data.variants import SPIKE_END, SPIKE_START, load_variants, read_reference
from bertgeom.openset import (
    OpenSet,
    answer,
    choose_threshold,
    expected_calibration_error,
    fit_gaussian,
    fit_layers,
    fit_temperature,
    mahalanobis,
    nll,
    softmax,
)


# Every kind of noise switched off (the settings of config data.synthetic that add variety).
QUIET = dict(substitution_rate=0.0, n_runs_mean=0.0, trim_5p_max=0, trim_3p_max=0)
QUIET.update(drop_max=0.0, homoplasy_mean=0.0, ambiguity_mean=0.0)


def _blobs(rng, n=60, dim=5, classes=3):
    labels = np.repeat(np.arange(classes), n)
    centres = rng.normal(0, 6, size=(classes, dim))
    return centres[labels] + rng.normal(size=(len(labels), dim)), labels


def test_layer_distances_add_up(tmp_path):
    """Two layers: the distance is sqrt of the sum of the per-layer squared distances (block-diagonal covariance)."""
    rng = np.random.default_rng(4)
    (a, y), (b, _) = _blobs(rng), _blobs(np.random.default_rng(5))
    features = np.stack([a, b], axis=1)  # [N, layer, hidden]
    means, precision = fit_layers(features, y, 3)
    open_set = OpenSet(["a", "b", "c"], means, precision, threshold=1.0)
    want = np.sqrt(mahalanobis(a, means[0], precision[0]) ** 2 + mahalanobis(b, means[1], precision[1]) ** 2)
    np.testing.assert_allclose(open_set.scores(features), want)


def test_mahalanobis_agrees_with_scipy():
    rng = np.random.default_rng(0)
    x, y = _blobs(rng)
    means, precision = fit_gaussian(x, y, 3)
    got = mahalanobis(x[:7], means, precision)
    want = [[scipy_mahalanobis(x[i], means[c], precision) for c in range(3)] for i in range(7)]
    np.testing.assert_allclose(got, want, rtol=1e-10)
    np.testing.assert_allclose(means[1], x[y == 1].mean(0))


def test_open_set_round_trips_through_json(tmp_path):
    rng = np.random.default_rng(1)
    x, y = _blobs(rng)
    means, precision = fit_layers(x[:, None, :], y, 3)
    fitted = OpenSet(["a", "b", "c"], means, precision, threshold=3.25, temperature=1.7, report={"youden_j": 0.9})
    fitted.save(tmp_path / "open_set.json")
    loaded = OpenSet.load(tmp_path / "open_set.json")
    assert loaded.classes == ["a", "b", "c"] and loaded.threshold == 3.25 and loaded.temperature == 1.7
    assert np.array_equal(loaded.means, means) and np.array_equal(loaded.precision, precision)  # bit-exact
    assert np.array_equal(loaded.scores(x[:, None]), fitted.scores(x[:, None])) and loaded.report == {"youden_j": 0.9}
    (tmp_path / "bad.json").write_text('{"classes": ["a"], "threshold": 1}')
    with pytest.raises(ValueError, match=r"bad.json: not an open-set file \(missing \['temperature', 'tensors'"):
        OpenSet.load(tmp_path / "bad.json")
    (tmp_path / "open_set.safetensors").write_bytes(b"changed")
    with pytest.raises(ValueError, match="open_set.safetensors is missing or not the file it was saved with"):
        OpenSet.load(tmp_path / "open_set.json")


def test_threshold_known_answers():
    # separated: J = 1 on [3, 5); its lowest point, the highest in-class score
    threshold, report = choose_threshold([1, 2, 3], [5, 6, 7], max_false_unassigned=0.0)
    assert threshold == 3 and report["youden_j"] == 1.0 and report["rule"] == "Youden J"
    # overlapping: in 1..10, out 8..20 -> J(t in [k, k+1)) = k/10 + #(out > k)/13 - 1, largest (10/13) at k = 10
    inside, outside = np.arange(1, 11), np.arange(8, 21)
    threshold, report = choose_threshold(inside, outside, max_false_unassigned=0.5)
    assert threshold == 10 and report["youden_j"] == pytest.approx(10 / 13)
    # an in-class outlier at 100: Youden J ignores it (10); allowing no false unassigned raises it to 100
    inside, outside = np.r_[np.arange(1, 11), 100], np.arange(20, 31)
    assert choose_threshold(inside, outside, max_false_unassigned=0.1)[0] == 10
    threshold, report = choose_threshold(inside, outside, max_false_unassigned=0.0)
    assert threshold == 100 and report["rule"] == "in-class quantile" and report["in_class_accepted"] == 1.0


def test_temperature_scaling_lowers_nll_on_fixed_logits():
    """Labels drawn from softmax(z); the model reports 4 z (over-confident): T comes out near 4."""
    rng = np.random.default_rng(2)
    z = rng.normal(0, 1.5, size=(4000, 5))
    labels = np.array([rng.choice(5, p=p) for p in softmax(z)])
    logits = 4 * z
    temperature = fit_temperature(logits, labels)
    assert temperature == pytest.approx(4, rel=0.1)
    assert nll(logits / temperature, labels) < nll(logits, labels) - 0.1
    ece_before = expected_calibration_error(softmax(logits), labels)
    assert expected_calibration_error(softmax(logits / temperature), labels) < ece_before / 3


def test_ece_known_answer():
    # bin [0.8, 0.867): 2 predictions at 0.8, 1 right -> |0.5 - 0.8| x 2/3; bin [0.6, 0.667): 1 at 0.6, right -> 0.4 x 1/3
    probs = np.array([[0.8, 0.2], [0.8, 0.2], [0.4, 0.6]])
    assert expected_calibration_error(probs, np.array([0, 1, 1])) == pytest.approx(0.3 * 2 / 3 + 0.4 / 3)
    assert math.isnan(expected_calibration_error(np.zeros((0, 2)), np.zeros(0, int)))


def test_answer_unassigns_far_points():
    rng = np.random.default_rng(3)
    x, y = _blobs(rng)
    means, precision = fit_layers(x[:, None, :], y, 3)
    open_set = OpenSet(["a", "b", "c"], means, precision, threshold=4.0, temperature=2.0)
    far = means[0].mean(0) + 50
    got = answer(
        open_set, np.vstack([means[0], far])[:, None, :], np.array([[4.0, 0, 0], [0, 4, 0], [0, 0, 4], [4, 0, 0]])
    )
    assert got.assigned.tolist() == [True, True, True, False] and got.closest.tolist() == [0, 1, 2, 0]
    np.testing.assert_allclose(got.probs[0], softmax(np.array([[2.0, 0, 0]]))[0])  # logits / T


def test_out_of_class_genomes(root):
    variants = root / "resources/variants.yaml"
    threshold = {e["name"] for e in out_of_class_definitions(variants, ["Alpha", "Delta"], "threshold")}
    evaluation = {e["name"] for e in out_of_class_definitions(variants, ["Alpha", "Delta"], "evaluation")}
    classes = {c["name"] for c in load_variants(variants)["classes"]}
    assert not threshold & evaluation and not threshold & classes
    assert classes - {"Alpha", "Delta"} <= evaluation  # classes left out of the config are out of class
    reference = read_reference(root / "resources/NC_045512.2.fasta")
    controls = list(control_sequences(root / "resources/NC_045512.2.fasta", 2, seed=0))
    assert [f["type"] for _, _, f in controls] == ["reference", "shuffled", "shuffled", "random", "random"]
    spike = reference[SPIKE_START - 1 : SPIKE_END]
    shuffled = controls[1][1]
    assert (
        sorted(shuffled[i : i + 3] for i in range(0, len(spike), 3))
        == sorted(spike[i : i + 3] for i in range(0, len(spike), 3))
        and shuffled != spike
    )
    settings = {**load_config()["data"]["synthetic"], **QUIET, "per_class": 5, "mixture": True}
    hard = {**load_config()["open_set"]["calibration"], "per_class": 2}
    made = list(calibration_genomes(root / "resources/NC_045512.2.fasta", variants, ["Beta"], settings, 0, hard=hard))
    assert len(made) == 2 and all(f["label"] == 0 and f["class"] == "Beta" for _, _, f in made)
    assert all(s != reference for _, s, _ in made)  # the hard variety overrides the quiet settings
    fresh = list(calibration_genomes(root / "resources/NC_045512.2.fasta", variants, ["Beta"], settings, 0))
    assert len(fresh) == 5 and fresh[0][0].startswith("fresh-Beta") and made[0][0].startswith("calibration-Beta")


def test_background_genomes_keep_little_of_a_profile(root):
    settings = {**load_config()["data"]["synthetic"], **QUIET, "per_class": 1, "mixture": False}
    reference = read_reference(root / "resources/NC_045512.2.fasta")
    records = list(
        background_genomes(
            root / "resources/NC_045512.2.fasta", root / "resources/variants.yaml", ["Omicron"], settings, 0, 20, 0.3
        )
    )
    assert len(records) == 20 and all(0 <= f["kept"] <= 0.3 for _, _, f in records)
    omicron = load_variants(root / "resources/variants.yaml")["classes"][7]["profiles"]
    most = max(len(p["substitutions"]) for p in omicron)
    for _, sequence, fields in records:  # no indels of BA.* kept only if ... the substitutions kept are few
        if len(sequence) == len(reference):
            differ = sum(a != b for a, b in zip(sequence, reference))
            assert differ <= 0.3 * most + 12  # a share of at most 30% (+ binomial slack)
