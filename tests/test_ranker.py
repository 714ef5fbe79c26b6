"""NeuralNDCG (allRank formulation), the per-line ranker's training loop, early stopping, persistence."""

import math

import pytest
import torch

from dataclasses import replace

from analyzer.artifact import ArtifactError
from analyzer.ranker import RankerConfig, RankerMLP, length_prior_term, load_ranker, save_ranker
from lab.ranker_training import Slate, evaluate_ranker, held_out_logits, neural_ndcg, train_ranker


def _ndcg_by_hand(pred: list[float], rel: list[float]) -> float:
    gains = [2**r - 1 for r in rel]
    order = sorted(range(len(pred)), key=lambda i: -pred[i])
    dcg = sum(gains[i] / math.log2(pos + 2) for pos, i in enumerate(order))
    idcg = sum(g / math.log2(pos + 2) for pos, g in enumerate(sorted(gains, reverse=True)))
    return dcg / idcg


def test_perfect_ranking_at_low_temperature_gives_minus_one():
    y_true = torch.tensor([[0.0, 1.0, 0.0, 1.0, 0.0]])
    y_pred = torch.tensor([[0.1, 3.0, -1.0, 2.0, 0.5]])
    loss = neural_ndcg(y_pred, y_true, torch.ones_like(y_true, dtype=torch.bool), temperature=0.01)
    assert loss.item() == pytest.approx(-1.0, abs=1e-5)


def test_three_item_slate_matches_hand_computed_ndcg():
    pred, rel = [0.1, 0.9, 0.5], [1.0, 0.0, 0.5]
    # Ranking by pred: item1 (gain 0), item2 (2^.5-1), item0 (1).
    expected = ((2**0.5 - 1) / math.log2(3) + 1 / math.log2(4)) / (1 + (2**0.5 - 1) / math.log2(3))
    assert expected == pytest.approx(_ndcg_by_hand(pred, rel))
    loss = neural_ndcg(torch.tensor([pred]), torch.tensor([rel]), torch.ones(1, 3, dtype=torch.bool), temperature=1e-3)
    assert -loss.item() == pytest.approx(expected, abs=1e-5)
    # Plain (not powered) gains: the same order with gains 1, 0, 0.5.
    plain = neural_ndcg(torch.tensor([pred]), torch.tensor([rel]), torch.ones(1, 3, dtype=torch.bool),
                        temperature=1e-3, powered_relevancies=False)
    assert -plain.item() == pytest.approx((0.5 / math.log2(3) + 1 / math.log2(4)) / (1 + 0.5 / math.log2(3)), abs=1e-5)


def test_masked_padding_is_ignored_wherever_it_sits():
    pred = torch.tensor([[0.3, -0.2, 1.1, 0.4]])
    rel = torch.tensor([[1.0, 0.0, 0.0, 1.0]])
    alone = neural_ndcg(pred, rel, torch.ones(1, 4, dtype=torch.bool))
    # Same slate padded with junk at the end and in the middle of a batch row.
    padded_pred = torch.tensor([[0.3, 99.0, -0.2, 1.1, -50.0, 0.4]])
    padded_rel = torch.tensor([[1.0, 1.0, 0.0, 0.0, 1.0, 1.0]])
    mask = torch.tensor([[True, False, True, True, False, True]])
    assert neural_ndcg(padded_pred, padded_rel, mask).item() == pytest.approx(alone.item(), abs=1e-6)


def test_slates_without_relevant_items_are_excluded():
    pred = torch.tensor([[0.2, 0.1, -0.3], [0.5, 0.4, 0.3]])
    rel = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    mask = torch.ones(2, 3, dtype=torch.bool)
    both = neural_ndcg(pred, rel, mask, temperature=1e-3)
    first = neural_ndcg(pred[:1], rel[:1], mask[:1], temperature=1e-3)
    assert both.item() == pytest.approx(first.item())
    assert both.item() == pytest.approx(-_ndcg_by_hand([0.2, 0.1, -0.3], [0, 1, 0]), abs=1e-5)
    lone = pred[1:].clone().requires_grad_(True)
    none = neural_ndcg(lone, rel[1:], mask[1:])
    assert none.item() == 0.0
    none.backward()  # still part of the graph, so a batch of clean snippets does not crash training
    assert (lone.grad == 0).all()


