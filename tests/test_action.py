"""``ptbot action``: the GitHub Actions step, run against the fake GitHub server.

The event payloads are the real recorded ``pull_request`` webhooks (unmodified); the fake server
holds the pull request they name (Codertocat/Hello-World#2 at their head SHA). The workflow token
is a plain token the fake accepts; a read-only token is GitHub's 403 "Resource not accessible by
integration" on the review POST.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from conftest import AI_TRAILER, FakeScorer, put_pull_request

from bot.action import (
    STEP_SUMMARY_LIMIT,
    ActionResult,
    ActionSettings,
    append_summary,
    cap_utf8,
    escape_data,
    escape_property,
    run_action,
    workflow_command,
)
from bot.render import parse_marker
from ptbot.cli import cli

ROOT = Path(__file__).resolve().parents[1]
WEBHOOKS = ROOT / "tests" / "fixtures" / "github" / "webhooks" / "pull_request"
OPENED = WEBHOOKS / "opened.payload.json"
SYNCHRONIZE = WEBHOOKS / "synchronize.payload.json"
EVENT = json.loads(OPENED.read_text())
REPO = EVENT["repository"]["full_name"]  # Codertocat/Hello-World
OWNER, NAME = REPO.split("/")
NUMBER = EVENT["pull_request"]["number"]
HEAD = EVENT["pull_request"]["head"]["sha"]
TOKEN = "ghs_workflowtoken"
READ_ONLY = {"message": "Resource not accessible by integration",
             "documentation_url": "https://docs.github.com/rest/pulls/reviews#create-a-review-for-a-pull-request"}

RISKY = {"RISK-A": 0.9, "RISK-B": 0.8, "RISK-C": 0.3}
AI_CALC = ("def total(items):\n"
           "    result = 0\n"
           "    for item in items:\n"
           "        result += item.price  # RISK-A\n"
           "    return result / len(items)  # RISK-B\n"
           "\n"
           "def label(item):\n"
           "    return f'{item.name}: {item.price}'  # RISK-C\n")


@pytest.fixture
def gh(fake_github):
    """The fake GitHub with the event's pull request: one commit co-authored by an agent."""
    fake_github.tokens[TOKEN] = 0  # a workflow token: no App, no installation
    put_pull_request(fake_github, NUMBER, HEAD, [("c1" * 20, f"Add total\n\n{AI_TRAILER}",
                                                  {"src/calc.py": AI_CALC})], owner=OWNER, name=NAME)
    return fake_github


def settings_for(fake, tmp_path: Path, event: Path = OPENED, **kw) -> ActionSettings:
    return ActionSettings(event_path=event, repository=REPO, token=TOKEN, api_url=fake.base_url,
                          step_summary=tmp_path / "step_summary.md", output_file=tmp_path / "github_output",
                          sarif_file=tmp_path / "out" / "ptbot.sarif", **kw)


def run(settings: ActionSettings, scorer: FakeScorer | None = None) -> tuple[ActionResult, str]:
    out = io.StringIO()
    result = run_action(settings, lambda: scorer or FakeScorer(RISKY), stdout=out)
    return result, out.getvalue()


def step_outputs(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines())


# ----- write token: the App's review ------------------------------------------------------------


def test_write_token_posts_one_review_like_the_app(gh, tmp_path):
    result, stdout = run(settings_for(gh, tmp_path))

    assert (result.status, result.exit_code, result.flagged, result.annotations) == ("posted", 0, 2, 0)
    assert len(gh.reviews) == 1 and result.review_id == gh.reviews[0]["id"]
    assert gh.reviews[0]["state"] == "COMMENTED" and gh.reviews[0]["commit_id"] == HEAD
    # Default noise budget: lines at or above 50%, best first; RISK-C (30%) is left out.
    assert [(c["path"], c["line"]) for c in gh.review_comments] == [("src/calc.py", 4), ("src/calc.py", 5)]
    assert "AI" in gh.review_comments[0]["body"] or "Claude" in gh.review_comments[0]["body"]
    assert "::warning" not in stdout and "::error" not in stdout
    # The workflow token, never an App JWT; and no check run (the workflow job is the check).
    assert not gh.requests_to("POST", r"/app/installations/")
    assert not gh.requests_to("POST", r"/check-runs")
    assert {r.headers.get("Authorization") for r in gh.requests} == {f"token {TOKEN}"}
    outputs = step_outputs(tmp_path / "github_output")
    assert outputs == {"sarif-file": str(tmp_path / "out" / "ptbot.sarif"), "flagged-lines": "2"}
    summary = (tmp_path / "step_summary.md").read_text()
    assert summary.startswith("### ptbot: 7 lines ranked, 2 high risk, top 90%")
    assert "read-only" not in summary


