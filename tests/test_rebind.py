"""lab.rebind: a re-bind on feedback that helps is promoted, one that hurts is refused.

Built on the tiny random supervisor. The feedback is synthetic but learnable: every feedback file
gets one inserted "marker" line (tokens the tiny model never saw in the seed data), and the
reviewers' label says whether that line needed an edit. Feedback that labels the marker line
buggy everywhere teaches the ranker to put it first, which the held-out feedback rewards; feedback
whose training half labels the marker line *clean* (and another line buggy) teaches the opposite,
which the same held-out feedback punishes.
"""

from __future__ import annotations

import random

import pytest

from analyzer import versions
from analyzer.artifact import read_manifest
from analyzer.score import RiskScorer
from analyzer.supervisor import Supervisor, SupervisorConfig
from analyzer.types import Record
from conftest import TINY_RANKER, tiny_records
from lab.rebind import GateConfig, decide, rebind_with_gate, split_feedback
from lab.records import load_records

MARKER = "    assert qzx_vault is not None, 'qzx qzx qzx qzx qzx qzx'"
# More epochs than TINY_RANKER: the marker must actually be learnt for the gate to see a gain.
RANKER = {**TINY_RANKER, "epochs": 30, "patience": 10, "lr": 3e-3}


@pytest.fixture(scope="module")
def sup(tiny_model_dir, tmp_path_factory):
    return Supervisor.load(SupervisorConfig(model=str(tiny_model_dir), device="cpu",
                                            cache_dir=tmp_path_factory.mktemp("cache")))


def feedback(n: int = 40, poison_training: bool = False, holdout: float = 0.3, seed: int = 0) -> list[Record]:
    """Feedback records in the shape ``bot.feedback.export_records`` writes, one marker line each.

    With ``poison_training`` the records that land in the gate's *training* half label the line
    after the marker as the one that needed an edit (the marker clean); held-out records always
    label the marker line.
    """
    bases = tiny_records(24 + n)[24:]  # problems the seed data does not contain
    rng = random.Random(seed)
    out = []
    for i, base in enumerate(bases):
        lines = base.fixed.rstrip("\n").split("\n")
        body = [j for j, ln in enumerate(lines) if ln.startswith("    ") and ln.strip()]
        at = rng.choice(body[: max(1, len(body) - 1)])  # insert before a body line, never last
        code = "\n".join(lines[:at] + [MARKER] + lines[at:]) + "\n"
        out.append(Record(id=f"ptbot-feedback/octo/shop#{i}/src/mod{i}.py@{i:012x}", source="ptbot-feedback",
                          language="python", task="edit", code=code, fixed=base.fixed,
                          buggy_lines=(at + 1,), meta={"license": "", "repo": "octo/shop", "number": i}))
    if poison_training:
        held = {r.id for r in split_feedback(out, holdout, seed)[1]}
        out = [r if r.id in held else Record(**{**r.to_dict(), "buggy_lines": (r.buggy_lines[0] + 1,)})
               for r in out]
    return out


def test_feedback_split_is_by_problem_and_independent_of_binds_dev_split():
    recs = feedback()
    train, held = split_feedback(recs, 0.3, 0)
    assert held and train and len(train) + len(held) == len(recs)
    assert split_feedback(recs, 0.3, 0) == (train, held)  # deterministic
    # bind's own dev split (unsalted hash, same seed) must still see feedback problems
    from lab.records import split_by_problem

    _, dev = split_by_problem(train, 0.2, 0)
    assert dev


