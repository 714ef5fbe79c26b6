"""bot.attestations (git-ai notes, Agent Trace) and their use in attribute_lines and LocalRepo.

Golden files in ``tests/golden/provenance/``: ``NAME.note`` / ``traces.jsonl`` are inputs in the
real formats (Git AI Standard v3.0.0 §1.2; Agent Trace v0.1.0 §6, one record per line as the
reference implementation stores them); the JSON beside each is the expected reading, written
by hand as runs ``[first, last, is_ai, tool, model, key, who]``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from test_provenance import commit_file, git, make_repo, pr_commits

from analyzer.diff import parse_diff
from bot.attestations import (
    Attestation,
    combine,
    commit_line_marks,
    parse_agent_traces,
    parse_git_ai_note,
    traces_for,
)
from bot.localrepo import LocalRepo
from bot.provenance import attribute_lines

GOLDEN = Path(__file__).parent / "golden" / "provenance"
TOOL = "claude"
MODEL = "claude-sonnet-4-5-20250514"


def runs(lines: dict[int, Attestation]) -> list[list]:
    """Consecutive lines with the same attestation, in the golden files' row form."""
    out: list[list] = []
    for n in sorted(lines):
        a = lines[n]
        row = [a.is_ai, a.tool, a.model, a.key, a.who]
        if out and out[-1][1] == n - 1 and out[-1][2:] == row:
            out[-1][1] = n
        else:
            out.append([n, n, *row])
    return out


def note(entries: dict[str, str], human: bool = False) -> str:
    """A git-ai note in the sessions format: path -> ranges, all by one Claude session (or a
    known human)."""
    key = "h_31dce776f88375" if human else "s_c9883b05a2487d::t_9f8e7d6c5b4a32"
    body = "".join(f"{path}\n  {key} {ranges}\n" for path, ranges in entries.items())
    meta = {"schema_version": "authorship/3.0.0", "git_ai_version": "1.4.5", "base_commit_sha": "",
            "prompts": {}, "humans": {"h_31dce776f88375": {"author": "Ada Human <ada@example.com>"}},
            "sessions": {"s_c9883b05a2487d": {"agent_id": {"tool": TOOL, "id": "conv_1", "model": MODEL}}}}
    return body + "---\n" + json.dumps(meta, indent=2) + "\n"


def trace(revision: str, path: str, start: int, end: int, kind: str = "ai") -> str:
    return json.dumps({
        "version": "0.1.0", "id": "550e8400-e29b-41d4-a716-446655440000", "timestamp": "2026-01-23T14:30:00Z",
        "vcs": {"type": "git", "revision": revision}, "tool": {"name": "cursor", "version": "2.4.0"},
        "files": [{"path": path, "conversations": [{
            "url": "https://api.cursor.com/v1/conversations/12345",
            "contributor": {"type": kind, "model_id": "anthropic/claude-opus-4-5-20251101"},
            "ranges": [{"start_line": start, "end_line": end, "content_hash": "murmur3:9f2e8a1b"}]}]}]})


# -- parsers, against the golden files --------------------------------------------------------

def test_git_ai_note_golden():
    marks = parse_git_ai_note((GOLDEN / "git_ai_mixed.note").read_text())
    expected = json.loads((GOLDEN / "git_ai_mixed.json").read_text())
    assert {path: runs(lines) for path, lines in marks.items()} == expected


def test_agent_trace_golden(caplog):
    with caplog.at_level(logging.WARNING, logger="bot.attestations"):
        traces = parse_agent_traces((GOLDEN / "traces.jsonl").read_text())
    expected = json.loads((GOLDEN / "traces.json").read_text())
    assert {rev: {path: runs(lines) for path, lines in files.items()} for rev, files in traces.items()} == expected
    # The bad lines were skipped with a warning naming where they are.
    messages = "\n".join(r.getMessage() for r in caplog.records)
    assert "traces.jsonl:3: not JSON" in messages and "traces.jsonl:4: no git vcs.revision" in messages
    assert "traces.jsonl:5: bad range" in messages