def test_a_rerun_on_the_same_head_posts_nothing_new(gh, tmp_path):
    first, _ = run(settings_for(gh, tmp_path))
    second, _ = run(settings_for(gh, tmp_path, event=SYNCHRONIZE))

    assert first.status == "posted" and second.status == "check_only"
    assert len(gh.reviews) == 1 and len(gh.review_comments) == 2
    assert second.flagged == 2  # still the lines this head flags, for the step output
    assert (tmp_path / "github_output").read_text().count("flagged-lines=2") == 2


# ----- read-only token: annotations and the step summary -------------------------------------


def test_read_only_token_falls_back_to_annotations_and_summary(gh, tmp_path, sarif_validator):
    gh.fail_next("POST", rf"/pulls/{NUMBER}/reviews$", 403, body=READ_ONLY)
    result, stdout = run(settings_for(gh, tmp_path))

    assert (result.status, result.exit_code, result.annotations, result.flagged) == ("read_only", 0, 2, 2)
    assert gh.reviews == [] and gh.review_comments == []
    lines = stdout.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("::warning file=src/calc.py,line=4,title=ptbot%3A 90%25 risk%2C rank 1::"
                               "90%25 probability that this line needs a change (rank 1 of 7, high risk)")
    assert "Provenance: " in lines[0] and "Claude" in lines[0]
    assert lines[1].startswith("::warning file=src/calc.py,line=5,")
    summary = (tmp_path / "step_summary.md").read_text()
    assert "Resource not accessible by integration" in summary and "pull_request_target" in summary
    assert "ptbot: 7 lines ranked" in summary and "src/calc.py" in summary
    sarif = json.loads((tmp_path / "out" / "ptbot.sarif").read_text())
    sarif_validator.validate(sarif)
    assert step_outputs(tmp_path / "github_output")["flagged-lines"] == "2"


def test_read_only_token_writes_the_summary_even_when_not_asked_for(gh, tmp_path):
    gh.fail_next("POST", rf"/pulls/{NUMBER}/reviews$", 403, body=READ_ONLY)
    result, stdout = run(settings_for(gh, tmp_path, outputs=("review",)))

    assert result.status == "read_only" and stdout.count("::warning") == 2
    assert "read-only" in (tmp_path / "step_summary.md").read_text()
    assert step_outputs(tmp_path / "github_output")["sarif-file"] == ""
    assert not (tmp_path / "out" / "ptbot.sarif").exists()


def test_other_errors_while_posting_are_not_mistaken_for_a_read_only_token(gh, tmp_path):
    from github import GithubException

    gh.fail_next("POST", rf"/pulls/{NUMBER}/reviews$", 404, body={"message": "Not Found"})
    with pytest.raises(GithubException) as e:
        run(settings_for(gh, tmp_path))
    assert e.value.status == 404


# ----- SARIF ----------------------------------------------------------------------------------


def test_sarif_validates_and_shares_the_review_fingerprints(gh, tmp_path, sarif_validator):
    result, _ = run(settings_for(gh, tmp_path, min_probability=0.25, top_k=1))

    doc = json.loads(result.sarif_file.read_text())
    errors = sorted(sarif_validator.iter_errors(doc), key=str)
    assert not errors, "\n".join(e.message for e in errors[:5])
    results = doc["runs"][0]["results"]
    # Every line ptbot flags, not only the one commented on: at or above min-probability and
    # standing out from the change (RISK-C's 30% is under 1.5x the rest of the change's 25%).
    assert [c["line"] for c in gh.review_comments] == [4]
    assert [r["locations"][0]["physicalLocation"]["region"]["startLine"] for r in results] == [4, 5]
    assert {r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] for r in results} == {"src/calc.py"}
    # The same content fingerprints as the review's markers, so both surfaces name a line alike.
    posted = {(c["line"], parse_marker(c["body"])["fp"]) for c in gh.review_comments}
    sarif_fps = {(r["locations"][0]["physicalLocation"]["region"]["startLine"],
                  r["partialFingerprints"]["primaryLocationLineHash"]) for r in results}
    assert posted and posted <= sarif_fps


