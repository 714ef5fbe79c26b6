"""analyzer.diff: golden files made by real git (and GNU diff) commands, plus bad input.

Each ``tests/golden/diff/NAME.diff`` was produced by the recipe ``CASES[NAME]`` below in a fresh
repository; ``NAME.json`` is the expected parse. To rebuild both after a deliberate change:

    PTBOT_UPDATE_GOLDEN=1 /work/venv/bin/pytest tests/test_diff.py -k regenerate

then read ``git diff tests/golden/diff`` before committing: the JSON is the specification.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from analyzer.diff import DecodedDiff, DiffError, anchorable_lines, decode_diff, parse_diff
from analyzer.types import DiffLine, FileDiff

GOLDEN = Path(__file__).parent / "golden" / "diff"
UPDATE = os.environ.get("PTBOT_UPDATE_GOLDEN") == "1"
FIXED_DATE = "2024-01-02T03:04:05+00:00"


class Repo:
    """A throw-away git repository with deterministic identity, dates and config."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True)
        self.env = {
            **os.environ, "HOME": str(root), "GIT_CONFIG_GLOBAL": os.devnull,
            "GIT_CONFIG_NOSYSTEM": "1", "GIT_AUTHOR_DATE": FIXED_DATE,
            "GIT_COMMITTER_DATE": FIXED_DATE, "TZ": "UTC", "LC_ALL": "C",
        }
        self.git("init", "-q", "-b", "main")
        self.git("config", "user.name", "Test")
        self.git("config", "user.email", "test@example.com")
        self.git("config", "core.autocrlf", "false")

    def git(self, *args: str) -> bytes:
        return self.run("git", *args)

    def run(self, *argv: str, ok: tuple[int, ...] = (0,)) -> bytes:
        p = subprocess.run(argv, cwd=self.root, env=self.env, capture_output=True)
        assert p.returncode in ok, p.stderr.decode(errors="replace")
        return p.stdout

    def write(self, path: str, content: str | bytes) -> None:
        p = self.root / path
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(content.encode() if isinstance(content, str) else content)

    def commit(self, msg: str = "c") -> None:
        self.git("add", "-A")
        self.git("commit", "-q", "-m", msg)


def numbered(n: int, fmt: str = "x{} = {}\n") -> str:
    return "".join(fmt.format(i, i) for i in range(1, n + 1))


PY = ("import os\n\n\ndef area(w, h):\n    if w < 0:\n        raise ValueError(w)\n"
      "    return w * h\n")
PNG = bytes(range(256)) * 4


def case_multi_hunk(r: Repo) -> bytes:
    body = "def main():\n" + numbered(30, "    v{} = {}\n")
    r.write("app.py", body)
    r.commit()
    lines = body.splitlines(keepends=True)
    lines[3] = "    v3 = 333\n"
    lines.insert(5, "    extra = v4 + 1\n")
    del lines[26]
    r.write("app.py", "".join(lines))
    return r.git("diff")


def case_no_count_header(r: Repo) -> bytes:
    r.write("one.py", "x = 1\n")
    r.commit()
    r.write("one.py", "x = 2\n")
    return r.git("diff")


def case_added_file(r: Repo) -> bytes:
    r.write("keep.py", "k = 1\n")
    r.commit()
    r.write("pkg/new.py", PY)
    r.git("add", "-A")
    return r.git("diff", "--cached")


def case_deleted_file(r: Repo) -> bytes:
    r.write("gone.py", PY)
    r.commit()
    r.git("rm", "-q", "gone.py")
    return r.git("diff", "--cached")


def case_rename_pure(r: Repo) -> bytes:
    r.write("src/old.py", PY)
    r.commit()
    r.git("mv", "src/old.py", "src/new.py")
    return r.git("diff", "--cached", "-M")


def case_rename_edit(r: Repo) -> bytes:
    r.write("calc.py", numbered(20))
    r.commit()
    (r.root / "lib").mkdir()
    r.git("mv", "calc.py", "lib/calc2.py")
    r.write("lib/calc2.py", numbered(20).replace("x10 = 10", "x10 = 11"))
    r.git("add", "-A")
    return r.git("diff", "--cached", "-M")