def test_descriptions_say_where_the_evidence_comes_from():
    marks = parse_git_ai_note((GOLDEN / "git_ai_mixed.note").read_text())
    assert marks["src/calc.py"][1].describe() == f"git-ai note (tool={TOOL}, model={MODEL})"
    assert marks["src/calc.py"][4].describe() == "git-ai note: written by a known human (Developer <dev@example.com>)"
    assert marks["src/lib.py"][1].describe() == "git-ai note"  # a session the metadata does not name
    helpers = parse_agent_traces((GOLDEN / "traces.jsonl").read_text())[
        "a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6e7f8a9b0"]["src/utils/helpers.ts"]
    assert helpers[10].describe() == "agent-trace (tool=cursor, model=openai/gpt-4o)"
    assert helpers[11].describe() == "agent-trace (mixed, tool=claude-code, model=anthropic/claude-sonnet-4-20250514)"


@pytest.mark.parametrize("text", [
    "",
    "src/a.py\n  s_x::t_y 1-3\n",                       # no divider
    "src/a.py\n  s_x::t_y 1-3\n---\n{not json",           # metadata not JSON
    "src/a.py\n  s_x::t_y 1-3\n---\n[1, 2]",              # metadata not an object
    "\x00\xff garbage \n---\n",
])
def test_unreadable_notes_give_nothing_and_a_warning(text, caplog):
    with caplog.at_level(logging.WARNING, logger="bot.attestations"):
        assert parse_git_ai_note(text, where="abc123") == {}
    assert any("abc123" in r.getMessage() for r in caplog.records)


def test_bad_entry_lines_are_skipped_and_the_rest_is_read(caplog):
    text = ("  s_orphan::t_entry 1-2\n"           # an entry before any path
            "src/a.py\n"
            "  s_c9883b05a2487d::t_9f8e7d6c5b4a32 1-x\n"   # not a range list
            "  s_c9883b05a2487d::t_9f8e7d6c5b4a32 5-2\n"   # backwards
            "  s_c9883b05a2487d::t_9f8e7d6c5b4a32 1-99999999\n"  # absurdly long: not expanded
            "  nokeyonly\n"
            "  d9978a8723e02b52 7,9-10\n"
            "---\n{\"schema_version\": \"authorship/3.0.0\", \"prompts\": {}, \"sessions\": 5}\n")
    with caplog.at_level(logging.WARNING, logger="bot.attestations"):
        marks = parse_git_ai_note(text)
    assert sorted(marks["src/a.py"]) == [7, 9, 10] and all(a.is_ai for a in marks["src/a.py"].values())
    assert sum("unreadable attestation line" in r.getMessage() for r in caplog.records) == 5


def test_trace_records_of_other_shapes_are_skipped_not_fatal():
    text = "\n".join([
        "[1, 2, 3]", "null", '"a string"',
        json.dumps({"vcs": {"type": "jj", "revision": "kkmpptxz"}, "files": []}),   # not git
        json.dumps({"vcs": {"revision": "abc1234"}, "files": [{"path": "a.py"}]}),  # no conversations
        json.dumps({"vcs": {"revision": "abc1234"}, "files": "nope"}),
        json.dumps({"vcs": {"revision": "abc1234"}, "files": [{"path": "a.py", "conversations": [
            {"contributor": {"type": "ai"}, "ranges": [{"start_line": True, "end_line": 2},
                                                        {"start_line": "1", "end_line": 2},
                                                        {"start_line": 3, "end_line": 3}]}]}]}),
    ])
    traces = parse_agent_traces(text)
    assert list(traces) == ["abc1234"] and list(traces["abc1234"]["a.py"]) == [3]
    # An abbreviated revision still finds its commit; a different commit does not.
    assert traces_for(traces, "ABC1234" + "0" * 33)["a.py"][3].is_ai
    assert traces_for(traces, "abc0000" + "0" * 33) == {}