def test_decide_directions_and_undefined_metrics():
    assert decide({"top1": 0.2}, {"top1": 0.5}, "top1", 0.0)[0]
    assert not decide({"top1": 0.5}, {"top1": 0.4}, "top1", 0.0)[0]
    assert not decide({"top1": 0.5}, {"top1": 0.55}, "top1", 0.1)[0]    # gain below min_gain
    assert decide({"ece": 0.2}, {"ece": 0.1}, "ece", 0.05)[0]          # lower is better
    assert not decide({"ece": 0.1}, {"ece": 0.2}, "ece", 0.0)[0]
    ok, why = decide({"top1": 0.5}, {"top1": None}, "top1", 0.0)
    assert not ok and "undefined" in why
    assert decide(None, {"top1": 0.1}, "top1", 0.0)[0]                 # nothing serving to beat
    with pytest.raises(ValueError, match="unknown gate metric"):
        GateConfig(metric="accuracy")
    with pytest.raises(ValueError, match="holdout"):
        GateConfig(holdout=1.0)
    with pytest.raises(ValueError, match="min_gain"):
        GateConfig(min_gain=-0.1)
    with pytest.raises(TypeError, match="calibration"):  # one map, the centred one, fitted as bind fits it
        GateConfig(calibration="platt")


def test_feedback_that_helps_is_promoted_and_feedback_that_hurts_is_refused(sup, tiny_artifact_dir, tmp_path):
    home = tmp_path / "home"
    versions.init_home(home, tiny_artifact_dir)
    seed_records = tiny_records(24)
    kw = dict(holdout=0.3, seed=0, ranker_cfg=RANKER, n_boot=50, progress=False)

    helps = rebind_with_gate(sup, home, seed_records, feedback(), **kw)
    assert helps.promoted, helps.reason
    assert (helps.serving, helps.version) == ("0001", "0002")
    assert helps.new_metrics["top1"] > helps.old_metrics["top1"]
    assert helps.new_metrics["auroc"] > helps.old_metrics["auroc"]  # learnt, not a lucky tie-break
    assert helps.new_metrics["n_snippets"] == helps.old_metrics["n_snippets"] > 0  # same held-out records
    assert versions.current_version(home) == "0002"
    gate = read_manifest(home / "versions" / "0002")["gate"]
    assert gate["promoted"] and gate["serving"] == "0001" and gate["config"]["metric"] == "top1"
    assert gate["old"]["top1"] == helps.old_metrics["top1"] and gate["new"]["top1"] == helps.new_metrics["top1"]
    assert gate["feedback_train_records"] + gate["heldout_records"] == 40

    # Now the serving version knows the marker; feedback that says the opposite must not replace it.
    hurts = rebind_with_gate(sup, home, seed_records, feedback(poison_training=True), **kw)
    assert not hurts.promoted, hurts.reason
    assert (hurts.serving, hurts.version) == ("0002", "0003")
    assert hurts.new_metrics["top1"] < hurts.old_metrics["top1"]
    assert "refused" in hurts.reason
    assert versions.current_version(home) == "0002"
    m3 = read_manifest(home / "versions" / "0003")
    assert m3["status"] == "refused" and m3["gate"]["promoted"] is False
    assert [(v.version, v.status) for v in versions.list_versions(home)] == [
        ("0001", "promoted"), ("0002", "serving"), ("0003", "refused")]

    # The scorer follows the pointer; rollback returns to the previous *served* version.
    scorer = RiskScorer.load(home, supervisor=SupervisorConfig(device="cpu", cache_dir=tmp_path / "c"))
    assert scorer.info.version == "0002" and scorer.model_dir == home / "versions" / "0002"
    assert versions.rollback(home) == "0001"
    assert RiskScorer.load(home, supervisor=SupervisorConfig(device="cpu", cache_dir=tmp_path / "c")
                           ).info.version == "0001"


