"""When each commit of a repository landed: the clock of a forward-in-time split.

``ptbot adapt`` fits a repository's model on the fixes made before a cut and judges it on the
fixes made after it, the way the model will meet the repository's next bugs. Times are committer
times (when a change landed on the branch, which a rebase or a merge queue moves forward), in
seconds since the epoch, UTC.
"""

from __future__ import annotations

import calendar
import re
import time
from datetime import datetime, timezone
from pathlib import Path

from miners.history import git

_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}")


def commit_times(repo: Path | str, rev: str = "HEAD") -> dict[str, int]:
    """Committer time of every commit reachable from ``rev``, by full SHA."""
    out: dict[str, int] = {}
    for line in git(repo, "log", "--format=%H %ct", rev, "--").splitlines():
        sha, _, stamp = line.partition(" ")
        if sha and stamp.strip().isdigit():
            out[sha] = int(stamp)
    return out


def months_before(stamp: int, months: int) -> int:
    """``stamp`` moved back by calendar months (the day is clamped: 31 March - 1 month = 28/29 Feb)."""
    t = datetime.fromtimestamp(stamp, tz=timezone.utc)
    total = t.year * 12 + (t.month - 1) - months
    year, month = divmod(total, 12)
    day = min(t.day, calendar.monthrange(year, month + 1)[1])
    return int(t.replace(year=year, month=month + 1, day=day).timestamp())


def parse_date(text: str) -> int | None:
    """An ISO 8601 date or date-time (``2024-06-30``, ``2024-06-30T12:00:00+02:00``) as epoch seconds;
    a date without a zone is UTC. None when ``text`` is not one."""
    if not _DATE.match(text.strip()):
        return None
    try:
        t = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)
    return int(t.timestamp())


def resolve_cut(repo: Path | str, until: str | None = None, holdout_months: int = 6, rev: str = "HEAD") -> int:
    """The cut: commits at or before it are fitted on, commits after it are the forward slice.

    ``until`` is a date (see ``parse_date``) or a revision (its committer time is the cut, so the
    revision itself is on the fitted side); without it, the newest commit of ``rev`` minus
    ``holdout_months`` calendar months. ValueError says what is wrong.
    """
    if holdout_months < 1:
        raise ValueError(f"--holdout-months must be at least 1, got {holdout_months}")
    if until:
        stamp = parse_date(until)
        if stamp is not None:
            return stamp
        sha = git(repo, "rev-parse", "--verify", "--quiet", f"{until}^{{commit}}", check=False).strip()
        if not sha:
            raise ValueError(f"--until {until!r} is neither a date (YYYY-MM-DD, or ISO 8601 with a time) "
                             f"nor a revision of {repo}")
        return int(git(repo, "log", "-1", "--format=%ct", sha).strip())
    newest = git(repo, "log", "-1", "--format=%ct", rev, "--").strip()
    if not newest.isdigit():
        raise ValueError(f"{repo} has no commit at {rev!r}: nothing to split")
    return months_before(int(newest), holdout_months)


def iso(stamp: int) -> str:
    """Epoch seconds as ``YYYY-MM-DDTHH:MM:SSZ``."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(stamp))
