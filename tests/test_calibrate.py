"""Calibrator: recovers known Platt parameters, improves ECE, validates input, round-trips as JSON."""

import json

import numpy as np
import pytest

from analyzer.calibrate import Calibrator
from analyzer.metrics import ece


def _synthetic(a: float, b: float, n: int = 20000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    s = rng.normal(0.0, 2.0, n)
    y = (rng.random(n) < 1 / (1 + np.exp(-(a * s + b)))).astype(np.int64)
    return s, y


def test_platt_recovers_known_parameters():
    s, y = _synthetic(a=0.7, b=-1.5)
    cal = Calibrator.fit(s, y, method="platt")
    assert cal.a == pytest.approx(0.7, abs=0.05)
    assert cal.b == pytest.approx(-1.5, abs=0.08)


def test_temperature_recovers_slope_with_zero_bias():
    s, y = _synthetic(a=0.4, b=0.0, seed=1)
    cal = Calibrator.fit(s, y, method="temperature")
    assert cal.b == 0.0
    assert cal.a == pytest.approx(0.4, abs=0.04)


def test_ece_improves_on_miscalibrated_scores():
    # True probability is sigmoid(0.5 s - 1) but the model's raw sigmoid(s) is over-confident.
    s, y = _synthetic(a=0.5, b=-1.0, seed=2)
    fit_s, fit_y, test_s, test_y = s[:10000], y[:10000], s[10000:], y[10000:]
    before = ece(Calibrator.identity().predict(test_s), test_y)
    after = ece(Calibrator.fit(fit_s, fit_y).predict(test_s), test_y)
    assert before > 0.1
    assert after < 0.02
    assert after < before / 5


def test_separable_scores_stay_finite():
    s = np.array([-3.0, -2.0, -1.0, 1.0, 2.0, 3.0])
    y = np.array([0, 0, 0, 1, 1, 1])
    cal = Calibrator.fit(s, y)
    p = cal.predict(s)
    assert np.isfinite([cal.a, cal.b]).all()
    assert (p[:3] < 0.5).all() and (p[3:] > 0.5).all()


def test_round_trip_through_json():
    s, y = _synthetic(a=1.3, b=0.2, n=2000, seed=3)
    cal = Calibrator.fit(s, y)
    back = Calibrator.from_dict(json.loads(json.dumps(cal.to_dict())))
    assert back == cal
    np.testing.assert_array_equal(back.predict(s), cal.predict(s))
    assert Calibrator.from_dict(Calibrator.identity().to_dict()) == Calibrator.identity()


def test_identity_is_plain_sigmoid_and_keeps_shape():
    s = np.array([[-50.0, 0.0], [2.0, 800.0]])
    p = Calibrator.identity().predict(s)
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
        Calibrator.fit(scores, labels)


def test_bad_config_is_refused():
    with pytest.raises(ValueError, match="method"):
        Calibrator.from_dict({"method": "isotonic", "a": 1.0, "b": 0.0})
    with pytest.raises(ValueError, match="b must be 0"):
        Calibrator("temperature", 2.0, 0.5)