def test_rebind_refuses_unusable_feedback_and_leaves_no_half_version(sup, tiny_artifact_dir, tmp_path):
    home = tmp_path / "home"
    versions.init_home(home, tiny_artifact_dir)
    with pytest.raises(ValueError, match="no feedback records"):
        rebind_with_gate(sup, home, tiny_records(24), [], progress=False)
    one = feedback(40)
    train, _ = split_feedback(one, 0.3, 0)
    with pytest.raises(ValueError, match="held-out split"):
        rebind_with_gate(sup, home, tiny_records(24), train[:3], progress=False)
    # bind itself fails (no seed data and too few problems for its dev split): no version is left
    with pytest.raises(ValueError, match="both sides of the problem split"):
        rebind_with_gate(sup, home, [], one[:1] + [r for r in one if r not in train][:1],
                         ranker_cfg=RANKER, progress=False)
    assert [v.version for v in versions.list_versions(home)] == ["0001"]


def test_feedback_records_round_trip_through_the_export_schema(tmp_path):
    """The test feedback is valid shared-schema JSONL, like ``ptbot feedback export`` writes."""
    import json

    out = tmp_path / "fb.jsonl"
    out.write_text("".join(json.dumps(r.to_dict()) + "\n" for r in feedback(6)))
    again = load_records([out])
    assert again == feedback(6)


@pytest.mark.parametrize("spelling", ["rebind", "bind"])
def test_cli_rebind_from_the_label_store_then_list_and_rollback(spelling, tiny_artifact_dir, tmp_path):
    """``ptbot rebind --feedback-db`` (or ``ptbot bind --model HOME --feedback-db``): label store ->
    export -> gated bind -> ``model list``."""
    import json as _json

    from click.testing import CliRunner

    from ptbot.cli import cli
    from bot.store import EventIn, LabelStore, ScoredLineIn

    url = f"sqlite:///{tmp_path / 'labels.db'}"
    store = LabelStore(url)
    for n, rec in enumerate(feedback(), 1):  # one PR per file: a flagged line edited by a later push
        head, head2, path = f"{n:040x}", f"{n + 1000:040x}", f"src/mod{n}.py"
        store.save_snapshot("octo/shop", head, path, rec.code)
        store.save_snapshot("octo/shop", head2, path, rec.fixed)
        store.watch_pull_request(1, "octo/shop", n, head2, "developer")
        line = rec.buggy_lines[0]
        store.record_lines([ScoredLineIn(1, "octo/shop", n, head, path, line, MARKER, "c", f"{n:016x}",
                                         "m@0001", 0.5, 0.5, 1)])
        (row,) = [ln for ln in store.lines() if ln.number == n]
        store.upsert_event(EventIn(f"edit:{n}", row.id, "octo/shop", n, "edit", "changed", detail=head2))
    store.close()
    seed = tmp_path / "seed.jsonl"
    seed.write_text("".join(_json.dumps(r.to_dict()) + "\n" for r in tiny_records(24)))

    runner = CliRunner()
    env = {"PTBOT_CACHE_DIR": str(tmp_path / "cache"), "PTBOT_DEVICE": "cpu"}
    home = str(tmp_path / "home")
    assert runner.invoke(cli, ["model", "init", "--home", home, "--from", str(tiny_artifact_dir)],
                         env=env).exit_code == 0
    where = ["--home", home] if spelling == "rebind" else ["--model", home]
    result = runner.invoke(cli, [spelling, str(seed), *where, "--feedback-db", url, "--epochs", "30"],
                           env=env)
    assert result.exit_code == 0, result.output
    assert "feedback: 40 record(s) (40 positive" in result.output
    # stderr (progress bars) is mixed into the runner's output: find the verdict line
    verdict = next((ln.strip() for ln in result.output.splitlines() if "version 0002 (serving now" in ln), "")
    assert verdict.startswith(("PROMOTED version 0002", "REFUSED version 0002")), result.output
    serving = "0002" if verdict.startswith("PROMOTED") else "0001"
    assert versions.current_version(home) == serving
    listing = runner.invoke(cli, ["model", "list", "--home", home], env=env).output.splitlines()
    assert len(listing) == 2 and "gate top1:" in listing[1]
    if serving == "0002":
        result = runner.invoke(cli, ["model", "rollback", "--home", home], env=env)
        assert result.exit_code == 0 and "serving 0001" in result.output
