"""Which added lines of a pull request did an AI write, and how do we know.

Two levels of evidence (matched on the exact strings agents and tools write):

* per commit: ``Co-authored-by`` trailers matched on the *email* (names drift and some are
  people's names), agent bot logins (``…[bot]``) and noreply addresses as author or committer,
  aider's ``"<name> (aider)"`` author/committer suffix, a few agent-only trailers;
* per pull request: an agent branch prefix (``copilot/``, ``codex/``…), a configured PR label,
  or an agent bot as the PR author. These mark every added line;
* per line: git-ai notes (``refs/notes/ai``) and Agent Trace records (``.agent-trace/traces.jsonl``)
  attest single lines of one commit as AI or human (``bot.attestations``).

``attribute_lines`` replays the PR's commits (oldest first, each with its own patch) to find the
commit that introduced each added line of the final diff, and where the line stood in that
commit's version of the file (attestations are numbered there). Standard library only.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from analyzer.types import FileDiff
from bot.attestations import LineMarks

# CHAOSS CoAuthorPattern.
CO_AUTHOR_RE = re.compile(r"(?im)^co-authored-by:\s*([^<\n]*)<([^>\n]+)>")

# Trailer e-mail (lower-case) -> tool. Exact addresses; noreply bot addresses are matched below.
AI_EMAILS: dict[str, str] = {
    "noreply@anthropic.com": "Claude Code",
    "cursoragent@cursor.com": "Cursor",
    "aider@aider.chat": "aider",
    "noreply@aider.chat": "aider",
    "copilot@github.com": "GitHub Copilot",
    "codex@openai.com": "OpenAI Codex",
    "amp@ampcode.com": "Amp",
    "openhands@all-hands.dev": "OpenHands",
}

# Agent bot logins (lower-case, as in CHAOSS KnownAgentCommitters); ``Copilot`` is the
# normalised login of copilot-swe-agent[bot]. Review bots (coderabbitai…) are not authors.
AI_LOGINS: dict[str, str] = {
    "copilot-swe-agent[bot]": "GitHub Copilot", "copilot": "GitHub Copilot",
    "copilot[bot]": "GitHub Copilot",
    "devin-ai-integration[bot]": "Devin",
    "cursor[bot]": "Cursor",
    "claude[bot]": "Claude", "anthropic-claude[bot]": "Claude", "claude-code-action[bot]": "Claude",
    "chatgpt-codex-connector[bot]": "OpenAI Codex", "openai-codex[bot]": "OpenAI Codex",
    "gemini-code-assist[bot]": "Gemini", "google-labs-jules[bot]": "Jules",
    "amazon-q-developer[bot]": "Amazon Q", "cline[bot]": "Cline", "continue[bot]": "Continue",
    "sourcegraph-cody[bot]": "Cody", "jetbrains-ai[bot]": "JetBrains AI",
    "sweep-ai[bot]": "Sweep",
}

# GitHub noreply form ``<id>+<login>@users.noreply.github.com``.
_NOREPLY_RE = re.compile(r"^(?:\d+\+)?([^@]+)@users\.noreply\.github\.com$", re.I)

# Trailers only agents write (CHAOSS; Claude's session trailer survives disabled attribution).
_AGENT_TRAILERS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"(?im)^claude-session:\s*https://claude\.ai/code/"), "Claude Code (Claude-Session trailer)"),
    (re.compile(r"(?im)^copilot-session:\s*\S+"), "GitHub Copilot (Copilot-Session trailer)"),
    (re.compile(r"(?im)^made-with:\s*cursor\s*$"), "Cursor (Made-with trailer)"),
    (re.compile(r"(?im)^replit-commit-author:\s*(agent|assistant)\s*$"), "Replit Agent (trailer)"),
    (re.compile(r"(?im)^amp-thread-id:\s*https://ampcode\.com/"), "Amp (Amp-Thread-ID trailer)"),
    (re.compile(r"(?im)^assisted-by:\s*\S+"), "Assisted-by trailer"),
    (re.compile(r"generated with \[?claude code\]?", re.I), "Claude Code (footer)"),
    (re.compile(r"generated with \[devin\]", re.I), "Devin (footer)"),
)

# CHAOSS KnownAgentBranchPrefixes.
AGENT_BRANCH_PREFIXES: tuple[str, ...] = (
    "codex/", "claude/", "copilot/", "cursor/", "devin/", "cline/", "aider/", "gemini/",
)


@dataclass(frozen=True, slots=True)
class Person:
    """A commit author or committer as git and GitHub report them; ``login`` when GitHub matched one."""

    name: str = ""
    email: str = ""
    login: str | None = None


@dataclass(frozen=True, slots=True)
class CommitInfo:
    """One PR commit: identity, message, and its own patch against its first parent."""

    sha: str
    message: str
    author: Person = Person()
    committer: Person = Person()
    files: tuple[FileDiff, ...] = ()


@dataclass(frozen=True, slots=True)
class LineProvenance:
    """Who wrote one added line: AI or not, the evidence in words, and the commit if known."""

    is_ai: bool
    reason: str
    commit: str | None = None


def _login_tool(login: str | None) -> str | None:
    return AI_LOGINS.get(login.lower()) if login else None


def _email_tool(email: str) -> str | None:
    email = email.strip().lower()
    if email in AI_EMAILS:
        return AI_EMAILS[email]
    m = _NOREPLY_RE.match(email)
    return _login_tool(m.group(1)) if m else None


def _person_reason(role: str, p: Person) -> str | None:
    tool = _login_tool(p.login) or _email_tool(p.email)
    if tool:
        return f"{role} {p.login or p.email} ({tool})"
    if p.name.rstrip().endswith("(aider)"):
        return f"{role} name {p.name.strip()!r} (aider)"
    return None


def commit_ai_reason(commit: CommitInfo) -> str | None:
    """Why this commit counts as AI-authored, or None when nothing says so."""
    for _name, email in CO_AUTHOR_RE.findall(commit.message):
        tool = _email_tool(email)
        if tool:
            return f"Co-authored-by {email.strip()} ({tool})"
    for role, person in (("author", commit.author), ("committer", commit.committer)):
        reason = _person_reason(role, person)
        if reason:
            return reason
    if commit.message.lstrip().startswith("aider: "):
        return "commit message prefix 'aider: '"
    for pattern, what in _AGENT_TRAILERS:
        if pattern.search(commit.message):
            return what
    return None


def pull_request_ai_reason(head_ref: str, labels: Iterable[str], author_login: str | None,
                           ai_labels: Sequence[str]) -> str | None:
    """Why the whole PR counts as AI-authored (branch prefix, label, agent author), or None."""
    for prefix in AGENT_BRANCH_PREFIXES:
        if head_ref.startswith(prefix):
            return f"agent branch {head_ref!r}"
    wanted = {lab.lower() for lab in ai_labels}
    for label in labels:
        if label.lower() in wanted:
            return f"PR label {label!r}"
    tool = _login_tool(author_login)
    if tool:
        return f"PR opened by {author_login} ({tool})"
    return None


class _Origin(NamedTuple):
    """Where a line was born: the commit that added it, and its path and number in that commit."""

    sha: str
    path: str
    line: int


def _replay(owners: dict[int, _Origin], fd: FileDiff, sha: str) -> dict[int, _Origin]:
    """Carry line ownership (new line number -> origin) through one commit's diff of a file.

    Lines outside hunks shift by the running offset; context lines keep their owner; deleted
    lines vanish; added lines are born in ``sha`` at their new line number.
    """
    out: dict[int, _Origin] = {}
    hunks = sorted(fd.hunks, key=lambda h: h.old_start)
    spans: list[tuple[int, int]] = []  # old line ranges covered by hunks
    for h in hunks:
        for ln in h.lines:
            if ln.kind == "+" and ln.new_lineno:
                out[ln.new_lineno] = _Origin(sha, fd.path, ln.new_lineno)
            elif ln.kind == " " and ln.old_lineno and ln.new_lineno and ln.old_lineno in owners:
                out[ln.new_lineno] = owners[ln.old_lineno]
        spans.append((h.old_start, h.old_start + max(h.old_count, 0)))
    for old, owner in owners.items():
        offset = 0
        inside = False
        for h, (lo, hi) in zip(hunks, spans):
            if h.old_count == 0 and old > h.old_start or h.old_count and old >= hi:
                offset += h.new_count - h.old_count
            elif lo <= old < hi:
                inside = True
                break
        if not inside:
            out.setdefault(old + offset, owner)
    return out


def attribute_lines(final_files: Sequence[FileDiff], commits: Sequence[CommitInfo], *,
                    pr_reason: str | None = None,
                    line_marks: Mapping[str, LineMarks] | None = None,
                    ) -> dict[tuple[str, int], LineProvenance]:
    """Provenance of every added line of the PR diff, keyed by ``(path, new line number)``.

    ``commits`` are the PR's commits oldest first, each with its own ``files``; ``line_marks``
    maps a commit id to the lines its attestations mark (``bot.attestations.commit_line_marks``),
    numbered in that commit's version of the file. Precedence for one line, first match wins:

    1. the PR is AI (``pr_reason``): AI, even where a line attestation says human (the PR's own
       label or agent branch is the author's declaration for the whole change);
    2. the introducing commit's attestation marks the line AI: AI, whatever the commit's author
       and trailers look like (agents often commit under the human's name);
    3. that attestation marks the line human (a git-ai ``h_`` key, an Agent Trace ``human``
       contributor): human, even when the commit carries an AI trailer (the commit was mixed
       and this line is the person's);
    4. the introducing commit is AI (``commit_ai_reason``): AI;
    5. otherwise human; a line no commit explains (rewritten history, merge from the base
       branch) gets ``commit=None``.
    """
    marks = line_marks or {}
    owners: dict[str, dict[int, _Origin]] = {}
    for c in commits:
        for fd in c.files:
            if fd.status == "deleted":
                owners.pop(fd.old_path or "", None)
                continue
            before = owners.pop(fd.old_path or "", {}) if fd.status == "renamed" else owners.get(fd.path, {})
            owners[fd.path] = _replay(before, fd, c.sha)

    reasons = {c.sha: commit_ai_reason(c) for c in commits}
    result: dict[tuple[str, int], LineProvenance] = {}
    for fd in final_files:
        file_owners = owners.get(fd.path, {})
        for n in fd.added_linenos():
            origin = file_owners.get(n)
            sha = origin.sha if origin else None
            commit_reason = reasons.get(sha) if sha else None
            att = marks.get(origin.sha, {}).get(origin.path, {}).get(origin.line) if origin else None
            if pr_reason:
                result[(fd.path, n)] = LineProvenance(True, pr_reason, sha)
            elif att is not None and sha:
                result[(fd.path, n)] = LineProvenance(att.is_ai, f"{att.describe()} in {sha[:7]}", sha)
            elif commit_reason:
                result[(fd.path, n)] = LineProvenance(True, f"{commit_reason} in {sha[:7]}", sha)
            elif sha:
                result[(fd.path, n)] = LineProvenance(False, f"no AI signal on commit {sha[:7]}", sha)
            else:
                result[(fd.path, n)] = LineProvenance(False, "no PR commit introduces this line", None)
    return result