def test_gradient_moves_buggy_line_up():
    pred = torch.tensor([[0.5, 0.0, 0.2]], requires_grad=True)
    neural_ndcg(pred, torch.tensor([[0.0, 1.0, 0.0]]), torch.ones(1, 3, dtype=torch.bool)).backward()
    assert pred.grad[0, 1] < 0  # minimising the loss raises the buggy line's score


def _slates(n: int, d: int = 8, seed: int = 0, flip: bool = False, prefix: str = "p") -> list[Slate]:
    """Snippets of 3-9 lines, exactly one buggy line, which is the one with the largest feature 0."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        length = int(torch.randint(3, 10, (1,), generator=g))
        x = torch.randn(length, d, generator=g)
        bug = int(torch.randint(length, (1,), generator=g))
        x[bug, 0] = (-1 if flip else 1) * (x[:, 0].abs().max() + 1.0)
        labels = torch.zeros(length)
        labels[bug] = 1.0
        tokens = torch.randint(1, 12, (length,), generator=g)
        out.append(Slate(x, labels, tokens, f"{prefix}{i}"))
    return out


def _sourced(slates: list[Slate], sources: tuple[str, ...]) -> list[Slate]:
    return [replace(s, source=sources[i % len(sources)]) for i, s in enumerate(slates)]


def test_cross_source_logits_come_from_a_ranker_that_never_saw_the_source():
    cfg = RankerConfig(d_in=8, members=1, epochs=4, patience=4, length_prior=2.0)
    sources = ("a", "b", "c")
    train, dev = _sourced(_slates(18, seed=1), sources), _sourced(_slates(9, seed=2, prefix="d"), sources)
    model, _ = train_ranker(cfg, train, dev, progress=False)
    logits, labels, info = held_out_logits(model, train, dev)
    assert info == {"calibrated_on": "cross-source", "held_out_sources": ["a", "b", "c"]}
    # every training slate once, grouped by source; each scored by the ranker trained on the others
    held = [s for src in sources for s in (*train, *dev) if s.source == src]
    assert len(logits) == len(held) == len(train) + len(dev)
    for src in sources:
        other, _ = train_ranker(cfg, [s for s in train if s.source != src], [s for s in dev if s.source != src],
                                progress=False)
        for x, y, s in zip(logits, labels, held):
            if s.source == src:
                assert torch.equal(x, other(s.features, s.tokens)) and torch.equal(y, s.labels)
    # a source's own labels never reach the scores it is calibrated with
    flipped = [replace(s, labels=s.labels.flip(0)) if s.source == "a" else s for s in train]
    again, _, _ = held_out_logits(model, flipped, dev)
    for x, x2, s in zip(logits, again, held):
        if s.source == "a":
            assert torch.equal(x, x2)
    # ...while the other sources' rankers trained on them, so theirs move (the check is not vacuous)
    assert any(not torch.equal(x, x2) for x, x2, s in zip(logits, again, held) if s.source != "a")


def test_with_one_source_the_map_is_fitted_on_the_models_own_dev_logits(caplog):
    """Records of one source (one repository, say) leave no source to hold out: the logits are
    the model's own on the dev split, and the info says so."""
    cfg = RankerConfig(d_in=8, members=1, epochs=2, patience=2)
    train, dev = _sourced(_slates(8, seed=1), ("only",)), _sourced(_slates(4, seed=2, prefix="d"), ("only",))
    model, _ = train_ranker(cfg, train, dev, progress=False)
    logits, labels, info = held_out_logits(model, train, dev)
    assert info == {"calibrated_on": "dev", "held_out_sources": []}
    assert "calibrating on the dev split instead" in caplog.text
    assert len(logits) == len(labels) == len(dev)
    for x, y, s in zip(logits, labels, dev):
        assert torch.equal(x, model(s.features, s.tokens)) and torch.equal(y, s.labels)