def test_combining_sources_prefers_ai():
    human = Attestation(False, "git-ai note", key="h_31dce776f88375")
    ai = Attestation(True, "agent-trace", tool="cursor", key="ai")
    assert combine([("c1", {"a.py": {1: human, 2: human}}), ("c1", {"a.py": {1: ai}})]) == \
        {"c1": {"a.py": {1: ai, 2: human}}}
    assert combine([("c1", {"a.py": {1: ai}}), ("c1", {"a.py": {1: human}})]) == {"c1": {"a.py": {1: ai}}}
    assert combine([("c1", {})]) == {}


# -- attribute_lines with line attestations ---------------------------------------------------

def test_note_on_a_human_commit_marks_exactly_its_lines(tmp_path):
    repo = make_repo(tmp_path)
    base = commit_file(repo, {"a.py": ["one"]}, "base")
    c1 = commit_file(repo, {"a.py": ["one", "two", "three", "four"], "b.py": ["x"]}, "Add things")
    commits = pr_commits(repo, base)
    final = parse_diff(git(repo, "diff", base, "HEAD"))
    marks = commit_line_marks([c1], {c1: note({"a.py": "2-3"})}, None)
    result = attribute_lines(final, commits, line_marks=marks)
    assert {k for k, p in result.items() if p.is_ai} == {("a.py", 2), ("a.py", 3)}
    assert result[("a.py", 2)].reason == f"git-ai note (tool={TOOL}, model={MODEL}) in {c1[:7]}"
    assert result[("a.py", 2)].commit == c1
    assert result[("a.py", 4)].reason == f"no AI signal on commit {c1[:7]}"
    assert not result[("b.py", 1)].is_ai


def test_attested_lines_follow_later_edits_and_renames(tmp_path):
    """Note line numbers are valid at their commit; later commits move and rename the lines."""
    repo = make_repo(tmp_path)
    base = commit_file(repo, {"keep.py": ["k"]}, "base")
    body = [f"a{i} = {i}" for i in range(1, 11)]
    c1 = commit_file(repo, {"old.py": body}, "Add a")
    git(repo, "mv", "old.py", "new.py")
    c2 = commit_file(repo, {"new.py": ["top1 = 0", "top2 = 0", *body]}, "Rename, add on top")
    commits = pr_commits(repo, base)
    assert commits[1].files[0].status == "renamed"
    final = parse_diff(git(repo, "diff", "-M", base, "HEAD"))
    # c1's note is about old.py at c1. c2's marks new.py:1 and new.py:5, but line 5 (a3) is c1's
    # and c1's note leaves it out: a note only speaks for the lines its own commit wrote.
    notes = {c1: note({"old.py": "2"}), c2: note({"new.py": "1,5"})}
    result = attribute_lines(final, commits, line_marks=commit_line_marks([c1, c2], notes, None))
    assert {k: p.commit for k, p in result.items() if p.is_ai} == {("new.py", 1): c2, ("new.py", 4): c1}
    assert (repo / "new.py").read_text().split("\n")[3] == "a2 = 2"


def test_human_attestation_beats_an_ai_trailer_but_not_a_pr_signal(tmp_path):
    repo = make_repo(tmp_path)
    base = commit_file(repo, {"a.py": ["one"]}, "base")
    c1 = commit_file(repo, {"a.py": ["one", "two", "three"]},
                     "Pair session\n\nCo-Authored-By: Claude <noreply@anthropic.com>")
    commits = pr_commits(repo, base)
    final = parse_diff(git(repo, "diff", base, "HEAD"))
    marks = commit_line_marks([c1], {c1: note({"a.py": "3"}, human=True)}, None)
    result = attribute_lines(final, commits, line_marks=marks)
    assert result[("a.py", 2)].is_ai and "Co-authored-by noreply@anthropic.com" in result[("a.py", 2)].reason
    assert not result[("a.py", 3)].is_ai
    assert result[("a.py", 3)].reason == \
        f"git-ai note: written by a known human (Ada Human <ada@example.com>) in {c1[:7]}"
    with_pr = attribute_lines(final, commits, line_marks=marks, pr_reason="agent branch 'claude/x'")
    assert with_pr[("a.py", 3)].is_ai and with_pr[("a.py", 3)].reason == "agent branch 'claude/x'"


