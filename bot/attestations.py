"""Line-level authorship attestations written by agents' tooling: git-ai notes and Agent Trace.

Both say, for one commit, which lines of which files an AI (or a known human) wrote, with line
numbers valid in that commit's version of each file:

* **git-ai** (Git AI Standard v3.0.0, ``git-ai-project/git-ai specs/git_ai_standard_v3.0.0.md``):
  one note per commit under ``refs/notes/ai``. An attestation section (a path at column 0, then
  two-space-indented ``<key> <ranges>`` lines), a line that is exactly ``---``, then JSON
  metadata (``schema_version: "authorship/3.0.0"``, ``prompts``, ``sessions``, ``humans``).
  Keys ``s_<14hex>::t_<14hex>`` (an AI session, looked up in ``sessions``) and legacy bare hex
  (an AI prompt, looked up in ``prompts``) are AI; ``h_<14hex>`` is a known human. When entries
  of one file overlap, the later one wins, as git-ai's own reader does.
* **Agent Trace** (v0.1.0 RFC, ``cursor/agent-trace``): JSON trace records, stored one per line
  in ``.agent-trace/traces.jsonl``; each names a ``vcs.revision`` and, per file and conversation,
  a ``contributor`` (``human``, ``ai``, ``mixed``, ``unknown``; a range may override it) and
  1-indexed ``ranges``. ``ai`` and ``mixed`` count as AI, ``human`` as human, ``unknown`` as no
  evidence. Later records win over earlier ones.

Input comes from other people's tools and the PR's own files, so nothing here raises on bad
input: what cannot be read is skipped with a logged warning. Standard library only.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

NOTES_REF = "refs/notes/ai"
TRACE_PATH = ".agent-trace/traces.jsonl"
# A range reaching past this is corrupt (or hostile): expanding it would only burn memory.
MAX_LINE = 1_000_000
# A trace file or note larger than this is not read (the JSONL only grows; parsing is in memory).
MAX_TRACE_BYTES = 20 * 1024 * 1024
_RANGES_RE = re.compile(r"^\d+(?:-\d+)?(?:,\d+(?:-\d+)?)*,?$")


@dataclass(frozen=True, slots=True)
class Attestation:
    """What one attestation says about one line: AI or human, from which tool and model."""

    is_ai: bool
    source: str
    """``git-ai note`` or ``agent-trace``."""
    tool: str = ""
    model: str = ""
    key: str = ""
    """The git-ai attestation key, or the Agent Trace contributor type (``ai``, ``mixed``...)."""
    who: str = ""
    """A known human's identity, when the attestation names one."""

    def describe(self) -> str:
        """The evidence in words, e.g. ``git-ai note (tool=claude, model=claude-sonnet-4)``."""
        if not self.is_ai:
            return f"{self.source}: written by a known human" + (f" ({self.who})" if self.who else "")
        parts = [self.key] if self.source == "agent-trace" and self.key != "ai" else []
        parts += [f"tool={self.tool}"] if self.tool else []
        parts += [f"model={self.model}"] if self.model else []
        return f"{self.source} ({', '.join(parts)})" if parts else self.source


LineMarks = dict[str, dict[int, Attestation]]
"""path -> line number in that commit's version of the file -> attestation."""


def _expand(ranges: str) -> list[int] | None:
    """``1-4,9-10,12`` -> the line numbers, or None when the text is not a range list."""
    if not _RANGES_RE.match(ranges):
        return None
    out: list[int] = []
    for part in filter(None, ranges.split(",")):
        lo, _, hi = part.partition("-")
        start, end = int(lo), int(hi or lo)
        if start < 1 or end < start or end > MAX_LINE:
            return None
        out.extend(range(start, end + 1))
    return out


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


def parse_git_ai_note(text: str, *, where: str = "") -> LineMarks:
    """The lines one git-ai note attests, keyed by path and line at the note's commit.

    ``where`` (a commit id) only makes warnings useful. A note without the divider or with
    unreadable metadata gives ``{}``; a bad entry line is skipped.
    """
    label = f"git-ai note {where}".strip()
    lines = text.replace("\r\n", "\n").split("\n")
    try:
        divider = lines.index("---")
    except ValueError:
        log.warning("%s: no '---' divider, not a git-ai authorship log; ignored", label)
        return {}
    try:
        meta = json.loads("\n".join(lines[divider + 1:]))
    except json.JSONDecodeError as e:
        log.warning("%s: metadata is not JSON (%s); ignored", label, e)
        return {}
    if not isinstance(meta, dict):
        log.warning("%s: metadata is not a JSON object; ignored", label)
        return {}
    version = _text(meta.get("schema_version"))
    if not version.startswith("authorship/"):
        log.warning("%s: schema_version %r is not authorship/*; read anyway", label, version)

    def records(name: str) -> Mapping[str, Any]:
        value = meta.get(name)
        return value if isinstance(value, dict) else {}

    prompts, sessions, humans = records("prompts"), records("sessions"), records("humans")
    marks: LineMarks = {}
    path: str | None = None
    for raw in lines[:divider]:
        line = raw.rstrip()
        if not line:
            continue
        if not line.startswith("  "):
            path = line[1:-1] if len(line) > 1 and line[0] == line[-1] == '"' else line
            continue
        key, _, ranges = line[2:].partition(" ")
        numbers = _expand(ranges.strip())
        if path is None or not key or numbers is None:
            log.warning("%s: unreadable attestation line %r; skipped", label, raw)
            continue
        att = _git_ai_attestation(key, prompts, sessions, humans)
        file_marks = marks.setdefault(path, {})
        for n in numbers:
            file_marks[n] = att  # later entries win, as in git-ai's get_line_attribution
    return marks