def case_copy(r: Repo) -> bytes:
    r.write("base.py", numbered(20))
    r.commit()
    r.write("copy.py", numbered(20).replace("x5 = 5", "x5 = -5"))
    r.git("add", "-A")
    return r.git("diff", "--cached", "-C", "-C")


def case_mode_change(r: Repo) -> bytes:
    r.write("run.sh", "echo hi\n")
    r.write("tool.py", "print(1)\n")
    r.commit()
    (r.root / "run.sh").chmod(0o755)
    (r.root / "tool.py").chmod(0o755)
    r.write("tool.py", "print(2)\n")
    return r.git("diff")


def case_binary(r: Repo) -> bytes:
    r.write("img.png", PNG)
    r.commit()
    r.write("img.png", PNG[::-1])
    r.write("new.bin", b"\x00\x01\x02")
    r.git("add", "-A")
    return r.git("diff", "--cached")


def case_binary_patch(r: Repo) -> bytes:
    r.write("img.png", PNG)
    r.write("a.py", "a = 1\n")
    r.commit()
    r.write("img.png", PNG[::-1])
    r.write("a.py", "a = 2\n")
    return r.git("diff", "--binary")


def case_no_newline(r: Repo) -> bytes:
    r.write("tail.py", "a = 1\nb = 2")
    r.write("gain.py", "c = 3")
    r.commit()
    r.write("tail.py", "a = 1\nb = 3")
    r.write("gain.py", "c = 3\nd = 4\n")
    return r.git("diff")


def case_quoted_paths(r: Repo) -> bytes:
    r.write("é.py", "a = 1\n")
    r.write("dir/ü ñ.py", "b = 1\n")
    r.commit()
    r.write("é.py", "a = 2\n")
    r.git("mv", "dir/ü ñ.py", "dir/ö.py")
    r.write('quote"d.py', "q = 1\n")
    r.write("tab\tname.py", "t = 1\n")
    r.git("add", "-A")
    return r.git("diff", "--cached", "-M")


def case_spaces_in_path(r: Repo) -> bytes:
    r.write("my dir/my file.py", "a = 1\n")
    r.write("old name.py", PY)
    r.write("script name.sh", "echo\n")
    r.commit()
    r.write("my dir/my file.py", "a = 2\n")
    r.git("mv", "old name.py", "new name.py")
    (r.root / "script name.sh").chmod(0o755)
    r.git("add", "-A")
    return r.git("diff", "--cached", "-M")


def case_crlf(r: Repo) -> bytes:
    r.write("win.py", "a = 1\r\nb = 2\r\nc = 3\r\n")
    r.commit()
    r.write("win.py", "a = 1\r\nb = 20\r\nc = 3\r\nd = 4\r\n")
    return r.git("diff")


def case_empty(r: Repo) -> bytes:
    r.write("same.py", "a = 1\n")
    r.commit()
    return r.git("diff")


def case_plain_diff_u(r: Repo) -> bytes:
    r.write("old/calc.py", numbered(12))
    r.write("new/calc.py", numbered(12).replace("x3 = 3\n", "x3 = 4\nx3b = 5\n"))
    for p in ("old/calc.py", "new/calc.py"):
        os.utime(r.root / p, (1_700_000_000, 1_700_000_000))
    return r.run("diff", "-u", "old/calc.py", "new/calc.py", ok=(1,))


def case_plain_diff_ru(r: Repo) -> bytes:
    r.write("v1/a.py", numbered(5))
    r.write("v1/b.py", "b = 1\n")
    r.write("v2/a.py", numbered(5).replace("x5 = 5", "x5 = 6"))
    r.write("v2/b.py", "b = 2\n")
    r.write("v2/only_new.py", "n = 1\n")
    for p in r.root.rglob("*.py"):
        os.utime(p, (1_700_000_000, 1_700_000_000))
    return r.run("diff", "-ru", "v1", "v2", ok=(1,))


