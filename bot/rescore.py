"""Which pull-request reviews a webhook job stands for.

A ``review`` job is one review. A check-run re-run (``rescore``) names its pull requests, each
fanned out as a forced job of its own, or names none when the branch lives in a fork; then its
pull requests are found on GitHub by head SHA. Every other job kind needs no review.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from bot.github import GitHubApp
from bot.schema import Fields
from bot.webhook import pull_request_fields

log = logging.getLogger(__name__)


def derived_job(job: Mapping[str, Any], **changes: Any) -> Mapping[str, Any]:
    """``job`` with ``changes``: a typed job is read through its schema again (and stays typed
    and frozen), a plain dict stays a dict."""
    return job.replace(**changes) if isinstance(job, Fields) else dict(job, **changes)


def review_jobs(job: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The per-PR review jobs a webhook job stands for (a re-score may name several PRs)."""
    kind = job.get("kind")
    if kind == "review":
        return [job]
    if kind == "rescore":
        if job.get("number"):
            return [job]
        if not job.get("numbers"):
            # Fork PRs: GitHub sends an empty pull_requests list.
            log.info("check_run %s on %s names no pull request (a fork PR?): see fork_rescore_jobs",
                     job.get("check_run_id"), job.get("head_sha"))
        return [derived_job(job, number=n, force=True) for n in job.get("numbers") or []]
    log.info("job kind %r needs no review work (delivery %s)", kind, job.get("delivery"))
    return []


def needs_pull_lookup(job: Mapping[str, Any]) -> bool:
    """A check-run re-run that named no PR: GitHub leaves ``pull_requests`` empty for forks."""
    return job.get("kind") == "rescore" and not job.get("number") and not job.get("numbers")


def fork_rescore_jobs(github: GitHubApp, job: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """Review jobs for a re-run that named no PR: one per open PR whose head is the run's SHA,
    shaped like a ``pull_request`` job and forced (a re-run must run even if the key is done).
    When there is none, the check run is completed neutral with the reason, not left hanging."""
    inst, owner, repo = int(job["installation_id"]), str(job["owner"]), str(job["repo"])
    sha = str(job.get("head_sha") or "")
    pulls = github.open_pulls_with_head(inst, owner, repo, sha) if sha else []
    if pulls:
        log.info("check_run %s: head %s is %s/%s#%s", job.get("check_run_id"), sha[:12], owner, repo,
                 ", #".join(str(p.get("number")) for p in pulls))
        return [derived_job(job, **pull_request_fields(p), force=True) for p in pulls]
    log.warning("check_run %s on %s/%s: no open pull request has head %s; completing it neutral",
                job.get("check_run_id"), owner, repo, sha[:12])
    github.complete_check_run(
        inst, owner, repo, job.get("check_run_id"), sha, title="ptbot: no pull request to review",
        summary=(f"ptbot found no open pull request in {owner}/{repo} whose head commit is `{sha}`, "
                 "so there was nothing to re-run. GitHub does not say which pull request a check "
                 "run belongs to when the branch lives in a fork, and ptbot looked it up by head "
                 "SHA: the pull request may be closed, or a newer commit was pushed since. Push a "
                 "commit or re-open the pull request to get a new review."))
    return []


def expand_job(job: Mapping[str, Any], github: Callable[[], GitHubApp]) -> list[Mapping[str, Any]]:
    """``review_jobs``, with a fork PR's re-run matched to its PR through GitHub (``github()``
    is called only then)."""
    jobs = review_jobs(job)
    if not jobs and needs_pull_lookup(job):
        jobs = fork_rescore_jobs(github(), job)
    return jobs
