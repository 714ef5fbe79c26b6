"""Calibrator and ``fit_calibrator``: recovers known parameters, improves ECE, validates input,
round-trips as JSON."""

import json

import numpy as np
import pytest

from analyzer.calibrate import Calibrator
from lab.calibration_fit import fit_calibrator
from lab.metrics import ece


def _synthetic(a: float, b: float, n: int = 20000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    s = rng.normal(0.0, 2.0, n)
    y = (rng.random(n) < 1 / (1 + np.exp(-(a * s + b)))).astype(np.int64)
    return s, y


def test_platt_recovers_known_parameters():
    s, y = _synthetic(a=0.7, b=-1.5)
    cal = fit_calibrator([s], [y], "platt")
    assert cal.a == pytest.approx(0.7, abs=0.05)
    assert cal.b == pytest.approx(-1.5, abs=0.08)


def test_ece_improves_on_miscalibrated_scores():
    # True probability is sigmoid(0.5 s - 1) but the model's raw sigmoid(s) is over-confident.
    s, y = _synthetic(a=0.5, b=-1.0, seed=2)
    fit_s, fit_y, test_s, test_y = s[:10000], y[:10000], s[10000:], y[10000:]
    before = ece(1 / (1 + np.exp(-test_s)), test_y)
    after = ece(fit_calibrator([fit_s], [fit_y], "platt").predict(test_s), test_y)
    assert before > 0.1
    assert after < 0.02
    assert after < before / 5


def test_separable_scores_stay_finite():
    s = np.array([-3.0, -2.0, -1.0, 1.0, 2.0, 3.0])
    y = np.array([0, 0, 0, 1, 1, 1])
    cal = fit_calibrator([s], [y], "platt")
    p = cal.predict(s)
    assert np.isfinite([cal.a, cal.b]).all()
    assert (p[:3] < 0.5).all() and (p[3:] > 0.5).all()


def test_round_trip_through_json():
    s, y = _synthetic(a=1.3, b=0.2, n=2000, seed=3)
    cal = fit_calibrator([s], [y], "platt")
    back = Calibrator.from_dict(json.loads(json.dumps(cal.to_dict())))
    assert back == cal
    np.testing.assert_array_equal(back.predict(s), cal.predict(s))


def test_predict_keeps_the_shape_and_never_overflows():
    s = np.array([[-50.0, 0.0], [2.0, 800.0]])
    p = Calibrator("platt").predict(s)
    assert p.shape == (2, 2)
    np.testing.assert_allclose(p, 1 / (1 + np.exp(-np.clip(s, -700, 700))))


@pytest.mark.parametrize(
    ("scores", "labels", "message"),
    [
        ([], [], "no scores"),
        ([0.1, 0.2, 0.3], [1, 1, 1], "all 3 labels are 1"),
        ([0.1, 0.2], [0, 0], "all 2 labels are 0"),
        ([0.1, 0.2], [0, 1, 1], "2 scores but 3 labels"),
        ([0.1, float("nan")], [0, 1], "NaN"),
        ([0.1, 0.2], [0, 2], "0 or 1"),
    ],
)
def test_fit_refuses_bad_input(scores, labels, message):
    with pytest.raises(ValueError, match=message):
        fit_calibrator([scores], [labels])


def test_bad_config_is_refused():
    # centred is a model's map, platt a baseline's; temperature and identity maps are gone
    for gone in ("isotonic", "temperature", "identity"):
        with pytest.raises(ValueError, match="method must be one of"):
            Calibrator.from_dict({"method": gone, "a": 1.0, "b": 0.0})


def _synthetic_files(a: float, b: float, c: float, n_files: int = 3000, seed: int = 0):
    """Files of 3-40 lines whose labels follow the centred map; each file's scores carry a random
    offset (a language-wide or file-wide shift the centred map must ignore)."""
    rng = np.random.default_rng(seed)
    scores, labels = [], []
    for _ in range(n_files):
        n = int(rng.integers(3, 41))
        s = rng.normal(0.0, 2.0, n) + rng.normal(0.0, 5.0)
        p = 1 / (1 + np.exp(-(a * (s - s.mean()) + b + c * np.log(n))))
        scores.append(s)
        labels.append((rng.random(n) < p).astype(np.int64))
    return scores, labels


def test_centred_recovers_known_parameters():
    scores, labels = _synthetic_files(a=0.8, b=0.5, c=-0.9)
    cal = fit_calibrator(scores, labels)
    assert cal.method == "centred"
    assert cal.a == pytest.approx(0.8, abs=0.05)
    assert cal.b == pytest.approx(0.5, abs=0.15)
    assert cal.c == pytest.approx(-0.9, abs=0.06)


def test_centred_predict_by_hand_and_ignores_a_files_offset():
    cal = Calibrator("centred", a=1.0, b=0.0, c=1.0)
    # scores [0, 2]: centred [-1, 1], log n = log 2
    expected = 1 / (1 + np.exp(-(np.array([-1.0, 1.0]) + np.log(2))))
    np.testing.assert_allclose(cal.predict([0.0, 2.0]), expected)
    np.testing.assert_allclose(cal.predict([100.0, 102.0]), expected)
    assert cal.predict([]).shape == (0,)


def test_centred_beats_platt_when_files_shift():
    # Calibrate on files without offsets, test on files whose scores all moved up by 3: Platt
    # reads the shift as risk, the centred map does not see it.
    fit_s, fit_y = _synthetic_files(a=0.8, b=0.5, c=-0.9, n_files=2000, seed=1)
    test_s, test_y = _synthetic_files(a=0.8, b=0.5, c=-0.9, n_files=2000, seed=2)
    fit_s = [s - s.mean() for s in fit_s]
    test_s = [s - s.mean() + 3.0 for s in test_s]
    y = np.concatenate(test_y)
    platt = fit_calibrator(fit_s, fit_y, "platt")
    centred = fit_calibrator(fit_s, fit_y, "centred")
    ece_platt = ece(np.concatenate([platt.predict(s) for s in test_s]), y)
    ece_centred = ece(np.concatenate([centred.predict(s) for s in test_s]), y)
    assert ece_centred < 0.02 < 0.1 < ece_platt


def test_platt_pools_the_files():
    s, y = _synthetic(a=0.7, b=-1.5, n=3000, seed=4)
    assert fit_calibrator([s[:1000], s[1000:]], [y[:1000], y[1000:]], "platt") == fit_calibrator([s], [y], "platt")


def test_centred_round_trips_and_legacy_dicts_read_without_c():
    scores, labels = _synthetic_files(a=0.5, b=0.0, c=-1.0, n_files=300, seed=5)
    cal = fit_calibrator(scores, labels, "centred")
    d = json.loads(json.dumps(cal.to_dict()))
    assert set(d) == {"method", "a", "b", "c"}
    assert Calibrator.from_dict(d) == cal
    # a platt map (a baseline's) is written without "c"
    assert Calibrator.from_dict({"method": "platt", "a": 0.5, "b": -1.0}) == Calibrator("platt", 0.5, -1.0)


def test_bad_centred_input_is_refused():
    with pytest.raises(ValueError, match="c must be 0"):
        Calibrator("platt", 1.0, 0.0, 0.5)
    with pytest.raises(ValueError, match="2 files of scores but 1"):
        fit_calibrator([[0.1], [0.2]], [[0]], "centred")
    with pytest.raises(ValueError, match="method must be one of"):
        fit_calibrator([[0.1, 0.2]], [[0, 1]], "temperature")