def case_format_patch(r: Repo) -> bytes:
    r.write("lib.py", PY)
    r.commit("first")
    r.write("lib.py", PY.replace("w * h", "h * w"))
    r.write("notes.py", "# notes\n")
    r.commit("swap factors\n\nA body line that starts with a space:\n diff --stat like text\n")
    return r.git("format-patch", "-1", "--stdout")


def case_noprefix(r: Repo) -> bytes:
    r.write("dir/mod.py", "m = 1\n")
    r.commit()
    r.write("dir/mod.py", "m = 2\n")
    r.write("dir/added.py", "n = 1\n")
    r.git("add", "-A")
    return r.git("-c", "diff.noprefix=true", "diff", "--cached")


def case_non_utf8(r: Repo) -> bytes:
    r.write("latin1.py", "s = 'caf\xe9'\n".encode("latin-1"))
    r.write("ok.py", "s = 'café'\n")
    r.commit()
    r.write("latin1.py", "s = 'caf\xe9!'\n".encode("latin-1"))
    r.write("ok.py", "s = 'café!'\n")
    return r.git("diff")


def case_mixed_commit(r: Repo) -> bytes:
    r.write("keep.py", numbered(8))
    r.write("drop.py", "d = 1\n")
    r.write("move.py", numbered(15))
    r.commit("one")
    r.write("keep.py", numbered(8).replace("x2 = 2", "x2 = 22"))
    r.git("rm", "-q", "drop.py")
    r.git("mv", "move.py", "moved.py")
    r.write("fresh.py", "f = 1\n")
    r.commit("two")
    return r.git("diff", "-M", "HEAD~1", "HEAD")


CASES: dict[str, Callable[[Repo], bytes]] = {
    name[len("case_"):]: fn for name, fn in globals().items() if name.startswith("case_")
}


def to_json(d: DecodedDiff) -> dict:
    """The golden form: one object per file, one compact [kind, old, new, text] row per line."""
    def file(f: FileDiff) -> dict:
        return {
            "old_path": f.old_path, "new_path": f.new_path, "status": f.status,
            "is_binary": f.is_binary, "anchorable": sorted(anchorable_lines(f)),
            "hunks": [{"header": h.header, "old": [h.old_start, h.old_count],
                       "new": [h.new_start, h.new_count],
                       "lines": [[ln.kind, ln.old_lineno, ln.new_lineno, ln.text]
                                 for ln in h.lines]}
                      for h in f.hunks],
        }
    return {"files": [file(f) for f in d.files], "undecodable": sorted(d.undecodable)}


@pytest.mark.skipif(not UPDATE, reason="set PTBOT_UPDATE_GOLDEN=1 to rebuild the golden files")
def test_regenerate_golden(tmp_path: Path) -> None:
    if shutil.which("diff") is None:
        pytest.fail("GNU diff is needed to regenerate the plain diff -u cases")
    GOLDEN.mkdir(parents=True, exist_ok=True)
    for name, recipe in CASES.items():
        data = recipe(Repo(tmp_path / name))
        (GOLDEN / f"{name}.diff").write_bytes(data)
        (GOLDEN / f"{name}.json").write_text(
            json.dumps(to_json(decode_diff(data)), indent=1, ensure_ascii=False) + "\n")


def test_every_case_has_golden_files() -> None:
    for name in CASES:
        assert (GOLDEN / f"{name}.diff").exists(), f"missing {name}.diff: regenerate (module doc)"
        assert (GOLDEN / f"{name}.json").exists(), f"missing {name}.json: regenerate (module doc)"


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden(name: str) -> None:
    data = (GOLDEN / f"{name}.diff").read_bytes()
    decoded = decode_diff(data)
    expected = json.loads((GOLDEN / f"{name}.json").read_text())
    assert to_json(decoded) == expected
    if not decoded.undecodable:
        assert parse_diff(data.decode()) == list(decoded.files)


# --- spot checks that say in words what the golden files pin down ----------------------------