def test_sarif_only_output_posts_nothing(gh, tmp_path):
    result, _ = run(settings_for(gh, tmp_path, outputs=("sarif",)))

    assert gh.reviews == [] and result.sarif_file.exists()
    assert not (tmp_path / "step_summary.md").exists()
    assert step_outputs(tmp_path / "github_output")["flagged-lines"] == "2"


# ----- fail-on and policy inputs ---------------------------------------------------------------


@pytest.mark.parametrize(("fail_on", "code"), [(None, 0), (0.95, 0), (0.9, 1), (0.5, 1)])
def test_fail_on_sets_the_exit_code(gh, tmp_path, fail_on, code):
    result, stdout = run(settings_for(gh, tmp_path, fail_on=fail_on))

    assert result.exit_code == code
    assert result.status == "posted"  # the review is posted either way
    if code:
        assert re.search(r"^::error title=ptbot fail-on::\d line\(s\) at or above fail-on "
                         r".*src/calc.py:4 at 90%25$", stdout, re.M)
    else:
        assert "::error" not in stdout


def test_fail_on_applies_with_a_read_only_token_too(gh, tmp_path):
    gh.fail_next("POST", rf"/pulls/{NUMBER}/reviews$", 403, body=READ_ONLY)
    result, _ = run(settings_for(gh, tmp_path, fail_on=0.8))
    assert (result.status, result.exit_code) == ("read_only", 1)


def test_inputs_override_the_repository_config(gh, tmp_path):
    gh.repos[REPO].contents[("main", ".ptbot.toml")] = "min_probability = 0.95\ntop_k = 1\n"
    result, _ = run(settings_for(gh, tmp_path, min_probability=0.75))

    # min-probability from the input (0.75) wins over the file's 0.95; top_k = 1 from the file.
    assert result.flagged == 1 and [c["line"] for c in gh.review_comments] == [4]


def test_human_only_pull_request_ends_without_loading_the_model(fake_github, tmp_path):
    fake_github.tokens[TOKEN] = 0
    put_pull_request(fake_github, NUMBER, HEAD, [("d1" * 20, "Add util", {"src/util.py": "X = 1  # RISK-A\n"})],
                     owner=OWNER, name=NAME)

    def no_model():
        raise AssertionError("the model must not be loaded when there is nothing to score")

    out = io.StringIO()
    result = run_action(settings_for(fake_github, tmp_path, fail_on=0.1), no_model, stdout=out)

    assert (result.status, result.exit_code, result.flagged) == ("human_only", 0, 0)
    assert fake_github.reviews == []
    assert "no AI-authored lines" in (tmp_path / "step_summary.md").read_text()
    assert step_outputs(tmp_path / "github_output") == {"sarif-file": "", "flagged-lines": "0"}


def test_mode_all_input_reviews_human_lines(fake_github, tmp_path):
    fake_github.tokens[TOKEN] = 0
    put_pull_request(fake_github, NUMBER, HEAD, [("d1" * 20, "Add util", {"src/util.py": "X = 1  # RISK-A\n"})],
                     owner=OWNER, name=NAME)
    result, _ = run(settings_for(fake_github, tmp_path, mode="all"))
    assert result.status == "posted" and [c["line"] for c in fake_github.review_comments] == [1]


# ----- the CLI command, with the real payload files ---------------------------------------------


def action_env(fake, tmp_path: Path, event: Path, **extra: str) -> dict[str, str]:
    return {"GITHUB_EVENT_NAME": "pull_request", "GITHUB_EVENT_PATH": str(event), "GITHUB_REPOSITORY": REPO,
            "GITHUB_TOKEN": TOKEN, "GITHUB_API_URL": fake.base_url,
            "GITHUB_STEP_SUMMARY": str(tmp_path / "step_summary.md"),
            "GITHUB_OUTPUT": str(tmp_path / "github_output"), "RUNNER_TEMP": str(tmp_path),
            "INPUT_MODE": "", "INPUT_TOP_K": "", "INPUT_MIN_PROBABILITY": "", "INPUT_MODEL": "",
            "INPUT_OUTPUT": "review,sarif,summary", "INPUT_FAIL_ON": "never", **extra}


def test_cli_action_on_a_human_only_pull_request(fake_github, tmp_path):
    fake_github.tokens[TOKEN] = 0
    put_pull_request(fake_github, NUMBER, HEAD, [("d1" * 20, "Add util", {"src/util.py": "X = 1\n"})],
                     owner=OWNER, name=NAME)
    res = CliRunner().invoke(cli, ["action"], env=action_env(fake_github, tmp_path, SYNCHRONIZE))

    assert res.exit_code == 0, res.output
    assert step_outputs(tmp_path / "github_output") == {"sarif-file": "", "flagged-lines": "0"}
    assert "no AI-authored lines" in (tmp_path / "step_summary.md").read_text()


