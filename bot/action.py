"""``ptbot action``: the App's review as one step of a GitHub Actions workflow.

The step reads the pull request named by the workflow's event payload through the REST API (no
checkout, so it is safe under ``pull_request_target``) and runs the App's own pipeline
(``bot.pr_review``: provenance, templates, fingerprints, noise budget) with the workflow token
instead of an installation token. What it leaves behind:

- ``review``: one ``COMMENT`` review on the PR, exactly as the App posts it. When the token is
  read-only (a fork PR under ``pull_request``: GitHub answers 403 "Resource not accessible by
  integration"), the flagged lines become workflow annotations instead and the step summary
  says why.
- ``sarif``: a SARIF 2.1.0 file of every scored line at or above ``min-probability``, for
  ``github/codeql-action/upload-sarif``.
- ``summary``: the check-run summary in ``$GITHUB_STEP_SUMMARY`` (capped at 1 MiB).

Step outputs ``sarif-file`` and ``flagged-lines`` go to ``$GITHUB_OUTPUT``; ``fail-on`` turns a
line at or above a probability into exit code 1. No check run is created: the workflow job is
already a check, and a fork's token could not create one anyway.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from github import GithubException

from analyzer.types import LineScore, Report
from bot import budget
from bot.config import DEFAULT_GITHUB_API_URL, RepoConfig, Settings
from bot.events import PR_ACTIONS
from bot.github import GitHubApp, GitHubToken, PostedReview, ReviewComment
from bot.pr_review import (
    MemoryLedger,
    Outcome,
    prepare,
    publish,
    score,
    select_lines,
)
from bot.provenance import LineProvenance
from bot.render import CheckOutput, Renderer, SummaryTable, line_fingerprints, model_label, pct, reason, risk_band
from bot.report import sarif_log
from bot.review import Scorer
from bot.webhook import job_for_event

log = logging.getLogger(__name__)

OUTPUTS: tuple[str, ...] = ("review", "sarif", "summary")
EVENTS: tuple[str, ...] = ("pull_request", "pull_request_target")
# GitHub aborts the upload of a step summary above 1024k.
STEP_SUMMARY_LIMIT = 1024 * 1024
SUMMARY_ROWS = 25
READ_ONLY_NOTE = (
    "> [!NOTE]\n"
    "> ptbot could not post its review: this workflow's token is read-only (GitHub answered "
    "\"{message}\"): a pull request from a fork under `pull_request`, or a workflow without "
    "`pull-requests: write`. The flagged lines are annotations on this run instead. For a review "
    "on fork pull requests, run ptbot under `pull_request_target` (see docs/action.md).\n\n"
)


# ----- settings ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ActionSettings:
    """One run of the step; ``from_env`` reads the runner's variables and the action's inputs."""

    event_path: Path
    """The webhook payload of the triggering event (``GITHUB_EVENT_PATH``)."""
    repository: str
    """``owner/name`` of the repository the workflow runs in (``GITHUB_REPOSITORY``)."""
    token: str = field(repr=False)
    """Token for the REST API (``GITHUB_TOKEN``; the action passes its ``github-token`` input)."""
    event_name: str = "pull_request"
    """``GITHUB_EVENT_NAME``: ``pull_request`` or ``pull_request_target``."""
    api_url: str = DEFAULT_GITHUB_API_URL
    """REST API root (``GITHUB_API_URL``; ``https://HOST/api/v3`` on GitHub Enterprise Server)."""
    step_summary: Path | None = None
    """Markdown file shown on the run's summary page (``GITHUB_STEP_SUMMARY``)."""
    output_file: Path | None = None
    """Where step outputs are appended as ``name=value`` lines (``GITHUB_OUTPUT``)."""
    sarif_file: Path = Path("ptbot.sarif")
    """Where the SARIF log is written (``INPUT_SARIF_FILE``, else ``$RUNNER_TEMP/ptbot.sarif``)."""
    outputs: tuple[str, ...] = OUTPUTS
    """What to produce, from ``review``, ``sarif``, ``summary`` (``INPUT_OUTPUT``, comma-separated)."""
    fail_on: float | None = None
    """Exit 1 when a scored line's probability is at or above this; None never fails
    (``INPUT_FAIL_ON``: ``never`` or a number from 0 to 1)."""
    mode: str | None = None
    """``ai-only`` or ``all`` over ``.ptbot.toml`` (``INPUT_MODE``); None keeps the repo's policy."""
    top_k: int | None = None
    """Inline comments per review over ``.ptbot.toml`` (``INPUT_TOP_K``); None keeps the repo's."""
    min_probability: float | None = None
    """Absolute comment floor over ``.ptbot.toml`` (``INPUT_MIN_PROBABILITY``), on top of the lift
    rule; None keeps the repo's."""
    model: str = ""
    """Model directory (``INPUT_MODEL``); empty: ``PTBOT_MODEL`` or the built-in model."""

    def __post_init__(self) -> None:
        if self.event_name not in EVENTS:
            raise ValueError(f"ptbot action reviews pull requests: run it on {' or '.join(EVENTS)}, "
                             f"not on {self.event_name!r} (see docs/action.md)")
        owner, _, name = self.repository.partition("/")
        if not owner or not name or "/" in name:
            raise ValueError(f"GITHUB_REPOSITORY must be owner/name, got {self.repository!r}")
        if not self.token:
            raise ValueError("no GitHub token: pass `github-token` to the action (its default is "
                             "${{ github.token }}) or set GITHUB_TOKEN")
        if not self.api_url.startswith(("http://", "https://")):
            raise ValueError(f"GITHUB_API_URL must be an http(s) URL, got {self.api_url!r}")
        if not self.outputs or set(self.outputs) - set(OUTPUTS):
            raise ValueError(f"output must name one or more of {', '.join(OUTPUTS)} "
                             f"(comma-separated), got {','.join(self.outputs)!r}")
        if self.fail_on is not None and not 0.0 <= self.fail_on <= 1.0:
            raise ValueError(f"fail-on must be `never` or a probability from 0 to 1, got {self.fail_on}")
        # The policy inputs are checked by the same rules as .ptbot.toml.
        RepoConfig().with_overrides(self.overrides(), source="action inputs")

    def overrides(self) -> dict[str, Any]:
        """The policy inputs that were set, as ``.ptbot.toml`` keys."""
        values = {"mode": self.mode, "top_k": self.top_k, "min_probability": self.min_probability}
        return {k: v for k, v in values.items() if v is not None}

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> ActionSettings:
        """Build from the runner's ``GITHUB_*`` variables and the action's ``INPUT_*`` ones.

        Empty inputs mean "not set", so ``action.yml`` can default them to "".
        """
        env = {k: v.strip() for k, v in environ.items() if v.strip()}
        missing = [k for k in ("GITHUB_EVENT_PATH", "GITHUB_REPOSITORY") if k not in env]
        if missing:
            raise ValueError(f"{' and '.join(missing)} not set: `ptbot action` runs inside a GitHub "
                             "Actions job (use `ptbot review` on a local checkout)")
        outputs = tuple(s.strip().lower() for s in env.get("INPUT_OUTPUT", ",".join(OUTPUTS)).split(",")
                        if s.strip())
        fail_on = env.get("INPUT_FAIL_ON", "never")
        sarif_dir = Path(env["RUNNER_TEMP"]) if "RUNNER_TEMP" in env else Path(".")

        def optional(name: str, parse: Callable[[str], Any]) -> Any:
            if name not in env:
                return None
            try:
                return parse(env[name])
            except ValueError:
                raise ValueError(f"input {name[6:].lower().replace('_', '-')} must be a "
                                 f"{'whole number' if parse is int else 'number'}, got {env[name]!r}") from None

        return cls(
            event_path=Path(env["GITHUB_EVENT_PATH"]),
            repository=env["GITHUB_REPOSITORY"],
            token=env.get("GITHUB_TOKEN", ""),
            event_name=env.get("GITHUB_EVENT_NAME", "pull_request"),
            api_url=env.get("GITHUB_API_URL", DEFAULT_GITHUB_API_URL).rstrip("/"),
            step_summary=Path(env["GITHUB_STEP_SUMMARY"]) if "GITHUB_STEP_SUMMARY" in env else None,
            output_file=Path(env["GITHUB_OUTPUT"]) if "GITHUB_OUTPUT" in env else None,
            sarif_file=Path(env.get("INPUT_SARIF_FILE", sarif_dir / "ptbot.sarif")),
            outputs=outputs,
            fail_on=None if fail_on.lower() == "never" else optional("INPUT_FAIL_ON", float),
            mode=env.get("INPUT_MODE"),
            top_k=optional("INPUT_TOP_K", int),
            min_probability=optional("INPUT_MIN_PROBABILITY", float),
            model=env.get("INPUT_MODEL", ""),
        )


# ----- the event --------------------------------------------------------------------------------


def read_event(path: Path) -> dict[str, Any]:
    """The event payload at ``GITHUB_EVENT_PATH``; ValueError unless it is a pull request event."""
    try:
        payload = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as e:
        raise ValueError(f"cannot read the event payload GITHUB_EVENT_PATH={path}: {e}") from e
    except json.JSONDecodeError as e:
        raise ValueError(f"the event payload {path} is not JSON: {e}") from e
    if not isinstance(payload, dict) or not isinstance(payload.get("pull_request"), dict):
        raise ValueError(f"the event payload {path} has no pull_request: run ptbot on "
                         f"{' or '.join(EVENTS)} events")
    return payload


def review_job(settings: ActionSettings, payload: dict[str, Any]) -> tuple[Mapping[str, Any] | None, str]:
    """The App's review job for this event (``bot.webhook.job_for_event``), or (None, why)."""
    full_name = (payload.get("repository") or {}).get("full_name", "")
    if full_name.lower() != settings.repository.lower():
        raise ValueError(f"GITHUB_REPOSITORY is {settings.repository} but the event is about "
                         f"{full_name or 'no repository'}")
    if payload.get("action") not in PR_ACTIONS:
        # The workflow's `on:` filter already chose which activity types run ptbot (labeled,
        # edited, ...): review on each of them like on a push.
        payload = {**payload, "action": "synchronize"}
    # Drafts pass here and are decided by .ptbot.toml's review_drafts, as for the App. Workflow
    # payloads carry no App installation; the repository id keeps the job key (and so the
    # review's marker) stable across re-runs of the workflow.
    repo_id = (payload.get("repository") or {}).get("id")
    job, why = job_for_event("pull_request", payload, Settings(review_drafts=True),
                             installation_id=repo_id if isinstance(repo_id, int) and repo_id > 0 else 1)
    return job, why


# ----- the pull request, as the pipeline sees it from a workflow ------------------------------


class WorkflowPullRequest:
    """``bot.pr_review.PullRequestAPI`` for a workflow step.

    Reads and reviews go to GitHub; the action's policy inputs go over ``.ptbot.toml``; check
    runs stay in memory (``check``), because the workflow job is the check.
    """

    def __init__(self, api: Any, overrides: Mapping[str, Any]) -> None:
        self.api = api
        self.overrides = dict(overrides)
        self.check: CheckOutput | None = None

    @property
    def head_sha(self) -> str:
        return self.api.head_sha

    def pull(self, refresh: bool = False) -> Any:
        return self.api.pull(refresh)

    def files(self, refresh: bool = False) -> list[Any]:
        return self.api.files(refresh)

    def file_text(self, path: str, sha: str) -> str:
        return self.api.file_text(path, sha)

    def repo_config(self, defaults: RepoConfig) -> RepoConfig:
        return self.api.repo_config(defaults).with_overrides(self.overrides, source="action inputs")

    def line_provenance(self, ai_labels: Sequence[str]) -> dict[tuple[str, int], LineProvenance]:
        return self.api.line_provenance(ai_labels)

    def posted_fingerprints(self) -> set[str]:
        return self.api.posted_fingerprints()

    def post_review(self, body: str, comments: Sequence[ReviewComment],
                    commit_sha: str | None = None) -> PostedReview:
        return self.api.post_review(body, comments, commit_sha)

    def bot_login(self) -> str:
        return self.api.bot_login()

    def review_threads(self) -> list[Any]:
        return self.api.review_threads()

    def resolve_thread(self, thread_id: str) -> None:
        self.api.resolve_thread(thread_id)

    def review_summaries(self) -> list[Any]:
        return self.api.review_summaries()

    def minimize_comment(self, node_id: str, classifier: str = "OUTDATED") -> None:
        self.api.minimize_comment(node_id, classifier)

    def create_check_run(self, **kwargs: Any) -> int:
        self._keep(kwargs)
        return 0

    def update_check_run(self, run_id: int, **kwargs: Any) -> None:
        self._keep(kwargs)

    def _keep(self, kwargs: Mapping[str, Any]) -> None:
        if kwargs.get("summary"):
            self.check = CheckOutput(kwargs.get("title") or "ptbot", kwargs["summary"])


# ----- workflow commands, outputs and the step summary ----------------------------------------


def escape_data(text: str) -> str:
    """A workflow command's message: ``%``, CR and LF escaped (as @actions/core does)."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text: str) -> str:
    """A workflow command's property value: like data, plus ``:`` and ``,``."""
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


def workflow_command(command: str, message: str, **properties: str | int) -> str:
    """One line such as ``::warning file=a.py,line=3,title=t::message``."""
    props = ",".join(f"{k}={escape_property(str(v))}" for k, v in properties.items())
    return f"::{command}{' ' + props if props else ''}::{escape_data(message)}\n"


def annotation(ln: LineScore, provenance: str, total: int) -> str:
    """A flagged line as an annotation: warning for high risk, notice below."""
    band = risk_band(ln.probability)
    message = (f"{pct(ln.probability)} probability that this line needs a change (rank {ln.rank} "
               f"of {total}, {band} risk): {reason(ln)}. Provenance: {provenance}.")
    return workflow_command("warning" if band == "high" else "notice", message, file=ln.path,
                            line=ln.line, title=f"ptbot: {pct(ln.probability)} risk, rank {ln.rank}")


def cap_utf8(text: str, limit: int = STEP_SUMMARY_LIMIT) -> str:
    """``text`` cut to at most ``limit`` UTF-8 bytes, with a note when it was cut."""
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text
    note = "\n\n_ptbot cut this summary: a step summary may hold at most 1 MiB._\n"
    keep = max(0, limit - len(note.encode("utf-8")))
    return data[:keep].decode("utf-8", errors="ignore") + note


def append_summary(path: Path, markdown: str) -> None:
    """Append to the step summary, within what the step has left of its 1 MiB."""
    used = path.stat().st_size if path.exists() else 0
    with path.open("a", encoding="utf-8") as f:
        f.write(cap_utf8(markdown, max(0, STEP_SUMMARY_LIMIT - used)))


def write_outputs(path: Path, values: Mapping[str, str]) -> None:
    """Append step outputs as ``name=value`` lines (values are single lines)."""
    with path.open("a", encoding="utf-8") as f:
        for name, value in values.items():
            if "\n" in value or "\r" in value:
                raise ValueError(f"step output {name} must be one line, got {value!r}")
            f.write(f"{name}={value}\n")


# ----- the step ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ActionResult:
    """What one run of the step did."""

    status: str
    """The pipeline's ``Outcome.status``, or ``read_only`` when the review fell back to annotations."""
    detail: str
    exit_code: int
    """1 when ``fail-on`` was reached, else 0."""
    flagged: int = 0
    """Lines chosen under the noise budget (top-k, min-probability, per-file cap)."""
    review_id: int | None = None
    annotations: int = 0
    """Workflow annotations printed in place of a review."""
    sarif_file: Path | None = None


def run_action(settings: ActionSettings, load_scorer: Callable[[], Scorer], *,
               defaults: RepoConfig | None = None, renderer: Renderer | None = None,
               github: GitHubApp | None = None, stdout: TextIO | None = None) -> ActionResult:
    """Review the event's pull request; workflow commands go to ``stdout``, files as configured.

    ``load_scorer`` is called only when there is something to score (loading the model takes
    seconds to minutes). ``defaults`` is the policy under ``.ptbot.toml`` (the deployment's
    ``Settings.repo_defaults``); ``github`` replaces the client built from the token.
    """
    stdout = stdout or sys.stdout
    renderer = renderer or Renderer()
    job, why = review_job(settings, read_event(settings.event_path))
    if job is None:
        return _unscored(settings, Outcome("ignored", why), None)
    client = github or GitHubToken(settings.token, settings.api_url)
    api = WorkflowPullRequest(client.pull_request(job["installation_id"], job["owner"], job["repo"],
                                                  int(job["number"])), settings.overrides())
    prepared = prepare(job, api, defaults or RepoConfig(), MemoryLedger(), renderer)
    if isinstance(prepared, Outcome):
        if prepared.status == "config_error":
            stdout.write(workflow_command("warning", prepared.detail, title="ptbot: .ptbot.toml is invalid"))
        return _unscored(settings, prepared, api.check)

    scored = score(prepared, load_scorer())
    report, policy = scored.report, prepared.policy
    texts = {r.path: r.text for r in prepared.requests}
    flagged = select_lines(report, policy, set(), line_fingerprints(report.lines, texts))
    note, annotations = "", 0
    status, detail, review_id = "check_only", "review not requested (output)", None
    if "review" in settings.outputs:
        try:
            outcome = publish(scored, api, renderer, MemoryLedger(), owner="action")
            status, detail, review_id = outcome.status, outcome.detail, outcome.review_id
        except GithubException as e:
            if e.status != 403:
                raise
            message = (e.data.get("message") if isinstance(e.data, dict) else None) or "403 Forbidden"
            log.warning("cannot post the review (%s): writing annotations instead", message)
            for ln in flagged:
                why_ai = prepared.provenance.get(ln.path, {}).get(ln.line, "unknown")
                stdout.write(annotation(ln, why_ai, len(report.lines)))
            annotations = len(flagged)
            note = READ_ONLY_NOTE.format(message=message)
            status, detail = "read_only", f"read-only token: {annotations} annotation(s) instead of a review"

    sarif_path = None
    if "sarif" in settings.outputs:
        flags = budget.stands_out(policy, [ln.probability for ln in report.lines])
        shown = tuple(ln for ln, flagged in zip(report.lines, flags) if flagged)
        doc = sarif_log(Report(report.model, shown, report.skipped), files=texts)
        settings.sarif_file.parent.mkdir(parents=True, exist_ok=True)
        settings.sarif_file.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        sarif_path = settings.sarif_file
    if settings.step_summary is not None and ("summary" in settings.outputs or note):
        check = renderer.check_summary(SummaryTable(report, scored.coverage, model_label(report.model),
                                                    head_sha=str(job["head_sha"]), max_rows=SUMMARY_ROWS))
        append_summary(settings.step_summary, f"### {check.title}\n\n{note}{check.summary}\n")
    if settings.output_file is not None:
        write_outputs(settings.output_file, {"sarif-file": str(sarif_path or ""),
                                             "flagged-lines": str(len(flagged))})
    exit_code = _fail_on(settings.fail_on, report, stdout)
    log.info("ptbot action: %s (%s)", status, detail)
    return ActionResult(status, detail, exit_code, len(flagged), review_id, annotations, sarif_path)


def _unscored(settings: ActionSettings, outcome: Outcome, check: CheckOutput | None) -> ActionResult:
    """End a run that scored nothing: the reason in the summary, empty outputs, exit 0."""
    if settings.step_summary is not None and "summary" in settings.outputs:
        title, text = (check.title, check.summary) if check else \
            ("ptbot", f"ptbot did not review this pull request: {outcome.detail}.\n")
        append_summary(settings.step_summary, f"### {title}\n\n{text}\n")
    if settings.output_file is not None:
        write_outputs(settings.output_file, {"sarif-file": "", "flagged-lines": "0"})
    log.info("ptbot action: %s (%s)", outcome.status, outcome.detail)
    return ActionResult(outcome.status, outcome.detail, 0)


def _fail_on(threshold: float | None, report: Report, stdout: TextIO) -> int:
    """1 (and an error annotation naming the riskiest line) when a line reaches ``threshold``."""
    if threshold is None:
        return 0
    over = [ln for ln in report.lines if ln.probability >= threshold]
    if not over:
        return 0
    top = min(over, key=lambda ln: ln.rank)
    stdout.write(workflow_command(
        "error", f"{len(over)} line(s) at or above fail-on {threshold:g}; the riskiest is "
                 f"{top.path}:{top.line} at {pct(top.probability)}", title="ptbot fail-on"))
    return 1