def load(name: str) -> list[FileDiff]:
    return list(decode_diff((GOLDEN / f"{name}.diff").read_bytes()).files)


def test_empty_diff_is_empty() -> None:
    assert parse_diff("") == []
    assert parse_diff("\n\n") == []
    assert load("empty") == []


def test_multi_hunk_numbers_match_the_new_file() -> None:
    (f,) = load("multi_hunk")
    assert [h.header.split(" @@")[0] for h in f.hunks] == ["@@ -1,8 +1,9", "@@ -23,7 +24,6"]
    assert f.hunks[0].header.endswith("def main():") is False  # first hunk starts at line 1
    assert f.hunks[1].header.endswith("def main():")
    assert f.added_linenos() == [4, 6]
    assert anchorable_lines(f) == set(range(1, 10)) | set(range(24, 30))
    (removed,) = [ln for ln in f.hunks[1].lines if ln.kind == "-"]
    assert removed == DiffLine("-", "    v25 = 25", 26, None)  # "def main():" is old line 1


def test_statuses_and_paths() -> None:
    assert [(f.status, f.old_path, f.new_path) for f in load("mixed_commit")] == [
        ("deleted", "drop.py", None), ("added", None, "fresh.py"),
        ("modified", "keep.py", "keep.py"), ("renamed", "move.py", "moved.py")]
    (pure,) = load("rename_pure")
    assert (pure.status, pure.old_path, pure.new_path, pure.hunks) == (
        "renamed", "src/old.py", "src/new.py", ())
    (edit,) = load("rename_edit")
    assert (edit.status, edit.path, edit.added_linenos()) == ("renamed", "lib/calc2.py", [10])
    (copy,) = load("copy")
    assert (copy.status, copy.old_path, copy.new_path, copy.added_linenos()) == (
        "copied", "base.py", "copy.py", [5])
    (deleted,) = load("deleted_file")
    assert deleted.path == "gone.py" and deleted.added_linenos() == []


def test_quoted_and_spaced_paths() -> None:
    assert [(f.status, f.old_path, f.new_path) for f in load("quoted_paths")] == [
        ("renamed", "dir/ü ñ.py", "dir/ö.py"), ("added", None, 'quote"d.py'),
        ("added", None, "tab\tname.py"), ("modified", "é.py", "é.py")]
    assert [(f.status, f.old_path, f.new_path, bool(f.hunks)) for f in load("spaces_in_path")] == [
        ("modified", "my dir/my file.py", "my dir/my file.py", True),
        ("renamed", "old name.py", "new name.py", False),
        ("modified", "script name.sh", "script name.sh", False)]


def test_binary_mode_and_no_newline() -> None:
    for name in ("binary", "binary_patch"):
        files = {f.path: f for f in load(name)}
        assert files["img.png"].is_binary and files["img.png"].hunks == ()
    assert load("binary")[1].status == "added"
    assert load("binary_patch")[0].added_linenos() == [1]  # a.py after the binary patch
    assert [(f.path, f.added_linenos()) for f in load("mode_change")] == [
        ("run.sh", []), ("tool.py", [1])]
    tail, gain = sorted(load("no_newline"), key=lambda f: f.path, reverse=True)
    assert tail.hunks[0].lines[-1] == DiffLine("+", "b = 3", None, 2)
    assert gain.added_linenos() == [1, 2]


def test_crlf_content_and_no_count_header() -> None:
    (f,) = load("crlf")
    assert [ln.text for ln in f.hunks[0].lines] == ["a = 1", "b = 2", "b = 20", "c = 3", "d = 4"]
    (one,) = load("no_count_header")
    assert (one.hunks[0].old_count, one.hunks[0].new_count, one.added_linenos()) == (1, 1, [1])


def test_plain_and_foreign_formats() -> None:
    (u,) = load("plain_diff_u")
    assert (u.status, u.old_path, u.new_path, u.added_linenos()) == (
        "modified", "calc.py", "calc.py", [3, 4])
    assert [(f.path, f.added_linenos()) for f in load("plain_diff_ru")] == [
        ("a.py", [5]), ("b.py", [1])]
    assert [f.path for f in load("format_patch")] == ["lib.py", "notes.py"]
    assert [(f.status, f.path) for f in load("noprefix")] == [
        ("added", "dir/added.py"), ("modified", "dir/mod.py")]


