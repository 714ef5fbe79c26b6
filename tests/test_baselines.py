"""``lab.baselines``: length, random, uncertainty and LookBack Lens features, checked by hand."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from analyzer.features import FeatureConfig, extract  # noqa: E402
from analyzer.lines import LineSpan  # noqa: E402
from analyzer.supervisor import Supervisor, SupervisorConfig  # noqa: E402
from analyzer.types import Record  # noqa: E402
from lab.baselines import (ClassifierConfig, FullPassCache, LineClassifier, context_for,  # noqa: E402
                           length_scores, random_scores, read_full, uncertainty_scores)
from lab.calibration_fit import fit_calibrator  # noqa: E402

CODE = "def add(a, b):\n    total = a + b\n\n    return total\n"


def _rec(code: str = CODE, meta: dict | None = None) -> Record:
    return Record(id="t/1", source="t", language="python", task="repair", code=code, fixed=code,
                  buggy_lines=(2,), meta=meta if meta is not None else {"description": "Add two numbers."})


@pytest.fixture(scope="module")
def full_sup(tiny_model_dir, tmp_path_factory) -> Supervisor:
    return Supervisor.load(SupervisorConfig(model=str(tiny_model_dir), device="cpu", full=True,
                                            cache_dir=tmp_path_factory.mktemp("c")))


def test_length_and_random_scores():
    lines = [LineSpan(1, 0, 3, 4, "abcd"), LineSpan(2, 4, 5, 2, "ab"), LineSpan(4, 6, 12, 7, "x")]
    assert length_scores(lines).tolist() == [4.0, 2.0, 7.0]
    assert random_scores(lines).tolist() == [0.0, 0.0, 0.0]


def test_context_for():
    assert context_for(_rec(meta={"description": "  Sort it. ", "docstring": "d"})) == "Sort it.\n"
    assert context_for(_rec(meta={"description": None, "docstring": "Doc."})) == "Doc.\n"
    assert context_for(_rec(meta={})) == ""
    assert len(context_for(_rec(meta={"description": "x" * 5000}))) == 2001


def test_read_full_matches_hand_computation(full_sup):
    rec = _rec()
    feats = FeatureConfig()
    [got] = read_full(full_sup, [rec], feats)
    # Lines: the same scorable lines as the state extraction (blank line 3 skipped).
    truncated = Supervisor.load(SupervisorConfig(model=full_sup.cfg.model, device="cpu",
                                                 cache_dir=full_sup.cfg.cache_dir))
    [sn] = extract(truncated, [rec.code], [rec.language], feats)
    assert [s.line for s in got.lines] == [s.line for s in sn.lines] == [1, 2, 4]

    prefix = "Add two numbers.\n" + feats.prefix_for("python")
    enc = full_sup.encode(prefix + rec.code)
    c = sum(1 for s, _ in enc.offsets if s < len(prefix))
    # Uncertainty: mean of the model's own token log-probs over each line's tokens.
    lp = full_sup.token_logprobs(enc.ids)
    for s, value in zip(got.lines, got.logprob):
        toks = range(s.first_token, s.first_token + s.n_tokens)
        assert value == pytest.approx(float(lp[list(toks)].mean()), abs=1e-5)
    assert uncertainty_scores(got).tolist() == pytest.approx((-got.logprob).tolist())

    # LookBack ratio from the model's returned attention maps, by explicit loops.
    with torch.no_grad():
        att = full_sup.model(input_ids=torch.tensor([enc.ids]), output_attentions=True,
                             use_cache=False).attentions
    n_layers, n_heads = len(att), att[0].shape[1]
    assert got.lookback.shape == (3, n_layers * n_heads)
    s = got.lines[1]
    for layer in (0, n_layers - 1):
        for head in (0, n_heads - 1):
            ratios = []
            for t in range(s.first_token, s.first_token + s.n_tokens):
                a = att[layer][0, head, t]
                ctx = float(a[:c].mean())
                new = float(a[c:t + 1].mean())
                ratios.append(ctx / (ctx + new))
            assert got.lookback[1, layer * n_heads + head] == pytest.approx(np.mean(ratios), rel=1e-4)
    assert ((got.lookback > 0) & (got.lookback < 1)).all()


def test_read_full_cache_and_requirements(full_sup, tmp_path, tiny_model_dir):
    cache = FullPassCache(tmp_path, full_sup)
    [a] = read_full(full_sup, [_rec()], FeatureConfig(), cache)
    assert len(list(tmp_path.rglob("*.pt"))) == 1
    [b] = read_full(full_sup, [_rec()], FeatureConfig(), cache)
    assert np.allclose(a.lookback, b.lookback) and np.allclose(a.logprob, b.logprob)
    # another context is another model input, hence another cache entry
    read_full(full_sup, [_rec(meta={})], FeatureConfig(), cache)
    assert len(list(tmp_path.rglob("*.pt"))) == 2
    truncated = Supervisor.load(SupervisorConfig(model=str(tiny_model_dir), device="cpu",
                                                 cache_dir=tmp_path / "c"))
    with pytest.raises(ValueError, match="full=True"):
        read_full(truncated, [_rec()], FeatureConfig())


def test_logistic_matches_newton_platt():
    rng = np.random.default_rng(0)
    s = rng.normal(size=400)
    y = (rng.random(400) < 1 / (1 + np.exp(-(2.0 * s - 1.0)))).astype(float)
    clf = LineClassifier.fit(ClassifierConfig(kind="logistic", l2=0.0), s[:, None], y)
    platt = fit_calibrator([s], [y], "platt", l2=0.0 + 1e-12)
    # Both maximise the same likelihood; standardisation only reparametrises the line.
    p_clf = 1 / (1 + np.exp(-clf.logits(s[:, None])))
    assert p_clf == pytest.approx(platt.predict(s), abs=1e-3)


def test_mlp_learns_what_a_line_cannot():
    rng = np.random.default_rng(1)
    x = rng.uniform(-1, 1, size=(600, 2))
    y = ((x[:, 0] * x[:, 1]) > 0).astype(float)  # XOR of signs: not linearly separable
    lin = LineClassifier.fit(ClassifierConfig(kind="logistic"), x, y)
    mlp = LineClassifier.fit(ClassifierConfig(kind="mlp", epochs=400, seed=0), x, y, dev=(x, y))
    acc = lambda c: float(((c.logits(x) > 0) == (y > 0)).mean())  # noqa: E731
    assert acc(lin) < 0.7 < 0.9 < acc(mlp)
    assert mlp.logits(np.zeros((0, 2))).shape == (0,)


def test_classifier_validation():
    with pytest.raises(ValueError, match="kind"):
        ClassifierConfig(kind="svm")
    with pytest.raises(ValueError, match="features"):
        LineClassifier.fit(ClassifierConfig(), np.zeros((3, 2)), np.zeros(4))
