"""bot.localrepo on real repositories made with the git command line in tmp_path."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from analyzer.diff import parse_diff
from analyzer.types import FileDiff
from bot.localrepo import LocalRepo, RepoDiff, RepoError
from gitrepo import commit, git, write


@pytest.fixture(autouse=True)
def isolated_git(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the machine's git config (aliases, noprefix, hooks...) out of the tests."""
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", os.devnull)
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("GIT_DIR", raising=False)
    monkeypatch.delenv("GIT_WORK_TREE", raising=False)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "repo"
    r.mkdir()
    git(r, "init", "-q", "-b", "main")
    git(r, "config", "user.name", "Test")
    git(r, "config", "user.email", "test@example.com")
    return r


CODE = "def f(x):\n    y = x + 1\n    return y\n\n\ndef g():\n    return 2\n"


def by_path(d: RepoDiff) -> dict[str, FileDiff]:
    return {f.path: f for f in d.files}


def file_lines(repo: LocalRepo, path: str, rev: str | None) -> list[str]:
    data = repo.file_text(path, rev)
    assert data is not None, path
    return [line.removesuffix("\r") for line in data.decode().split("\n")]


def assert_lines_match_new_file(repo: LocalRepo, d: RepoDiff, check_old: bool = False) -> None:
    """Every added or context line of the diff is the new file's line at that number (and every
    removed or context line the old file's, with ``check_old``)."""
    for f in d.files:
        if f.is_binary or f.path in d.undecodable:
            continue
        new = file_lines(repo, f.new_path, d.head) if f.new_path else []
        old = file_lines(repo, f.old_path, d.base) if f.old_path and check_old else None
        for h in f.hunks:
            for ln in h.lines:
                if ln.kind != "-":
                    assert new[ln.new_lineno - 1] == ln.text, (f.path, ln)
                if ln.kind != "+" and old is not None:
                    assert old[ln.old_lineno - 1] == ln.text, (f.path, ln)


# --- opening and revisions -------------------------------------------------------------------