def test_non_utf8_file_is_listed() -> None:
    d = decode_diff((GOLDEN / "non_utf8.diff").read_bytes())
    assert d.undecodable == {"latin1.py"}
    assert [f.path for f in d.files] == ["latin1.py", "ok.py"]
    assert d.files[1].hunks[0].lines[-1].text == "s = 'café!'"


def test_crlf_whole_diff() -> None:
    """A diff saved with CRLF line endings (Windows editor) parses like the LF original."""
    text = (GOLDEN / "rename_edit.diff").read_text()
    assert parse_diff(text.replace("\n", "\r\n")) == parse_diff(text)


# --- bad input ---------------------------------------------------------------------------------

def test_not_a_diff() -> None:
    with pytest.raises(DiffError, match="not a unified diff"):
        parse_diff("hello world\nthis is prose\n")


@pytest.mark.parametrize("cut", [1, 2, 4])
def test_truncated_hunk(cut: int) -> None:
    lines = (GOLDEN / "multi_hunk.diff").read_text().split("\n")
    text = "\n".join(lines[: len(lines) - 1 - cut]) + "\n"
    with pytest.raises(DiffError, match="truncated"):
        parse_diff(text)


def test_overfull_hunk() -> None:
    text = "--- a/x.py\n+++ b/x.py\n@@ -1 +1 @@\n-a\n+b\n+c\n"
    with pytest.raises(DiffError, match="outside any hunk"):
        parse_diff(text)


@pytest.mark.parametrize("text, match", [
    ("--- a/x.py\n+++ b/x.py\n@@ -x +1 @@\n+a\n", "malformed hunk header"),
    ("--- a/x.py\n+++ b/x.py\n@@ -1,2 +1,2 @@\n a\n*b\n", "unexpected"),
    ("--- a/x.py\n+++ b/x.py\n", "expected a hunk header"),
    ("@@ -1 +1 @@\n-a\n+b\n", "without a file header"),
    ("diff --cc m.py\nindex 1,2..3\n", "combined"),
    ('diff --git "a/x.py b/x.py\n', "unterminated quoted path"),
    ("diff --git a/x.py b/x.py\n--- a/x.py\n+++ b/x.py\n a\n@@ -5 +5 @@\n-c\n+d\n",
     "outside any hunk"),
    ("diff --git a/x.py b/y.py\nnew file mode 100644\nrename from x.py\nrename to y.py\n",
     "corrupt"),
])
def test_corrupt(text: str, match: str) -> None:
    with pytest.raises(DiffError, match=match):
        parse_diff(text)


def test_noprefix_diff_of_a_path_with_spaces_says_how_to_make_one_that_parses() -> None:
    """unidiff splits a 'diff --git' line without a/ b/ prefixes at its last space, so it cannot
    read such a diff of a path with a space: refused, with the command that makes a readable one."""
    text = ("diff --git my dir/a b.py my dir/a b.py\nindex 0cfbf08..00750ed 100644\n"
            "--- my dir/a b.py\t\n+++ my dir/a b.py\t\n@@ -1 +1 @@\n-2\n+3\n")
    with pytest.raises(DiffError, match="git -c diff.noprefix=false diff"):
        parse_diff(text)
    prefixed = ("diff --git a/my dir/a b.py b/my dir/a b.py\nindex 0cfbf08..00750ed 100644\n"
                "--- a/my dir/a b.py\t\n+++ b/my dir/a b.py\t\n@@ -1 +1 @@\n-2\n+3\n")
    (f,) = parse_diff(prefixed)
    assert (f.path, f.added_linenos()) == ("my dir/a b.py", [1])


def test_diff_error_is_a_value_error() -> None:
    assert issubclass(DiffError, ValueError)