def test_cli_action_ignores_a_closed_pull_request(fake_github, tmp_path):
    res = CliRunner().invoke(cli, ["action"], env=action_env(fake_github, tmp_path, WEBHOOKS / "closed.payload.json"))
    assert res.exit_code == 0, res.output
    assert fake_github.requests == []  # decided from the payload alone


@pytest.mark.parametrize(("extra", "message"), [
    ({"GITHUB_EVENT_NAME": "push"}, "run it on pull_request or pull_request_target"),
    ({"GITHUB_REPOSITORY": "octo/other"}, "GITHUB_REPOSITORY is octo/other but the event is about"),
    ({"INPUT_FAIL_ON": "high"}, "input fail-on must be a number"),
    ({"INPUT_OUTPUT": "review,comment"}, "output must name one or more of review, sarif, summary"),
    ({"INPUT_TOP_K": "99"}, "action inputs: top_k must be an integer from 0 to 50"),
    ({"GITHUB_TOKEN": ""}, "no GitHub token"),
])
def test_cli_action_explains_bad_settings(fake_github, tmp_path, extra, message):
    res = CliRunner().invoke(cli, ["action"], env=action_env(fake_github, tmp_path, OPENED, **extra))
    assert res.exit_code == 1
    assert message in res.output


def test_cli_action_outside_a_workflow(tmp_path):
    res = CliRunner().invoke(cli, ["action"], env={"GITHUB_EVENT_PATH": "", "GITHUB_REPOSITORY": ""})
    assert res.exit_code == 1 and "runs inside a GitHub Actions job" in res.output


# ----- settings from the environment ------------------------------------------------------------


def test_settings_from_env_reads_inputs_and_treats_empty_as_unset(tmp_path):
    base = {"GITHUB_EVENT_PATH": str(OPENED), "GITHUB_REPOSITORY": REPO, "GITHUB_TOKEN": TOKEN,
            "RUNNER_TEMP": str(tmp_path)}
    s = ActionSettings.from_env({**base, "INPUT_MODE": "", "INPUT_TOP_K": " ", "INPUT_FAIL_ON": "never"})
    assert (s.mode, s.top_k, s.min_probability, s.fail_on) == (None, None, None, None)
    assert s.outputs == ("review", "sarif", "summary") and s.overrides() == {}
    assert s.sarif_file == tmp_path / "ptbot.sarif" and s.api_url == "https://api.github.com"
    assert TOKEN not in repr(s)

    s = ActionSettings.from_env({**base, "INPUT_MODE": "all", "INPUT_TOP_K": "3", "INPUT_MIN_PROBABILITY": "0.7",
                                 "INPUT_FAIL_ON": "0.9", "INPUT_OUTPUT": "SARIF, summary",
                                 "GITHUB_EVENT_NAME": "pull_request_target",
                                 "GITHUB_API_URL": "https://ghe.example.com/api/v3/"})
    assert s.overrides() == {"mode": "all", "top_k": 3, "min_probability": 0.7}
    assert (s.fail_on, s.outputs, s.event_name) == (0.9, ("sarif", "summary"), "pull_request_target")
    assert s.api_url == "https://ghe.example.com/api/v3"

    with pytest.raises(ValueError, match="fail-on must be `never` or a probability from 0 to 1"):
        ActionSettings.from_env({**base, "INPUT_FAIL_ON": "1.5"})
    with pytest.raises(ValueError, match="mode must be one of ai-only, all"):
        ActionSettings.from_env({**base, "INPUT_MODE": "everything"})


# ----- workflow commands and the step summary ---------------------------------------------------


def test_workflow_command_escaping():
    assert escape_data("50% done\r\nnext: a,b") == "50%25 done%0D%0Anext: a,b"
    assert escape_property("50% done\r\nnext: a,b") == "50%25 done%0D%0Anext%3A a%2Cb"
    line = workflow_command("warning", "line 1\nline 2: 100%", file="src/a,b:c.py", line=7, title="t: x")
    assert line == "::warning file=src/a%2Cb%3Ac.py,line=7,title=t%3A x::line 1%0Aline 2: 100%25\n"
    assert workflow_command("error", "boom") == "::error::boom\n"