def test_ranker_overfits_separable_slates():
    cfg = RankerConfig(d_in=8, members=1, hidden=32, epochs=30, patience=30, dropout=0.0, lr=1e-2, batch_snippets=16)
    train = _slates(16)
    model, history = train_ranker(cfg, train, train, progress=False)
    assert evaluate_ranker(model, train)["top1"] == 1.0
    assert history["best_dev_top1"] == 1.0


def test_training_is_deterministic_and_leaves_global_rng_alone():
    cfg = RankerConfig(d_in=8, members=1, epochs=5, patience=5)
    train, dev = _slates(12, seed=1), _slates(6, seed=2, prefix="d")
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    m1, h1 = train_ranker(cfg, train, dev, progress=False)
    after = torch.rand(1)
    m2, h2 = train_ranker(cfg, train, dev, progress=False)
    assert before == after
    assert h1 == h2
    for p1, p2 in zip(m1.parameters(), m2.parameters()):
        torch.testing.assert_close(p1, p2, rtol=0, atol=0)


def test_early_stopping_restores_best_weights():
    # Dev labels are the opposite of train: the more the model learns, the worse dev gets.
    cfg = RankerConfig(d_in=8, members=1, epochs=40, patience=4, dropout=0.0, lr=3e-3)
    train, dev = _slates(24, seed=3), _slates(8, seed=4, flip=True, prefix="d")
    model, history = train_ranker(cfg, train, dev, progress=False)
    epochs = history["epochs"]
    assert history["stopped_early"] and len(epochs) < cfg.epochs
    assert history["best_epoch"] < epochs[-1]["epoch"]
    best = epochs[history["best_epoch"] - 1]
    assert all((e["dev_top1"], -e["dev_loss"]) <= (best["dev_top1"], -best["dev_loss"]) for e in epochs)
    again = evaluate_ranker(model, dev)
    assert again["loss"] == pytest.approx(best["dev_loss"], rel=1e-6)
    assert again["top1"] == pytest.approx(best["dev_top1"])
    assert again["loss"] < epochs[-1]["dev_loss"]


def test_fine_tuning_keeps_the_starting_ranker_unless_an_epoch_beats_it_on_dev():
    cfg = RankerConfig(d_in=8, members=1, hidden=32, epochs=20, patience=20, dropout=0.0, lr=1e-2)
    good, _ = train_ranker(cfg, _slates(24, seed=5), _slates(8, seed=6, prefix="d"), progress=False)
    dev = _slates(8, seed=7, prefix="e")
    # Fine-tuning data that teaches the opposite: every epoch is worse on dev than the start.
    model, history = train_ranker(cfg, _slates(24, seed=8, flip=True), dev, progress=False, init=good)
    assert history["epochs"][0]["epoch"] == 0 and history["best_epoch"] == 0
    for p1, p2 in zip(model.parameters(), good.parameters()):
        torch.testing.assert_close(p1, p2, rtol=0, atol=0)
    # Data of the same kind: it may move, and whatever it returns is at least as good on dev.
    tuned, history = train_ranker(cfg, _slates(24, seed=9), dev, progress=False, init=good)
    assert history["best_dev_top1"] >= history["epochs"][0]["dev_top1"]
    with pytest.raises(ValueError, match="init is a"):
        train_ranker(replace(cfg, hidden=16), _slates(4), dev, progress=False, init=good)


def test_members_are_trained_apart_and_averaged(tmp_path):
    cfg = RankerConfig(d_in=8, hidden=16, epochs=8, patience=8, members=3, seed=4)
    train, dev = _slates(16, seed=10), _slates(6, seed=11, prefix="d")
    model, history = train_ranker(cfg, train, dev, progress=False)
    assert len(model.members) == 3 and len(history["members"]) == 3 and len(history["best_epoch"]) == 3
    # member k is the single MLP that seed + k trains
    alone, _ = train_ranker(RankerConfig(d_in=8, members=1, hidden=16, epochs=8, patience=8, seed=5), train, dev, progress=False)
    for p1, p2 in zip(model.members[1].parameters(), alone.members[0].parameters()):
        torch.testing.assert_close(p1, p2, rtol=0, atol=0)
    x = dev[0].features
    each = torch.stack([m(x).squeeze(-1) for m in model.members])
    torch.testing.assert_close(model.mlp_logits(x), each.mean(0))
    save_ranker(model, tmp_path)
    again = load_ranker(tmp_path, cfg.to_dict())
    torch.testing.assert_close(again.mlp_logits(x), model.mlp_logits(x))