def test_not_a_repository(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(RepoError, match=f"not a git repository: {plain}"):
        LocalRepo(plain)
    with pytest.raises(RepoError, match="not a git repository: .*no such directory"):
        LocalRepo(tmp_path / "missing")


def test_opens_from_a_subdirectory(root: Path) -> None:
    write(root, "pkg/a.py", "a = 1\n")
    commit(root)
    assert LocalRepo(root / "pkg").root == root


def test_resolve(root: Path) -> None:
    write(root, "a.py", "a = 1\n")
    first = commit(root)
    git(root, "tag", "v1")
    write(root, "a.py", "a = 2\n")
    second = commit(root)
    repo = LocalRepo(root)
    assert repo.resolve("HEAD") == second
    assert repo.resolve("main") == second
    assert repo.resolve("v1") == first == repo.resolve("HEAD~1") == repo.resolve(first[:8])
    for bad in ("nope", "HEAD~5", "--output=/tmp/x", ""):
        with pytest.raises(RepoError, match=f"unknown revision '{bad}'"):
            repo.resolve(bad)


def test_unknown_revision_in_a_repository_without_commits(root: Path) -> None:
    with pytest.raises(RepoError, match="unknown revision 'HEAD'.*no commits yet"):
        LocalRepo(root).resolve("HEAD")


# --- which change is reviewed ----------------------------------------------------------------

def test_working_tree_staged_and_untracked(root: Path) -> None:
    write(root, "mod.py", CODE)
    write(root, "staged.py", "s = 1\n")
    write(root, ".gitignore", "build/\n*.log\n")
    commit(root)
    write(root, "mod.py", CODE.replace("x + 1", "x + 2"))                # unstaged edit
    write(root, "staged.py", "s = 1\nt = 2\n")
    git(root, "add", "staged.py")                                          # staged edit
    write(root, "new_staged.py", "n = 1\n")
    git(root, "add", "new_staged.py")                                      # staged new file
    write(root, "untracked.py", "u = 1\nv = 2\n")                          # untracked
    write(root, "build/out.py", "ignored = 1\n")                           # ignored
    write(root, "debug.log", "ignored\n")
    repo = LocalRepo(root)
    d = repo.diff()
    files = by_path(d)
    assert sorted(files) == ["mod.py", "new_staged.py", "staged.py", "untracked.py"]
    assert (files["mod.py"].status, files["mod.py"].added_linenos()) == ("modified", [2])
    assert files["staged.py"].added_linenos() == [2]
    assert (files["new_staged.py"].status, files["new_staged.py"].added_linenos()) == ("added", [1])
    untracked = files["untracked.py"]
    assert (untracked.status, untracked.added_linenos()) == ("added", [1, 2])
    assert d.head is None and d.base == git(root, "rev-parse", "HEAD")
    assert repo.diff_text() == d.text and parse_diff(d.text) == list(d.files)
    assert_lines_match_new_file(repo, d)
    # The index is untouched: the untracked file is still untracked.
    assert git(root, "status", "--porcelain", "--", "untracked.py") == "?? untracked.py"


def test_staged_only(root: Path) -> None:
    write(root, "a.py", CODE)
    commit(root)
    write(root, "a.py", CODE + "\n\ndef h():\n    return 3\n")
    git(root, "add", "a.py")
    (f,) = LocalRepo(root).diff().files
    assert f.added_linenos() == [8, 9, 10, 11]


def test_base_alone_is_base_against_the_working_tree(root: Path) -> None:
    write(root, "a.py", CODE)
    c1 = commit(root)
    write(root, "b.py", "b = 1\n")
    commit(root)
    write(root, "a.py", CODE.replace("return 2", "return 20"))
    write(root, "c.py", "c = 1\n")
    repo = LocalRepo(root)
    d = repo.diff(base=c1)
    assert sorted(by_path(d)) == ["a.py", "b.py", "c.py"]
    assert d.base == c1 and d.head is None
    assert_lines_match_new_file(repo, d)


def test_base_and_head(root: Path) -> None:
    write(root, "a.py", CODE)
    c1 = commit(root)
    write(root, "a.py", CODE.replace("y = x + 1", "y = x - 1\n    y *= 2"))
    write(root, "b.py", "b = 1\n")
    c2 = commit(root)
    write(root, "a.py", "worktree edits are not part of c1..c2\n")
    repo = LocalRepo(root)
    d = repo.diff(base="HEAD~1", head="main")
    assert (d.base, d.head) == (c1, c2)
    files = by_path(d)
    assert files["a.py"].added_linenos() == [2, 3] and files["b.py"].status == "added"
    assert_lines_match_new_file(repo, d)


def test_head_alone_is_that_commit(root: Path) -> None:
    write(root, "a.py", CODE)
    root_commit = commit(root)
    write(root, "b.py", "b = 1\n")
    second = commit(root)
    repo = LocalRepo(root)
    assert [f.path for f in repo.diff(head=second).files] == ["b.py"]
    first = repo.diff(head=root_commit)  # root commit: against the empty tree
    assert [(f.status, f.path) for f in first.files] == [("added", "a.py")]


def test_invalid_revision(root: Path) -> None:
    write(root, "a.py", CODE)
    commit(root)
    repo = LocalRepo(root)
    with pytest.raises(RepoError, match="unknown revision 'no-such-branch'"):
        repo.diff(base="no-such-branch")
    with pytest.raises(RepoError, match="unknown revision 'deadbeef'"):
        repo.diff(base="HEAD", head="deadbeef")


def test_repository_without_commits(root: Path) -> None:
    write(root, "a.py", "a = 1\n")
    git(root, "add", "a.py")
    write(root, "b.py", "b = 1\n")
    d = LocalRepo(root).diff()
    assert [(f.status, f.path) for f in d.files] == [("added", "a.py"), ("added", "b.py")]
    assert d.base == git(root, "hash-object", "-t", "tree", "/dev/null")


def test_empty_diff(root: Path) -> None:
    write(root, "a.py", CODE)
    commit(root)
    d = LocalRepo(root).diff()
    assert (d.text, d.files, d.undecodable) == ("", (), frozenset())


# --- files that cannot be scored -------------------------------------------------------------

def test_binary_file(root: Path) -> None:
    blob = bytes(range(256))
    write(root, "img.png", blob)
    commit(root)
    write(root, "img.png", blob[::-1])
    write(root, "new.bin", b"\x00\x01binary")
    files = by_path(LocalRepo(root).diff())
    assert files["img.png"].is_binary and files["img.png"].hunks == ()
    assert files["new.bin"].is_binary and files["new.bin"].status == "added"


def test_non_utf8_file(root: Path) -> None:
    write(root, "latin1.py", "s = 'caf\xe9'\n".encode("latin-1"))
    write(root, "ok.py", "s = 'café'\n")
    commit(root)
    write(root, "latin1.py", "s = 'caf\xe9!'\n".encode("latin-1"))
    write(root, "ok.py", "s = 'café!'\n")
    write(root, "untracked_latin1.py", "t = '\xff'\n".encode("latin-1"))
    repo = LocalRepo(root)
    d = repo.diff()
    assert d.undecodable == {"latin1.py", "untracked_latin1.py"}
    assert "\ufffd" in d.text and "café!" in d.text
    assert by_path(d)["latin1.py"].added_linenos() == [1]
    assert repo.file_text("latin1.py") == "s = 'caf\xe9!'\n".encode("latin-1")  # raw bytes


def test_rename_only(root: Path) -> None:
    write(root, "old.py", CODE)
    commit(root)
    git(root, "mv", "old.py", "new.py")
    (f,) = LocalRepo(root).diff().files
    assert (f.status, f.old_path, f.new_path, f.hunks, f.added_linenos()) == (
        "renamed", "old.py", "new.py", (), [])


def test_deletion_only(root: Path) -> None:
    write(root, "gone.py", CODE)
    write(root, "kept.py", CODE)
    commit(root)
    (root / "gone.py").unlink()
    write(root, "kept.py", CODE.replace("    y = x + 1\n", ""))
    files = by_path(LocalRepo(root).diff())
    assert (files["gone.py"].status, files["gone.py"].new_path) == ("deleted", None)
    assert files["gone.py"].added_linenos() == [] and files["kept.py"].added_linenos() == []


def test_non_ascii_and_spaced_paths(root: Path) -> None:
    write(root, "dir/é f.py", "a = 1\n")
    commit(root)
    write(root, "dir/é f.py", "a = 2\n")
    write(root, "ü new.py", "b = 1\n")
    repo = LocalRepo(root)
    d = repo.diff()
    assert sorted(by_path(d)) == ["dir/é f.py", "ü new.py"]
    assert repo.file_text("ü new.py") == b"b = 1\n"
    assert_lines_match_new_file(repo, d)


# --- file contents ---------------------------------------------------------------------------

def test_file_text(root: Path) -> None:
    write(root, "a.py", "v1\n")
    c1 = commit(root)
    write(root, "a.py", "v2\n")
    os.symlink("/etc/passwd", root / "link")
    repo = LocalRepo(root)
    assert repo.file_text("a.py") == b"v2\n"
    assert repo.file_text("a.py", c1) == b"v1\n" == repo.file_text("a.py", "HEAD")
    assert repo.file_text(str(root / "a.py")) == b"v2\n"
    assert repo.file_text("missing.py") is None and repo.file_text("missing.py", "HEAD") is None
    assert repo.file_text("link") == b"/etc/passwd"  # the target, never the file it points to
    for outside in ("../x.py", "/etc/passwd"):
        with pytest.raises(RepoError, match="outside the repository"):
            repo.file_text(outside)
    with pytest.raises(RepoError, match="unknown revision 'nope'"):
        repo.file_text("a.py", "nope")


def test_random_edits_keep_line_numbers_right(root: Path) -> None:
    """Seeded random edits (insertions, deletions, replacements, CRLF files, files without a final
    newline): every hunk line of the parsed diff is the line git has at that number."""
    rng = random.Random(1234)
    lines = {f"f{i}.py": [f"v{i}_{k} = {k}" for k in range(rng.randint(1, 40))] for i in range(4)}

    def save() -> None:
        for i, (path, body) in enumerate(sorted(lines.items())):
            eol = "\r\n" if i == 3 else "\n"
            final = "" if i == 2 else eol
            write(root, path, eol.join(body) + final)

    save()
    commit(root)
    repo = LocalRepo(root)
    checked = 0
    for step in range(12):
        for body in lines.values():
            for _ in range(rng.randint(0, 4)):
                op, k = rng.choice("ird"), rng.randint(0, len(body))
                if op == "i" or not body:
                    body.insert(k, f"new_{step}_{k} = {rng.random():.3f}")
                elif op == "r":
                    body[min(k, len(body) - 1)] = f"edit_{step} = {k}"
                else:
                    del body[min(k, len(body) - 1)]
        save()
        d = repo.diff()
        assert_lines_match_new_file(repo, d, check_old=True)
        checked += sum(len(h.lines) for f in d.files for h in f.hunks)
        commit(root, f"step {step}")
    assert checked > 200  # the edits really produced hunks to check


def test_without_git_on_path_the_error_names_the_fix(root: Path) -> None:
    """GitPython refuses to import when no git executable is found; a user gets our message."""
    import subprocess
    import sys

    code = ("from bot.localrepo import LocalRepo, RepoError\n"
            f"try:\n    LocalRepo({str(root)!r})\nexcept RepoError as e:\n    print(e)\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_PYTHON")}
    env.update(PATH=str(root / "no-bin"), PYTHONPATH=os.pathsep.join(sys.path))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert "git is not installed" in out.stdout, out.stderr[-2000:]


def test_revisions_spelled_like_options_are_unknown_revisions(root: Path) -> None:
    write(root, "a.py", CODE)
    commit(root, "one")
    repo = LocalRepo(root)
    for rev in ("--output=/tmp/x", "-p", "HEAD~5"):
        with pytest.raises(RepoError, match="unknown revision"):
            repo.resolve(rev)