def test_step_summary_is_capped_at_one_mebibyte(tmp_path):
    text = "é" * STEP_SUMMARY_LIMIT  # 2 MiB of UTF-8
    capped = cap_utf8(text)
    assert len(capped.encode("utf-8")) <= STEP_SUMMARY_LIMIT
    assert capped.endswith("at most 1 MiB._\n") and capped.startswith("éé")
    assert cap_utf8("short") == "short"

    summary = tmp_path / "summary.md"
    summary.write_text("x" * (STEP_SUMMARY_LIMIT - 100))  # an earlier writer used most of it
    append_summary(summary, "y" * 1000)
    assert summary.stat().st_size <= STEP_SUMMARY_LIMIT


# ----- action.yml -------------------------------------------------------------------------------


def test_action_yml_declares_the_inputs_outputs_and_steps():
    meta = yaml.safe_load((ROOT / "action.yml").read_text())

    assert set(meta["inputs"]) == {"github-token", "mode", "top-k", "min-probability", "model", "output",
                                   "fail-on"}
    assert meta["inputs"]["github-token"]["default"] == "${{ github.token }}"
    assert meta["inputs"]["fail-on"]["default"] == "never"
    assert meta["inputs"]["output"]["default"] == "review,sarif,summary"
    assert set(meta["outputs"]) == {"sarif-file", "flagged-lines"}
    assert meta["outputs"]["sarif-file"]["value"] == "${{ steps.ptbot.outputs.sarif-file }}"
    assert meta["runs"]["using"] == "composite"
    steps = meta["runs"]["steps"]
    cache = next(s for s in steps if s.get("uses", "").startswith("actions/cache@"))
    assert cache["with"]["path"] == "~/.cache/ptbot" and "steps.version.outputs.version" in cache["with"]["key"]
    install = next(s for s in steps if "pip install" in s.get("run", ""))["run"]
    assert "--index-url https://download.pytorch.org/whl/cpu torch==2.13.0" in install
    assert '"$GITHUB_ACTION_PATH"' in install
    assert install.index("torch==2.13.0") < install.index('"$GITHUB_ACTION_PATH"')
    run_step = next(s for s in steps if s.get("id") == "ptbot")
    assert run_step["run"].strip().endswith("ptbot\" action")
    # Every input reaches the command, under the names ActionSettings.from_env reads.
    env = run_step["env"]
    assert env["GITHUB_TOKEN"] == "${{ inputs.github-token }}"
    for name in ("mode", "top-k", "min-probability", "model", "output", "fail-on"):
        assert env["INPUT_" + name.upper().replace("-", "_")] == "${{ inputs.%s }}" % name


def test_an_invalid_ptbot_toml_is_a_visible_warning_not_a_failure(gh, tmp_path):
    gh.repos[REPO].contents[("main", ".ptbot.toml")] = "top_k = 'many'\n"
    result, stdout = run(settings_for(gh, tmp_path, fail_on=0.1))

    assert (result.status, result.exit_code) == ("config_error", 0) and gh.reviews == []
    assert stdout.startswith("::warning title=ptbot%3A .ptbot.toml is invalid::.ptbot.toml: top_k must be")
    assert "Fix `.ptbot.toml` on the default branch" in (tmp_path / "step_summary.md").read_text()


def test_cli_action_with_a_real_model_posts_a_review(gh, tmp_path, tiny_artifact_dir, sarif_validator):
    """The whole command: the lazily loaded RiskScorer (tiny trained model), the real payload."""
    # No floor and no lift rule (the latter from .ptbot.toml: the action has no input for it).
    gh.repos[REPO].contents[("main", ".ptbot.toml")] = "min_lift = 0\n"
    env = action_env(gh, tmp_path, OPENED, INPUT_MODEL=str(tiny_artifact_dir), INPUT_MIN_PROBABILITY="0",
                     INPUT_TOP_K="2", PTBOT_CACHE_DIR=str(tmp_path / "cache"), PTBOT_DEVICE="cpu")
    res = CliRunner().invoke(cli, ["action"], env=env)

    assert res.exit_code == 0, res.output
    assert len(gh.reviews) == 1 and len(gh.review_comments) == 2
    outputs = step_outputs(tmp_path / "github_output")
    assert outputs["flagged-lines"] == "2" and outputs["sarif-file"] == str(tmp_path / "ptbot.sarif")
    doc = json.loads(Path(outputs["sarif-file"]).read_text())
    sarif_validator.validate(doc)
    assert len(doc["runs"][0]["results"]) == 7  # every scored line: no floor, no lift rule
