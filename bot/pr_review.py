"""One pull request, one review: the GitHub App's pipeline from a webhook job to what gets posted.

Three stages, so the expensive one can run on a GPU worker while GitHub I/O stays on CPU workers
(``workers.tasks`` runs each stage as a Celery task; ``run_review`` chains them in-process):

1. ``prepare``: refresh the PR (a newer head supersedes this job), read ``.ptbot.toml`` from the
   default branch, open an ``in_progress`` check run, attribute every added line to a commit and
   decide which are AI-authored, and plan score requests (whole file text at the head SHA).
2. ``score``: the scorer ranks the planned lines (``bot.review.review_plan``, as every surface does).
3. ``publish``: under a lock on the job key, skip what was already posted (content fingerprints
   in ptbot's own comments, and the review's own marker), pick the lines the comment budget
   allows (``bot.budget``: lines that stand out from the change's own base rate, as many as its
   size earns, at most ``per_file_cap`` per file), post ONE ``COMMENT`` review,
   complete the neutral check run with the same summary, then resolve ptbot's stale threads and
   minimise its replaced summaries from earlier heads (``bot.cleanup``; never deletes).

Idempotency: the job key is (installation, repo, PR, head SHA, model
version). A finished key is remembered in the ``ReviewLedger``; a review carries a marker whose
fingerprint is derived from the key, so a worker killed after posting but before recording it
finds its own review on the next delivery instead of posting again.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from github import GithubException

from analyzer.languages import language_for_path
from analyzer.types import FileDiff, LineScore, Report, ScoreRequest, Skipped
from bot import budget
from bot.cleanup import ReviewSummary, ReviewThread, clean_up
from bot.config import RepoConfig
from bot.github import PostedReview, ReviewComment
from bot.provenance import LineProvenance
from bot.render import Coverage, Renderer, SummaryTable, line_fingerprints, marker, model_label
from bot.review import Plan, ReviewLimits, Scorer, plan_coverage, plan_requests, review_plan

log = logging.getLogger(__name__)

# How long a job key stays locked by one worker: above the Celery hard time limit, so a lock
# outlives the task holding it only when the worker died (and then its own redelivery, which
# carries the same owner id, takes the lock over).
DEFAULT_LOCK_SECONDS = 15 * 60
DONE_TTL_SECONDS = 30 * 24 * 3600
REVIEW_KINDS = ("review", "rescore")

Status = Literal["posted", "check_only", "human_only", "nothing_to_score", "superseded",
                 "already_done", "busy", "config_error", "ignored"]


class PullRequestAPI(Protocol):
    """What the pipeline needs from one pull request (``bot.github.GitHubPullRequest``)."""

    @property
    def head_sha(self) -> str: ...

    def pull(self, refresh: bool = False) -> Any: ...

    def files(self, refresh: bool = False) -> list[FileDiff]: ...

    def file_text(self, path: str, sha: str) -> str: ...

    def repo_config(self, defaults: RepoConfig) -> RepoConfig: ...

    def line_provenance(self, ai_labels: Sequence[str]) -> dict[tuple[str, int], LineProvenance]: ...

    def posted_fingerprints(self) -> set[str]: ...

    def post_review(self, body: str, comments: Sequence[ReviewComment],
                    commit_sha: str | None = None) -> PostedReview: ...

    def create_check_run(self, **kwargs: Any) -> int: ...

    def update_check_run(self, run_id: int, **kwargs: Any) -> None: ...

    # Cleanup of ptbot's own earlier output (``bot.cleanup``); failures there never fail a review.

    def bot_login(self) -> str: ...

    def review_threads(self) -> list[ReviewThread]: ...

    def resolve_thread(self, thread_id: str) -> None: ...

    def review_summaries(self) -> list[ReviewSummary]: ...

    def minimize_comment(self, node_id: str, classifier: str = "OUTDATED") -> None: ...


class FeedbackSink(Protocol):
    """Where scored lines and reviewer feedback live (``bot.feedback.StoreFeedback``); optional."""

    def suppressed(self, repo: str, number: int) -> set[str]:
        """Fingerprints of the PR that reviewers refused (never posted again)."""
        ...

    def record(self, key: JobKey, scored: Scored, fingerprints: Mapping[tuple[str, int], str],
               posted: Sequence[tuple[str, int]]) -> None:
        """Store every scored line of ``key``; ``posted`` are the lines commented on inline."""
        ...


# ----- job keys and the ledger ----------------------------------------------------------------


@dataclass(frozen=True)
class JobKey:
    """The identity of one piece of review work; two deliveries with equal keys are one job."""

    installation_id: int
    repo: str
    """``owner/name``."""
    number: int
    head_sha: str
    model_version: str

    @property
    def pull_request(self) -> str:
        """The PR this work belongs to, whatever its head: ``777:octo/shop#7``."""
        return f"{self.installation_id}:{self.repo}#{self.number}"

    def __str__(self) -> str:
        return f"{self.pull_request}@{self.head_sha}:{self.model_version}"

    @property
    def check_run_key(self) -> str:
        """Where the ledger keeps this head's check run: one run per PR head, whatever the model."""
        return f"{self.pull_request}@{self.head_sha}"

    def review_fingerprint(self) -> str:
        """The ``fp`` in the marker of the review posted for this key (16 hex digits)."""
        return hashlib.sha256(f"review\0{self}".encode()).hexdigest()[:16]


