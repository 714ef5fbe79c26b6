"""bot.provenance: AI signals per commit and per PR, and line attribution checked against git blame."""

from __future__ import annotations

import random
import subprocess
from pathlib import Path

import pytest

from analyzer.diff import parse_diff
from bot.provenance import (
    CommitInfo,
    Person,
    attribute_lines,
    commit_ai_reason,
    pull_request_ai_reason,
)

HUMAN = Person("Ada Human", "ada@example.com", "ada")


def commit(message: str, author: Person = HUMAN, committer: Person | None = None) -> CommitInfo:
    return CommitInfo("c0ffee" + "0" * 34, message, author, committer or author)


@pytest.mark.parametrize("message, author, expected", [
    ("Fix\n\nCo-Authored-By: Claude Opus 4.5 <noreply@anthropic.com>", HUMAN, "noreply@anthropic.com (Claude Code)"),
    ("Fix\n\nCo-authored-by: Cursor <cursoragent@cursor.com>", HUMAN, "Cursor"),
    ("Fix\n\nco-authored-by: aider (gpt-5) <aider@aider.chat>", HUMAN, "aider"),
    ("Fix\n\nCo-authored-by: copilot-swe-agent[bot] <198982749+Copilot@users.noreply.github.com>", HUMAN,
     "GitHub Copilot"),
    ("Fix\n\nCo-Authored-By: Devin <158243242+devin-ai-integration[bot]@users.noreply.github.com>", HUMAN, "Devin"),
    ("Fix", Person("Codex", "x@example.com", "chatgpt-codex-connector[bot]"), "author chatgpt-codex-connector[bot]"),
    ("Fix", Person("Ada Human (aider)", "ada@example.com", None), "(aider)"),
    ("aider: fix the loop", HUMAN, "aider: "),
    ("Fix\n\nClaude-Session: https://claude.ai/code/session_01abc", HUMAN, "Claude-Session"),
    ("Fix\n\n🤖 Generated with [Claude Code](https://claude.com/claude-code)", HUMAN, "Claude Code (footer)"),
])
def test_commit_signals(message, author, expected):
    reason = commit_ai_reason(commit(message, author))
    assert reason is not None and expected in reason


@pytest.mark.parametrize("message, author", [
    ("Fix typo", HUMAN),
    # A person called Claude is not an agent: only the e-mail counts.
    ("Fix\n\nCo-authored-by: Claude Monet <claude@monet.fr>", HUMAN),
    ("Fix", Person("Claude", "claude@example.com", "claude")),
    ("Bump deps", Person("dependabot[bot]", "49699333+dependabot[bot]@users.noreply.github.com",
                         "dependabot[bot]")),
])
def test_no_signal_for_humans_and_non_agent_bots(message, author):
    assert commit_ai_reason(commit(message, author)) is None


def test_pull_request_signals():
    assert "copilot/fix-1" in pull_request_ai_reason("copilot/fix-1", [], "ada", ())
    assert "AI-Generated" in pull_request_ai_reason("feature", ["AI-Generated"], "ada", ("ai-generated",))
    assert "Copilot" in pull_request_ai_reason("feature", [], "Copilot", ())
    assert pull_request_ai_reason("feature/copilot", ["bug"], "ada", ("ai-generated",)) is None


# -- attribution, checked against git blame on a real repository -----------------------------

def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


def make_repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.name", "Ada Human")
    git(repo, "config", "user.email", "ada@example.com")
    return repo


def commit_file(repo: Path, files: dict[str, list[str] | None], message: str) -> str:
    for path, lines in files.items():
        if lines is None:
            git(repo, "rm", "-q", path)
            continue
        (repo / path).parent.mkdir(parents=True, exist_ok=True)
        (repo / path).write_text("".join(line + "\n" for line in lines))
        git(repo, "add", path)
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD").strip()


def pr_commits(repo: Path, base: str) -> list[CommitInfo]:
    out = []
    for sha in git(repo, "rev-list", "--reverse", f"{base}..HEAD").split():
        message = git(repo, "log", "-1", "--format=%B", sha)
        name, email = git(repo, "log", "-1", "--format=%an%x00%ae", sha).strip().split("\0")
        files = tuple(parse_diff(git(repo, "diff", "-M", f"{sha}^", sha)))
        out.append(CommitInfo(sha, message, Person(name, email), Person(name, email), files))
    return out


def blame_owner(repo: Path, path: str, line: int) -> str:
    return git(repo, "blame", "--porcelain", "-L", f"{line},{line}", "HEAD", "--", path).split()[0]


def test_attribution_matches_git_blame(tmp_path):
    repo = make_repo(tmp_path)
    rng = random.Random(7)
    base_lines = [f"base_{i} = {i}" for i in range(40)]
    base = commit_file(repo, {"src/app.py": base_lines, "src/old.py": ["x = 1", "y = 2"]}, "base")

    # Several random edits by a human and by an agent, one on top of the other.
    lines = list(base_lines)
    for step in range(6):
        for _ in range(3):
            at = rng.randrange(len(lines) + 1)
            if rng.random() < 0.3 and lines:
                del lines[min(at, len(lines) - 1)]
            else:
                lines[at:at] = [f"step{step}_{k} = {rng.random():.6f}" for k in range(rng.randint(1, 3))]
        message = f"step {step}"
        if step % 2:
            message += "\n\nCo-Authored-By: Claude <noreply@anthropic.com>"
        commit_file(repo, {"src/app.py": lines}, message)
    # A rename with an agent edit, and a new file.
    git(repo, "mv", "src/old.py", "src/new.py")
    commit_file(repo, {"src/new.py": ["x = 1", "z = 3", "y = 2"], "src/fresh.py": ["a = 1", "b = 2"]},
                "rename\n\nCo-authored-by: Cursor <cursoragent@cursor.com>")

    commits = pr_commits(repo, base)
    final = parse_diff(git(repo, "diff", "-M", base, "HEAD"))
    result = attribute_lines(final, commits)

    ai_shas = {c.sha for c in commits if commit_ai_reason(c)}
    expected_keys = {(fd.path, n) for fd in final for n in fd.added_linenos()}
    assert set(result) == expected_keys and len(expected_keys) > 10
    for (path, n), prov in result.items():
        owner = blame_owner(repo, path, n)
        assert prov.commit == owner, (path, n)
        assert prov.is_ai == (owner in ai_shas), (path, n, prov.reason)
    assert result[("src/new.py", 2)].is_ai and "Cursor" in result[("src/new.py", 2)].reason
    assert any(p.is_ai for p in result.values()) and not all(p.is_ai for p in result.values())


def test_pr_level_signal_marks_every_added_line(tmp_path):
    repo = make_repo(tmp_path)
    base = commit_file(repo, {"a.py": ["one"]}, "base")
    commit_file(repo, {"a.py": ["one", "two"]}, "human commit on an agent branch")
    final = parse_diff(git(repo, "diff", base, "HEAD"))
    result = attribute_lines(final, pr_commits(repo, base), pr_reason="agent branch 'codex/x'")
    assert result == {("a.py", 2): result[("a.py", 2)]}
    assert result[("a.py", 2)].is_ai and result[("a.py", 2)].reason == "agent branch 'codex/x'"


def test_lines_no_commit_explains_are_not_ai(tmp_path):
    repo = make_repo(tmp_path)
    base = commit_file(repo, {"a.py": ["one"]}, "base")
    commit_file(repo, {"a.py": ["one", "two"]}, "x")
    final = parse_diff(git(repo, "diff", base, "HEAD"))
    prov = attribute_lines(final, [])[("a.py", 2)]
    assert not prov.is_ai and prov.commit is None