def _git_ai_attestation(key: str, prompts: Mapping[str, Any], sessions: Mapping[str, Any],
                        humans: Mapping[str, Any]) -> Attestation:
    if key.startswith("h_"):
        human = humans.get(key)
        return Attestation(False, "git-ai note", key=key,
                           who=_text(human.get("author")) if isinstance(human, dict) else "")
    # s_ keys resolve through their session id; anything else is a legacy prompt hash. Both are
    # AI by the key format alone, so an unresolved key (a foreign cherry-pick) still counts.
    record = sessions.get(key.split("::", 1)[0]) if key.startswith("s_") else prompts.get(key)
    agent = record.get("agent_id") if isinstance(record, dict) else None
    agent = agent if isinstance(agent, dict) else {}
    return Attestation(True, "git-ai note", tool=_text(agent.get("tool")),
                       model=_text(agent.get("model")), key=key)


_CONTRIBUTORS = {"ai": True, "mixed": True, "human": False}


def _contributor(value: Any, fallback: tuple[str, str] | None) -> tuple[str, str] | None:
    if not isinstance(value, dict):
        return fallback
    kind = _text(value.get("type")).lower()
    return (kind, _text(value.get("model_id"))) if kind else fallback


def parse_agent_traces(text: str, *, where: str = TRACE_PATH) -> dict[str, LineMarks]:
    """Agent Trace JSONL -> commit id (lower case) -> path -> line at that commit -> attestation.

    Records without a git ``vcs.revision`` cannot be placed on a commit and are skipped, as are
    lines that are not JSON objects (each with one warning naming the line number).
    """
    out: dict[str, LineMarks] = {}
    for lineno, raw in enumerate(text.splitlines(), 1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except json.JSONDecodeError as e:
            log.warning("%s:%d: not JSON (%s); skipped", where, lineno, e)
            continue
        vcs = record.get("vcs") if isinstance(record, dict) else None
        revision = _text(vcs.get("revision")).lower() if isinstance(vcs, dict) else ""
        if not revision or _text(vcs.get("type") or "git").lower() != "git":
            log.warning("%s:%d: no git vcs.revision in the trace record; skipped", where, lineno)
            continue
        tool = record.get("tool")
        tool_name = _text(tool.get("name")) if isinstance(tool, dict) else ""
        files = record.get("files")
        for f in files if isinstance(files, list) else ():
            path = _text(f.get("path")).removeprefix("./") if isinstance(f, dict) else ""
            conversations = f.get("conversations") if path else None
            if not isinstance(conversations, list):
                log.warning("%s:%d: a file entry without path or conversations; skipped", where, lineno)
                continue
            file_marks = out.setdefault(revision, {}).setdefault(path, {})
            for conv in conversations:
                if isinstance(conv, dict):
                    _mark_conversation(conv, tool_name, file_marks, f"{where}:{lineno}")
    return out


def _mark_conversation(conv: Mapping[str, Any], tool: str, file_marks: dict[int, Attestation],
                       label: str) -> None:
    default = _contributor(conv.get("contributor"), None)
    ranges = conv.get("ranges")
    for r in ranges if isinstance(ranges, list) else ():
        if not isinstance(r, dict):
            continue
        who = _contributor(r.get("contributor"), default)
        start, end = r.get("start_line"), r.get("end_line")
        if (not isinstance(start, int) or not isinstance(end, int) or isinstance(start, bool)
                or not 1 <= start <= end <= MAX_LINE):
            log.warning("%s: bad range %r; skipped", label, {"start_line": start, "end_line": end})
            continue
        if who is None or who[0] not in _CONTRIBUTORS:
            continue  # "unknown" or no contributor: no evidence either way
        att = Attestation(_CONTRIBUTORS[who[0]], "agent-trace", tool=tool, model=who[1], key=who[0])
        for n in range(start, end + 1):
            file_marks[n] = att


def traces_for(traces: Mapping[str, LineMarks], sha: str) -> LineMarks:
    """The trace marks recorded for commit ``sha``; a record may give an abbreviated id."""
    sha = sha.lower()
    if sha in traces:
        return traces[sha]
    for revision, marks in traces.items():
        if len(revision) >= 7 and sha.startswith(revision):
            return marks
    return {}


def combine(per_commit: Iterable[tuple[str, LineMarks]]) -> dict[str, LineMarks]:
    """Merge marks from several sources into commit -> path -> line; AI wins over human."""
    out: dict[str, LineMarks] = {}
    for sha, marks in per_commit:
        target = out.setdefault(sha, {})
        for path, lines in marks.items():
            file_marks = target.setdefault(path, {})
            for n, att in lines.items():
                if n not in file_marks or (att.is_ai and not file_marks[n].is_ai):
                    file_marks[n] = att
    return {sha: marks for sha, marks in out.items() if marks}


def commit_line_marks(shas: Iterable[str], notes: Mapping[str, str], trace_text: str | None
                      ) -> dict[str, LineMarks]:
    """Everything both sources say about the given commits: commit -> path -> line -> attestation.

    ``notes`` maps commit id to its ``refs/notes/ai`` note text; ``trace_text`` is the content of
    ``.agent-trace/traces.jsonl`` (None when the repository has none).
    """
    traces = parse_agent_traces(trace_text) if trace_text else {}
    pairs: list[tuple[str, LineMarks]] = []
    for sha in shas:
        if sha in notes:
            pairs.append((sha, parse_git_ai_note(notes[sha], where=sha[:12])))
        if traces:
            pairs.append((sha, traces_for(traces, sha)))
    return combine(pairs)