def job_key(job: Mapping[str, Any], model_version: str) -> JobKey:
    """The key of a review job dict (as ``bot.webhook.job_for_event`` builds it)."""
    missing = [k for k in ("installation_id", "owner", "repo", "number", "head_sha") if not job.get(k)]
    if missing:
        raise ValueError(f"review job lacks {', '.join(missing)}: it must come from a pull_request "
                         "webhook that carries installation.id (install the App, not a repo webhook)")
    return JobKey(int(job["installation_id"]), f"{job['owner']}/{job['repo']}", int(job["number"]),
                  str(job["head_sha"]), model_version)


class ReviewLedger(Protocol):
    """Shared memory of review work: locks on job keys, finished keys, check runs, deliveries."""

    def claim(self, key: str, owner: str, ttl: int = DEFAULT_LOCK_SECONDS) -> bool:
        """Lock ``key`` for ``owner``; True if free or already held by the same owner."""
        ...

    def release(self, key: str, owner: str) -> None:
        """Unlock ``key`` if ``owner`` holds it."""
        ...

    def is_done(self, key: str) -> bool: ...

    def mark_done(self, key: str, ttl: int = DONE_TTL_SECONDS) -> None: ...

    def check_run(self, key: str) -> int | None:
        """The check run opened for ``key``, if any."""
        ...

    def remember_check_run(self, key: str, run_id: int) -> None: ...

    def count_delivery(self, task_id: str) -> int:
        """Count one more delivery of a task; returns how many there have been."""
        ...