def test_agent_trace_for_the_introducing_commit_marks_lines(tmp_path):
    repo = make_repo(tmp_path)
    base = commit_file(repo, {"a.py": ["one"]}, "base")
    c1 = commit_file(repo, {"a.py": ["one", "two", "three"]}, "Add")
    c2 = commit_file(repo, {"a.py": ["zero", "one", "two", "three"]}, "Add zero")
    final = parse_diff(git(repo, "diff", base, "HEAD"))
    traces = trace(c1, "a.py", 3, 3) + "\n" + trace(c2, "a.py", 2, 3) + "\n"  # c2 added only line 1
    result = attribute_lines(final, pr_commits(repo, base), line_marks=commit_line_marks([c1, c2], {}, traces))
    assert {k for k, p in result.items() if p.is_ai} == {("a.py", 4)}
    assert result[("a.py", 4)].reason == (
        f"agent-trace (tool=cursor, model=anthropic/claude-opus-4-5-20251101) in {c1[:7]}")


# -- the local repository: git notes and a committed .agent-trace/traces.jsonl ----------------

def test_local_repo_reads_notes_and_traces(tmp_path):
    repo = make_repo(tmp_path)
    base = commit_file(repo, {"README.md": ["hello"]}, "base")
    c1 = commit_file(repo, {"src/calc.py": ["def f(x):", "    y = x * 2", "    return y"]}, "Add f")
    git(repo, "notes", "--ref=ai", "add", "-m", note({"src/calc.py": "2-3"}), c1)
    c2 = commit_file(repo, {"src/util.py": ["A = 1", "B = 2"]}, "Add util")
    commit_file(repo, {".agent-trace/traces.jsonl": [trace(c2, "src/util.py", 2, 2)]}, "Record traces")
    # A note in the default namespace is not git-ai's (refs/notes/commits must not be used).
    git(repo, "notes", "add", "-m", note({"src/util.py": "1"}), c2)

    local = LocalRepo(repo)
    d = local.diff(base, "HEAD")
    assert [c.sha for c in local.commits(d.base, d.head)][:2] == [c1, c2]
    result = local.line_provenance(d)
    ai = {k: p.reason for k, p in result.items() if p.is_ai}
    by_note, by_trace = f"git-ai note (tool={TOOL}, model={MODEL})", "agent-trace (tool=cursor, model="
    assert ai == {("src/calc.py", 2): f"{by_note} in {c1[:7]}", ("src/calc.py", 3): f"{by_note} in {c1[:7]}",
                  ("src/util.py", 2): f"{by_trace}anthropic/claude-opus-4-5-20251101) in {c2[:7]}"}
    assert result[("src/calc.py", 1)].commit == c1 and not result[("src/calc.py", 1)].is_ai

    # The working tree: uncommitted traces are read from disk; the uncommitted line has no commit.
    (repo / ".agent-trace" / "traces.jsonl").write_text(trace(c2, "src/util.py", 1, 1) + "\n")
    (repo / "src" / "util.py").write_text("A = 1\nB = 2\nC = 3\n")
    wt = local.line_provenance(local.diff(base))
    assert {k for k, p in wt.items() if p.is_ai} == {("src/calc.py", 2), ("src/calc.py", 3), ("src/util.py", 1)}
    assert wt[("src/util.py", 3)].commit is None and not wt[("src/util.py", 3)].is_ai


def test_local_repo_without_notes_or_commits(tmp_path):
    repo = make_repo(tmp_path)
    local = LocalRepo(repo)
    (repo / "a.py").write_text("x = 1\n")
    d = local.diff()
    assert local.commits(d.base, d.head) == [] and local.ai_notes(["0" * 40]) == {}
    assert local.line_provenance(d)[("a.py", 1)].commit is None
    c1 = commit_file(repo, {"a.py": ["x = 1"]}, "first")
    d = local.diff(None, "HEAD")  # a root commit: its base is the empty tree
    assert [c.sha for c in local.commits(d.base, d.head)] == [c1]
    assert local.ai_notes([c1]) == {} and local.agent_traces(c1) is None
    assert not local.line_provenance(d)[("a.py", 1)].is_ai