def test_save_load_round_trip(tmp_path):
    cfg = RankerConfig(d_in=8, members=1, epochs=2, patience=2)
    model, _ = train_ranker(cfg, _slates(8), _slates(4, seed=5, prefix="d"), progress=False)
    config = save_ranker(model, tmp_path)
    assert (tmp_path / "ranker.safetensors").exists()
    loaded = load_ranker(tmp_path, config)
    x, tokens = torch.randn(11, 8), torch.randint(1, 20, (11,))
    torch.testing.assert_close(loaded(x, tokens), model(x, tokens))
    assert RankerConfig.from_dict(config) == cfg


def test_length_prior_term_is_log_length_centred_on_the_snippet():
    got = length_prior_term(torch.tensor([0, 1, 3]))
    ll = [math.log(1), math.log(2), math.log(4)]
    want = [v - sum(ll) / 3 for v in ll]
    torch.testing.assert_close(got, torch.tensor(want))


def test_length_prior_is_added_when_scoring_and_ignored_in_training():
    train, dev = _slates(12, seed=1), _slates(6, seed=2, prefix="d")
    plain, _ = train_ranker(RankerConfig(d_in=8, members=1, epochs=3, patience=3, length_prior=0.0), train, dev, progress=False)
    prior, _ = train_ranker(RankerConfig(d_in=8, members=1, epochs=3, patience=3, length_prior=6.0), train, dev, progress=False)
    for p1, p2 in zip(plain.parameters(), prior.parameters()):
        torch.testing.assert_close(p1, p2, rtol=0, atol=0)  # same MLP: the prior plays no part in training
    # The last feature column marks declaration lines (analyzer.features.ranker_inputs): no prior there.
    x = dev[0].features.clone()
    x[:, -1] = 0.0
    x[0, -1] = 1.0
    tokens = dev[0].tokens
    with torch.no_grad():
        got, alone = prior(x, tokens), plain(x)
        torch.testing.assert_close(got[1:], alone[1:] + 6.0 * length_prior_term(tokens)[1:])
        torch.testing.assert_close(got[0], alone[0])
    with pytest.raises(ValueError, match="length prior"):
        prior(x)


def test_a_manifest_must_name_every_ranker_field():
    """A field's default may change between releases: a manifest without it is refused, not read
    with today's default (which would change what the model computes)."""
    legacy = {k: v for k, v in RankerConfig(d_in=8).to_dict().items() if k != "length_prior"}
    with pytest.raises(ArtifactError, match=r"lacks \['length_prior'\]"):
        RankerConfig.from_dict(legacy)
    for gone in ("prior_in_training", "prior_skips_declarations"):  # the prior always skips declarations now
        with pytest.raises(ArtifactError, match="unknown RankerConfig fields.*ptbot recipe"):
            RankerConfig.from_dict({**RankerConfig(d_in=8).to_dict(), gone: True})
    with pytest.raises(ValueError, match="length_prior must be >= 0"):
        RankerConfig(d_in=8, length_prior=-1.0)


def test_bad_input_is_refused(tmp_path):
    with pytest.raises(ValueError, match="labels must have shape"):
        Slate(torch.zeros(3, 4), torch.zeros(2), torch.ones(3, dtype=torch.long), "g")
    with pytest.raises(ValueError, match="dev split is empty"):
        train_ranker(RankerConfig(d_in=8), _slates(2), [], progress=False)
    with pytest.raises(ValueError, match="RankerConfig.d_in is 4"):
        train_ranker(RankerConfig(d_in=4), _slates(2), _slates(1), progress=False)
    with pytest.raises(ValueError, match="both 0"):
        RankerConfig(d_in=4, ndcg_weight=0, bce_weight=0)
    with pytest.raises(ValueError, match="expects 8-d"):
        RankerMLP(RankerConfig(d_in=8))(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="not found"):
        load_ranker(tmp_path, RankerConfig(d_in=8).to_dict())