class MemoryLedger:
    """A ``ReviewLedger`` for one process (``ptbot serve --eager`` and tests)."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[str, float]] = {}
        self._done: set[str] = set()
        self._runs: dict[str, int] = {}
        self._deliveries: dict[str, int] = {}
        self._lock = threading.Lock()

    def claim(self, key: str, owner: str, ttl: int = DEFAULT_LOCK_SECONDS) -> bool:
        with self._lock:
            held = self._locks.get(key)
            if held and held[0] != owner and held[1] > time.monotonic():
                return False
            self._locks[key] = (owner, time.monotonic() + ttl)
            return True

    def release(self, key: str, owner: str) -> None:
        with self._lock:
            if self._locks.get(key, ("",))[0] == owner:
                del self._locks[key]

    def is_done(self, key: str) -> bool:
        return key in self._done

    def mark_done(self, key: str, ttl: int = DONE_TTL_SECONDS) -> None:
        self._done.add(key)

    def check_run(self, key: str) -> int | None:
        return self._runs.get(key)

    def remember_check_run(self, key: str, run_id: int) -> None:
        self._runs[key] = run_id

    def count_delivery(self, task_id: str) -> int:
        with self._lock:
            self._deliveries[task_id] = self._deliveries.get(task_id, 0) + 1
            return self._deliveries[task_id]


class RedisLedger:
    """A ``ReviewLedger`` in Redis, shared by every worker (keys under ``prefix``)."""

    # Compare-and-set in one round trip: take the lock if free or already ours.
    _CLAIM = ("local v = redis.call('GET', KEYS[1]) "
              "if v == false or v == ARGV[1] then "
              "redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2]) return 1 end return 0")
    _RELEASE = ("if redis.call('GET', KEYS[1]) == ARGV[1] then "
                "return redis.call('DEL', KEYS[1]) end return 0")

    def __init__(self, client: Any, prefix: str = "ptbot:") -> None:
        self.client, self.prefix = client, prefix

    @classmethod
    def from_url(cls, url: str, prefix: str = "ptbot:") -> RedisLedger:
        import redis

        return cls(redis.Redis.from_url(url, socket_timeout=5), prefix)

    def claim(self, key: str, owner: str, ttl: int = DEFAULT_LOCK_SECONDS) -> bool:
        return bool(self.client.eval(self._CLAIM, 1, f"{self.prefix}lock:{key}", owner, int(ttl)))

    def release(self, key: str, owner: str) -> None:
        self.client.eval(self._RELEASE, 1, f"{self.prefix}lock:{key}", owner)

    def is_done(self, key: str) -> bool:
        return bool(self.client.exists(f"{self.prefix}done:{key}"))

    def mark_done(self, key: str, ttl: int = DONE_TTL_SECONDS) -> None:
        self.client.set(f"{self.prefix}done:{key}", b"1", ex=ttl)

    def check_run(self, key: str) -> int | None:
        value = self.client.get(f"{self.prefix}check:{key}")
        return int(value) if value else None

    def remember_check_run(self, key: str, run_id: int) -> None:
        self.client.set(f"{self.prefix}check:{key}", str(run_id), ex=DONE_TTL_SECONDS)

    def count_delivery(self, task_id: str) -> int:
        name = f"{self.prefix}deliveries:{task_id}"
        pipe = self.client.pipeline()
        pipe.incr(name)
        pipe.expire(name, 7 * 24 * 3600)
        return int(pipe.execute()[0])


# ----- stage results ------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """What the pipeline did for one job, for logs, task results and tests."""

    status: Status
    detail: str = ""
    review_id: int | None = None
    check_run_id: int | None = None
    comments: int = 0
    """Inline comments posted."""
    moved_to_body: int = 0
    """Findings that could not be anchored in the diff and went to the review body."""

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "detail": self.detail, "review_id": self.review_id,
                "check_run_id": self.check_run_id, "comments": self.comments,
                "moved_to_body": self.moved_to_body}


@dataclass(frozen=True)
class Policy:
    """The part of ``RepoConfig`` that ``publish`` applies (travels with the job between stages)."""

    mode: str
    top_k: int
    min_probability: float
    per_file_cap: int
    # Defaulted, so a job planned by a worker that predates them still publishes.
    lines_per_comment: int = RepoConfig.lines_per_comment
    min_lift: float = RepoConfig.min_lift
    base_rate_prior: float = RepoConfig.base_rate_prior
    base_rate_prior_lines: int = RepoConfig.base_rate_prior_lines

    @classmethod
    def of(cls, config: RepoConfig) -> Policy:
        return cls(config.mode, config.top_k, float(config.min_probability), config.per_file_cap,
                   config.lines_per_comment, float(config.min_lift), float(config.base_rate_prior),
                   config.base_rate_prior_lines)


@dataclass(frozen=True)
class Prepared:
    """Output of ``prepare``: everything ``score`` and ``publish`` need, as plain data."""

    job: dict[str, Any]
    policy: Policy
    requests: tuple[ScoreRequest, ...]
    skipped: tuple[Skipped, ...]
    candidates: int
    """Lines in scope (AI-authored in ``ai-only`` mode) of the files that were planned."""
    out_of_scope: int
    """Added lines left out by the mode (human-authored lines in ``ai-only`` mode)."""
    provenance: dict[str, dict[int, str]]
    """path -> line -> provenance in words, for the lines that may be commented on."""
    check_run_id: int | None = None
    not_scored: tuple[tuple[str, int], ...] = ()
    """Lines in scope given no score, by kind (comment, blank, punctuation-only)."""

    @property
    def scope(self) -> str:
        """How the candidate lines are described in the coverage sentence."""
        return "AI-authored" if self.policy.mode == "ai-only" else "added"

    def plan(self) -> Plan:
        """The planned requests again, as ``bot.review`` scores them."""
        return Plan(self.requests, self.skipped, self.candidates, {r.path: r.text for r in self.requests},
                    self.not_scored)

    def to_dict(self) -> dict[str, Any]:
        return {"job": self.job, "policy": vars(self.policy),
                "requests": [{"path": r.path, "text": r.text, "lines": sorted(r.lines or ()),
                              "language": r.language} for r in self.requests],
                "skipped": [s.to_dict() for s in self.skipped], "candidates": self.candidates,
                "out_of_scope": self.out_of_scope,
                "provenance": [[p, n, why] for p, lines in self.provenance.items()
                               for n, why in lines.items()],
                "check_run_id": self.check_run_id,
                "not_scored": [[kind, n] for kind, n in self.not_scored]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Prepared:
        prov: dict[str, dict[int, str]] = {}
        for path, n, why in d["provenance"]:
            prov.setdefault(path, {})[int(n)] = why
        return cls(job=dict(d["job"]), policy=Policy(**d["policy"]),
                   requests=tuple(ScoreRequest(r["path"], r["text"], frozenset(r["lines"]), r["language"])
                                  for r in d["requests"]),
                   skipped=tuple(Skipped(s["path"], s["reason"]) for s in d["skipped"]),
                   candidates=int(d["candidates"]), out_of_scope=int(d["out_of_scope"]),
                   provenance=prov, check_run_id=d.get("check_run_id"),
                   not_scored=tuple((str(kind), int(n)) for kind, n in d.get("not_scored", ())))


@dataclass(frozen=True)
class Scored:
    """Output of ``score``: the prepared job and every scored line, ranked across files."""

    prepared: Prepared
    report: Report
    scored: int

    @property
    def coverage(self) -> Coverage:
        """What the review covered, counted once for the review body, the check run and the Action."""
        return plan_coverage(self.prepared.plan(), self.report, self.scored, scope=self.prepared.scope,
                             out_of_scope=self.prepared.out_of_scope)

    def to_dict(self) -> dict[str, Any]:
        return {"prepared": self.prepared.to_dict(), "report": self.report.to_dict(), "scored": self.scored}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Scored:
        return cls(Prepared.from_dict(d["prepared"]), Report.from_dict(d["report"]), int(d["scored"]))


# ----- stage 1: prepare -----------------------------------------------------------------------


def prepare(job: Mapping[str, Any], api: PullRequestAPI, defaults: RepoConfig,
            ledger: ReviewLedger, renderer: Renderer, *,
            model_version: str | None = None) -> Prepared | Outcome:
    """Read the PR and plan what to score; an ``Outcome`` when there is nothing to score.

    ``model_version`` (when the caller knows it without loading the model) lets a job whose
    key is already done stop before any further API call.
    """
    if job.get("kind") not in REVIEW_KINDS:
        return Outcome("ignored", f"job kind {job.get('kind')!r} is not a review")
    head = str(job.get("head_sha") or "")
    key = job_key(job, model_version or "")
    if model_version and not job.get("force") and ledger.is_done(str(key)):
        return Outcome("already_done", f"{key} was already reviewed")

    api.pull(refresh=True)
    if api.head_sha != head:
        outcome = _superseded(key, api.head_sha)
        earlier_run = ledger.check_run(key.check_run_key)  # an earlier delivery got that far
        if earlier_run is not None:
            _complete_superseded(api, earlier_run, outcome)
        return outcome

    try:
        config = api.repo_config(defaults)
    except ValueError as e:
        # An invalid .ptbot.toml must be visible, never a silent skip.
        run_id = api.create_check_run(head_sha=head, conclusion="neutral",
                                      title="ptbot: .ptbot.toml is invalid",
                                      summary=f"ptbot did not review this pull request: {e}\n\n"
                                              "Fix `.ptbot.toml` on the default branch.\n\n"
                                              + marker(kind="check", sha=head))
        return Outcome("config_error", str(e), check_run_id=run_id)
    if job.get("draft") and not config.review_drafts:
        return Outcome("ignored", "draft pull request (set review_drafts = true in .ptbot.toml)")

    run_key = key.check_run_key
    run_id = ledger.check_run(run_key)
    if run_id is None:
        run_id = api.create_check_run(head_sha=head, status="in_progress", conclusion=None,
                                      title="ptbot: scoring", summary="ptbot is ranking the changed lines.",
                                      external_id=run_key[:200])
        ledger.remember_check_run(run_key, run_id)

    files = api.files()
    provenance = api.line_provenance(config.ai_labels)
    ai_only = config.mode == "ai-only"
    skipped: list[Skipped] = []
    planned: list[FileDiff] = []
    out_of_scope = 0
    in_scope: dict[str, list[int]] = {}
    for f in files:
        if language_for_path(f.path) is not None and not config.wants_path(f.path):
            if f.added_linenos():
                skipped.append(Skipped(f.path, "excluded by .ptbot.toml (include, exclude or languages)"))
            continue
        added = f.added_linenos()
        lines = [n for n in added if not ai_only or _prov(provenance, f.path, n).is_ai]
        out_of_scope += len(added) - len(lines)
        if added and not lines:
            continue  # every added line is human-authored: out of scope, not "skipped"
        in_scope[f.path] = lines
        planned.append(f)

    if ai_only and not any(in_scope.values()) and out_of_scope:
        return _human_only(key, api, run_id, out_of_scope, renderer)

    def read_new(path: str) -> bytes | None:
        try:
            return api.file_text(path, head).encode("utf-8")
        except GithubException as e:
            if e.status == 404:
                return None
            raise

    plan = plan_requests(planned, read_new, ReviewLimits(), lines_of=lambda f: in_scope.get(f.path, []))
    prov_text = {r.path: {n: _prov(provenance, r.path, n).reason for n in sorted(r.lines or ())}
                 for r in plan.requests}
    return Prepared(job=dict(job), policy=Policy.of(config), requests=plan.requests,
                    skipped=tuple(skipped) + plan.skipped, candidates=plan.candidates,
                    out_of_scope=out_of_scope, provenance=prov_text, check_run_id=run_id,
                    not_scored=plan.not_scored)


def _prov(provenance: Mapping[tuple[str, int], LineProvenance], path: str, line: int) -> LineProvenance:
    return provenance.get((path, line)) or LineProvenance(False, "no provenance found for this line")


def _superseded(key: JobKey, current: str) -> Outcome:
    log.info("%s: superseded, the PR head is now %s", key, current[:12])
    return Outcome("superseded", f"the pull request head moved from {key.head_sha[:12]} to {current[:12]}")


def _complete_superseded(api: PullRequestAPI, run_id: int, outcome: Outcome) -> None:
    # Do not leave the old head's check spinning: the new head gets its own run.
    api.update_check_run(run_id, status="completed", conclusion="neutral",
                         title="ptbot: superseded by a newer push",
                         summary=f"Not reviewed: {outcome.detail}.")


def _human_only(key: JobKey, api: PullRequestAPI, run_id: int, out_of_scope: int,
                renderer: Renderer) -> Outcome:
    """No AI-authored line: post nothing but a neutral check run that says why."""
    coverage = Coverage(scored=0, candidates=0, out_of_scope=out_of_scope)
    summary = (f"**Coverage:** {coverage.sentence()}.\n\n"
               "No added line of this pull request is attributed to an AI author, so ptbot posted "
               "no review. It looks for Co-authored-by trailers of coding agents, agent bot authors "
               "and committers, aider's name suffix, agent branch prefixes (codex/, claude/, "
               "copilot/, ...) and the AI labels configured in `.ptbot.toml`. Set `mode = \"all\"` "
               "there to review every added line.\n\n" + marker(kind="check", sha=key.head_sha))
    api.update_check_run(run_id, status="completed", conclusion="neutral",
                         title="ptbot: no AI-authored lines", summary=summary)
    # A push can leave no AI-authored line (the agent's commits rewritten by a person, an AI label
    # removed): nothing is flagged any more, so ptbot's earlier threads are stale too.
    clean_up(api, key.head_sha, (), where=str(key))
    log.info("%s: human-only pull request (%d added lines); nothing posted", key, out_of_scope)
    return Outcome("human_only", coverage.sentence(), check_run_id=run_id)


# ----- stage 2: score -------------------------------------------------------------------------


def score(prepared: Prepared, scorer: Scorer) -> Scored:
    """Score every planned line and rank them across files (no cut-off yet: publish applies it)."""
    done = review_plan(scorer, prepared.plan(), ReviewLimits(), scope=prepared.scope,
                       out_of_scope=prepared.out_of_scope)
    return Scored(prepared, done.report, done.coverage.scored)


# ----- stage 3: publish -----------------------------------------------------------------------


def select_lines(report: Report, policy: Policy, already_posted: set[str],
                 fingerprints: Mapping[tuple[str, int], str]) -> list[LineScore]:
    """The lines that get an inline comment under the comment budget (``bot.budget``): best
    first, standing out from the change's own base rate, as many as the change's size earns and
    at most ``per_file_cap`` per file, skipping lines already commented on."""
    ranked = sorted(report.lines, key=lambda x: x.rank)
    picked = budget.choose(policy, [(ln.path, ln.probability) for ln in ranked],
                           lambda i: fingerprints[(ranked[i].path, ranked[i].line)] in already_posted)
    return [ranked[i] for i in picked]


def current_flags(report: Report, policy: Policy, fingerprints: Mapping[tuple[str, int], str]) -> set[str]:
    """Fingerprints of the lines ptbot still flags on this head: every scored line that stands out
    from the change (``bot.budget.stands_out``). The size budget and per-file cap are left out on
    purpose: a finding pushed out of the budget by newer, riskier ones is not fixed, so its thread
    stays open."""
    out = budget.stands_out(policy, [ln.probability for ln in report.lines])
    return {fingerprints[(ln.path, ln.line)] for ln, flagged in zip(report.lines, out)
            if flagged and (ln.path, ln.line) in fingerprints}


def publish(scored: Scored, api: PullRequestAPI, renderer: Renderer, ledger: ReviewLedger, *,
            owner: str, lock_seconds: int = DEFAULT_LOCK_SECONDS,
            feedback: FeedbackSink | None = None) -> Outcome:
    """Post the review and complete the check run, at most once per job key.

    ``feedback`` (optional) records the scored lines and withholds refused fingerprints; a
    failing label store is logged and never blocks a review.

    ``owner`` identifies this piece of work (the Celery task id): a redelivery of the same task
    may take over a lock left by a worker that died.
    """
    prepared, report = scored.prepared, scored.report
    job, policy = prepared.job, prepared.policy
    version = model_label(report.model)
    key = job_key(job, version)
    if ledger.is_done(str(key)) and not job.get("force"):
        return Outcome("already_done", f"{key} was already reviewed")
    if not ledger.claim(str(key), owner, lock_seconds):
        return Outcome("busy", f"another worker is publishing {key}")
    try:
        api.pull(refresh=True)
        if api.head_sha != key.head_sha:
            outcome = _superseded(key, api.head_sha)
            if prepared.check_run_id is not None:
                _complete_superseded(api, prepared.check_run_id, outcome)
            return outcome
        texts = {r.path: r.text for r in prepared.requests}
        fps = line_fingerprints(report.lines, texts)
        posted = api.posted_fingerprints()
        if feedback is not None:
            try:
                posted = posted | feedback.suppressed(key.repo, key.number)
            except Exception:
                log.exception("%s: could not read suppressed fingerprints from the label store", key)
        review_fp = key.review_fingerprint()
        rule = budget.rule_sentence(policy, [ln.probability for ln in report.lines]) if report.lines else None
        table = SummaryTable(report, scored.coverage, version, head_sha=key.head_sha, rule=rule)
        review_id = None
        inline = moved = 0
        posted_lines: list[tuple[str, int]] = []
        if review_fp in posted and not job.get("force"):
            log.info("%s: its review is already on GitHub (a previous attempt posted it)", key)
            status: Status = "check_only"
        else:
            chosen = select_lines(report, policy, posted, fps)
            if chosen:
                comments = [ReviewComment(ln.path, ln.line, renderer.inline_comment(
                    ln, prepared.provenance.get(ln.path, {}).get(ln.line, "unknown"),
                    fps[(ln.path, ln.line)], model_version=version, head_sha=key.head_sha))
                    for ln in chosen]
                body = marker(fp=review_fp) + "\n" + renderer.review_body(table)
                result = api.post_review(body, comments, commit_sha=key.head_sha)
                review_id, inline, moved = result.review_id, len(result.inline), len(result.moved_to_body)
                posted_lines = [(c.path, c.line) for c in result.inline]
                status = "posted"
            else:
                # Nothing new to say: the check run alone carries the summary (no review spam).
                status = "check_only" if report.lines else "nothing_to_score"
        check = renderer.check_summary(table)
        run_id = prepared.check_run_id
        if run_id is None:
            run_id = api.create_check_run(head_sha=key.head_sha, conclusion="neutral",
                                          title=check.title, summary=check.summary)
        else:
            api.update_check_run(run_id, status="completed", conclusion="neutral",
                                 title=check.title, summary=check.summary)
        # Only now that this head's review and check are up: tidy ptbot's threads and summaries
        # of earlier heads (resolve / minimise, never delete). clean_up never raises.
        clean_up(api, key.head_sha, current_flags(report, policy, fps), where=str(key))
        if feedback is not None:
            try:
                feedback.record(key, scored, fps, posted_lines)
            except Exception:
                log.exception("%s: could not record the scored lines in the label store", key)
        ledger.mark_done(str(key))
        log.info("%s: %s (review %s, %d inline, %d in the body)", key, status, review_id, inline, moved)
        return Outcome(status, scored.coverage.sentence(), review_id, run_id, inline, moved)
    finally:
        ledger.release(str(key), owner)


def run_review(job: Mapping[str, Any], api: PullRequestAPI, scorer: Scorer, renderer: Renderer,
               ledger: ReviewLedger, defaults: RepoConfig, *, owner: str | None = None,
               feedback: FeedbackSink | None = None) -> Outcome:
    """All three stages in this process (``ptbot serve --eager`` and tests).

    An exception in any stage completes the job's check run as a failure with the reason
    (``fail_review``) and is raised again.
    """
    stage, run_id = "prepare", None
    try:
        prepared = prepare(job, api, defaults, ledger, renderer, model_version=model_label(scorer.info))
        if isinstance(prepared, Outcome):
            return prepared
        stage, run_id = "score", prepared.check_run_id
        scored = score(prepared, scorer)
        stage = "publish"
        return publish(scored, api, renderer, ledger,
                       owner=owner or f"inline:{threading.get_ident()}:{time.monotonic_ns()}",
                       feedback=feedback)
    except Exception as e:
        fail_review(job, api, ledger, stage, e, check_run_id=run_id)
        raise


# ----- failures -------------------------------------------------------------------------------

FAILURE_TITLE = "ptbot: review failed"


def failure_reason(stage: str, error: BaseException | str) -> str:
    """One line for people: the stage and the error, without a traceback (the logs have it)."""
    if isinstance(error, GithubException):
        data = error.data if isinstance(error.data, dict) else {}
        error = f"GitHub answered {error.status}" + (f" ({data['message']})" if data.get("message") else "")
    elif isinstance(error, BaseException):
        text = str(error).strip().splitlines()[0] if str(error).strip() else ""
        error = f"{type(error).__name__}: {text}" if text else type(error).__name__
    error = error if len(error) <= 500 else error[:499] + "…"
    return f"{stage} failed: {error}"


def fail_review(job: Mapping[str, Any], api: PullRequestAPI, ledger: ReviewLedger, stage: str,
                error: BaseException | str, *, check_run_id: int | None = None) -> int | None:
    """Complete a failed review job's check run as ``failure`` with the reason, so no exit of a
    job leaves it ``in_progress``; returns the run's id, or None when there is none to complete.

    The run is ``check_run_id``, else the one the ledger holds for the job's head, else (the job
    failed before opening one) a new completed run. Jobs that are no review of one PR (a
    ``closed`` event, a re-score not yet matched to its PR) have no run. Best effort: never
    raises, as GitHub itself may be what failed.
    """
    if job.get("kind") not in REVIEW_KINDS or not job.get("number"):
        return None
    try:
        key = job_key(job, "")
    except (ValueError, TypeError):  # not a job this pipeline could have run
        return None
    reason = failure_reason(stage, error)
    summary = (f"ptbot could not review this head: {reason}\n\nRe-run the check to try again.\n\n"
               + marker(kind="check", sha=key.head_sha))
    try:
        run_id = check_run_id or ledger.check_run(key.check_run_key)
        if run_id is None:
            run_id = api.create_check_run(head_sha=key.head_sha, conclusion="failure",
                                          title=FAILURE_TITLE, summary=summary)
        else:
            api.update_check_run(run_id, status="completed", conclusion="failure",
                                 title=FAILURE_TITLE, summary=summary)
    except Exception:
        log.exception("%s: could not report the failure (%s) on its check run", key, reason)
        return None
    log.warning("%s: %s; check run %s completed as a failure", key, reason, run_id)
    return run_id
