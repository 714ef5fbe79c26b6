"""miners: history stream, fix detection, snippets, shards and ``mine_repo`` on real git repos.

Every repository is built in tmp_path with GitPython; golden outputs live in tests/golden/miners/
(regenerate with ``PTBOT_UPDATE_GOLDEN=1``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import git
import pytest
from conftest import shared_data

from analyzer.types import DiffLine, FileDiff, Hunk
from miners.dataset import DatasetWriter
from miners.fixes import FixConfig, classify_commit, code_hunks, has_fix_cue, hunk_change
from miners.history import BlobReader, Commit, iter_commits
from miners.mine import MineConfig, MiningError, mine_repo
from miners.snippets import clean_snippets, enclosing_region, fix_snippets

GOLDEN = Path(__file__).parent / "golden" / "miners"
UPDATE = os.environ.get("PTBOT_UPDATE_GOLDEN") == "1"

CALC_V1 = """\
import math


def area(r):
    return math.pi * r * r


def clamp(x, lo, hi):
    if x < lo:
        return lo
    if x >= hi:
        return hi
    return x


def mean(xs):
    total = 0
    for x in xs:
        total += x
    return total / len(xs) + 1
"""

CALC_V2 = CALC_V1.replace("    if x >= hi:", "    if x > hi:")
CALC_V3 = CALC_V2.replace("    return total / len(xs) + 1\n", "    return total / len(xs)\n")
CALC_V4 = CALC_V3.replace("def mean(xs):\n", "def mean(xs):\n    if not xs:\n        return 0.0\n")

MAIN_JAVA = """\
public class Main {
    static int sum(int[] xs) {
        int s = 0;
        for (int i = 0; i <= xs.length; i++) {
            s += xs[i];
        }
        return s;
    }

    public static void main(String[] args) {
        System.out.println(sum(new int[] {1, 2, 3}));
    }
}
"""

UTIL_JS = """\
function greet(name) {
  const greeting = "Hello, " + name;
  console.log(greeting);
  return greeting.length;
}

function twice(f, x) {
  const y = f(x);
  return f(y);
}
"""


def _commit(repo: git.Repo, files: dict[str, str | bytes | None], message: str, when: int) -> str:
    root = Path(repo.working_tree_dir)
    for path, content in files.items():
        p = root / path
        if content is None:
            repo.index.remove([path], working_tree=True)
            continue
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(content.encode() if isinstance(content, str) else content)
        repo.index.add([path])
    date = f"{when} +0000"
    return repo.index.commit(message, author_date=date, commit_date=date,
                             author=git.Actor("A", "a@example.com"),
                             committer=git.Actor("A", "a@example.com")).hexsha


@pytest.fixture
def history(tmp_path: Path) -> git.Repo:
    """A small history: root, fixes (Python, Java), clean changes, a rename, binary, a merge,
    a whitespace-only fix, a comment-only fix, non-UTF-8 content, a lock file."""
    repo = git.Repo.init(tmp_path / "proj", initial_branch="main")
    t = 1_700_000_000
    _commit(repo, {"calc.py": CALC_V1, "Main.java": MAIN_JAVA, "README.md": "# proj\n"},
            "Initial import", t)
    _commit(repo, {"calc.py": CALC_V2}, "Fix off-by-one in clamp upper bound", t + 10)
    _commit(repo, {"util.js": UTIL_JS}, "Add greeting helpers", t + 20)
    _commit(repo, {"Main.java": MAIN_JAVA.replace("i <= xs.length", "i < xs.length")},
            "Fix ArrayIndexOutOfBounds crash in sum (#12)", t + 30)
    _commit(repo, {"logo.png": b"\x89PNG\r\n\x1a\n\x00\x00binary\x00"}, "Add logo", t + 40)
    # rename only
    repo.index.move(["util.js", "helpers.js"])
    repo.index.commit("Rename util to helpers", author_date=f"{t + 50} +0000",
                      commit_date=f"{t + 50} +0000")
    _commit(repo, {"calc.py": CALC_V3}, "fix: mean is not off by one", t + 60)
    _commit(repo, {"calc.py": CALC_V4.replace("    return math.pi * r * r", "    return math.pi * r * r  ")},
            "Fix whitespace and empty input in mean", t + 70)
    _commit(repo, {"calc.py": CALC_V4.replace("import math", "import math  # stdlib")},
            "fix typo in comment", t + 80)
    _commit(repo, {"latin.py": "s = 'caf\xe9'\n".encode("latin-1") + b"x = 1\ny = 2\n"},
            "Add latin-1 file", t + 90)
    _commit(repo, {"latin.py": "s = 'caf\xe9!'\n".encode("latin-1") + b"x = 1\ny = 3\n"},
            "Fix latin-1 file values", t + 100)
    _commit(repo, {"package-lock.json": "{}\n"}, "fix lockfile", t + 110)
    # a side branch merged back
    main = repo.head.commit
    side = repo.create_head("side", main)
    side.checkout()
    _commit(repo, {"helpers.js": UTIL_JS.replace("return f(y);", "return f(f(y));")},
            "Make twice apply three times", t + 120)
    repo.heads.main.checkout()
    _commit(repo, {"calc.py": CALC_V4.replace("def area(r):\n", "def area(r):\n    # circle\n")},
            "Document area", t + 130)
    repo.git.merge("side", "--no-ff", "-m", "Merge branch side", env={
        "GIT_AUTHOR_DATE": f"{t + 140} +0000", "GIT_COMMITTER_DATE": f"{t + 140} +0000"})
    return repo


def _golden(name: str, data) -> None:
    path = GOLDEN / name
    text = json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    if UPDATE or not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert json.loads(path.read_text()) == json.loads(text), f"golden {name} differs (see diff above)"


def _records(out: Path) -> list[dict]:
    rows = []
    for p in sorted(out.glob("mined-*.jsonl")):
        rows += [json.loads(x) for x in p.read_text().splitlines()]
    return rows


def _stable(rec: dict) -> dict:
    """A record without commit ids (they hold timestamps of the machine's git identity)."""
    meta = {k: v for k, v in rec["meta"].items() if k not in ("commit", "parent")}
    return {**rec, "meta": meta}


# --- history ------------------------------------------------------------------------------------

def test_history_stream_parses_commits(history: git.Repo):
    commits = list(iter_commits(history.git_dir))
    assert len(commits) == 15
    by_subject = {c.subject: c for c in commits}
    assert len(by_subject["Merge branch side"].parents) == 2
    assert by_subject["Merge branch side"].files == ()
    rename = by_subject["Rename util to helpers"].files
    assert [(f.old_path, f.new_path, f.status, f.hunks) for f in rename] == [
        ("util.js", "helpers.js", "renamed", ())]
    (logo,) = by_subject["Add logo"].files
    assert logo.is_binary and logo.status == "added" and logo.path == "logo.png"
    latin = by_subject["Fix latin-1 file values"]
    assert latin.files == () and latin.dropped == (("latin.py", "non-UTF-8 content"),)
    (fix,) = by_subject["Fix off-by-one in clamp upper bound"].files
    (h,) = fix.hunks
    assert (h.old_start, h.old_count, h.new_start, h.new_count) == (11, 1, 11, 1)
    assert h.lines == (DiffLine("-", "    if x >= hi:", 11, None), DiffLine("+", "    if x > hi:", None, 11))


def test_history_options_and_bad_revision(history: git.Repo):
    assert len(list(iter_commits(history.git_dir, max_commits=3))) == 3
    assert len(list(iter_commits(history.git_dir, since="1700000065", until="1700000095"))) == 3
    with pytest.raises(RuntimeError, match="nope"):
        list(iter_commits(history.git_dir, "nope"))


def test_history_counts_hunk_lines_that_look_like_headers(tmp_path: Path):
    repo = git.Repo.init(tmp_path / "r")
    _commit(repo, {"a.py": "x = 1\n-- a/x\n++ b/y\n"}, "one", 1_700_000_000)
    _commit(repo, {"a.py": "x = 2\n"}, "two", 1_700_000_001)
    (c, _) = list(iter_commits(tmp_path / "r"))
    (f,) = c.files
    assert [ln.text for ln in f.hunks[0].lines if ln.kind == "-"] == ["x = 1", "-- a/x", "++ b/y"]


def test_blob_reader(history: git.Repo):
    with BlobReader(history.git_dir) as blobs:
        assert blobs.read("HEAD", "README.md") == b"# proj\n"
        assert blobs.read("HEAD", "missing.py") is None
        assert blobs.read("HEAD", "Main.java").startswith(b"public class Main")


# --- fixes --------------------------------------------------------------------------------------

@pytest.mark.parametrize(("msg", "fix"), [
    ("Fix off-by-one", True), ("crash on empty input", True), ("Revert \"x\"", True),
    ("closes #42", True), ("Resolves PROJ-123", True), ("Add feature (#123)", False),
    ("prefix handling", False), ("Update docs", False), ("Add latin-1 file", False),
])
def test_fix_cues(msg: str, fix: bool):
    assert has_fix_cue(msg) is fix


def _hunk(old: list[str], new: list[str]) -> Hunk:
    lines = tuple([DiffLine("-", t, i + 1, None) for i, t in enumerate(old)]
                  + [DiffLine("+", t, None, i + 1) for i, t in enumerate(new)])
    return Hunk(1, len(old), 1, len(new), lines)


def test_hunk_change_kinds():
    assert hunk_change(_hunk(["x = 1"], ["x  =  1 "])) == "whitespace"
    assert hunk_change(_hunk(["x = 1  # a"], ["x = 1  # b"])) == "comment"
    assert hunk_change(_hunk(["// old"], ["// new"])) == "comment"
    assert hunk_change(_hunk(["x = 1"], ["x = 2"])) == "code"
    assert hunk_change(_hunk([" * old doc"], [" * new doc"])) == "comment"
    # Lines that start like comments but are code: a fix there is a fix, not a comment edit.
    assert hunk_change(_hunk(["#include <map>"], ["#include <unordered_map>"])) == "code"
    assert hunk_change(_hunk(["#define LIMIT 10"], ["#define LIMIT 100"])) == "code"
    assert hunk_change(_hunk(["*p = 0;"], ["*p = 1;"])) == "code"
    assert hunk_change(_hunk(["#[derive(Debug)]"], ["#[derive(Debug, Clone)]"])) == "code"


def test_code_hunks_reasons():
    cfg = FixConfig()
    h = _hunk(["x = 1"], ["x = 2"])
    assert code_hunks(FileDiff("a.py", "a.py", "modified", (h,)), cfg, fix=True) == ((h,), None)
    cases = {
        FileDiff("a.png", "a.png", "modified", (), True): "binary file",
        FileDiff("vendor/a.py", "vendor/a.py", "modified", (h,)): "vendored path",
        FileDiff("a_pb2.py", "a_pb2.py", "modified", (h,)): "generated file",
        FileDiff("yarn.lock", "yarn.lock", "modified", (h,)): "lock file",
        FileDiff("a.txt", "a.txt", "modified", (h,)): "unknown language",
        FileDiff(None, "a.py", "added", (h,)): "file added (no buggy version)",
        FileDiff("a.py", "b.py", "renamed", ()): "rename only",
        FileDiff("a.py", "a.py", "modified", (_hunk(["x=1"], ["x = 1"]),)): "whitespace-only change",
        FileDiff("a.py", "a.py", "modified", (_hunk(["a = 1" * 100], ["b = 1" * 100]),)):
            "minified (very long lines)",
    }
    for fd, reason in cases.items():
        assert code_hunks(fd, cfg, fix=True) == ((), reason), fd
    big = FileDiff("a.py", "a.py", "modified", (_hunk([f"x = {i}" for i in range(40)],
                                                       [f"y = {i}" for i in range(40)]),))
    assert code_hunks(big, cfg, fix=True)[1] == "change too large for a fix"
    assert code_hunks(big, cfg, fix=False)[1] is None
    only_java = FixConfig(languages=frozenset({"java"}), exclude=("test/*",))
    assert code_hunks(FileDiff("a.py", "a.py", "modified", (h,)), only_java, fix=True)[1] == \
        "language not selected"
    assert code_hunks(FileDiff("test/A.java", "test/A.java", "modified", (h,)), only_java,
                      fix=True)[1] == "excluded by --exclude"
    with pytest.raises(ValueError, match="unknown language"):
        FixConfig(languages=frozenset({"cobol"}))


def test_classify_commit():
    f = (FileDiff("a.py", "a.py", "modified"),)
    assert classify_commit(Commit("s", ("p", "q"), 0, "fix", f)).reason == "merge commit"
    assert classify_commit(Commit("s", (), 0, "fix", f)).kind == "skip"
    assert classify_commit(Commit("s", ("p",), 0, "fix bug", f)).kind == "fix"
    assert classify_commit(Commit("s", ("p",), 0, "add stuff", f)).kind == "clean"


# --- snippets -----------------------------------------------------------------------------------

def test_enclosing_function_python_and_braces():
    py = CALC_V1.split("\n")
    assert enclosing_region(py, 10, 10, "python", window=2, max_lines=100) == (7, 12, "function")
    java = MAIN_JAVA.split("\n")
    assert enclosing_region(java, 3, 3, "java", window=2, max_lines=100) == (1, 7, "function")
    js = UTIL_JS.split("\n")
    assert enclosing_region(js, 8, 8, "javascript", window=2, max_lines=100) == (6, 9, "function")
    # top-level code: a window
    assert enclosing_region(py, 0, 0, "python", window=2, max_lines=100) == (0, 2, "window")


def test_fix_snippet_replace_and_insertion():
    (h,) = [f for f in _diff(CALC_V1, CALC_V2)]
    (s,) = fix_snippets(CALC_V1, CALC_V2, [h], "python")
    assert s.code.splitlines()[0] == "def clamp(x, lo, hi):"
    assert s.code.splitlines()[s.buggy_lines[0] - 1] == "    if x >= hi:"
    assert s.fixed == s.code.replace(">=", ">")
    # pure insertion labels the line after the insertion point
    (h,) = _diff(CALC_V3, CALC_V4)
    (s,) = fix_snippets(CALC_V3, CALC_V4, [h], "python")
    assert s.buggy_lines == s.insertion_only_lines == (2,)
    assert s.code.splitlines()[1] == "    total = 0"
    assert "if not xs:" in s.fixed and "if not xs:" not in s.code


def _diff(a: str, b: str) -> list[Hunk]:
    """-U0 hunks of a -> b (via git diff --no-index, as the miner sees them)."""
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        pa, pb = Path(d, "a.py"), Path(d, "b.py")
        pa.write_text(a)
        pb.write_text(b)
        out = subprocess.run(["git", "diff", "--no-index", "-U0", str(pa), str(pb)],
                             capture_output=True).stdout
    from miners.history import _parse_stream
    text = (b"\x00PTBOT-COMMIT\x00x\x00p\x000\x00m\x00PTBOT-END\x00\n" + out).splitlines(keepends=True)
    (c,) = list(_parse_stream(iter(text), 5000))
    return list(c.files[0].hunks)


def test_clean_snippets_cover_added_code():
    (h,) = _diff(CALC_V3, CALC_V4)
    (s,) = clean_snippets(CALC_V4, [h], "python")
    assert s.startswith("def mean(xs):\n    if not xs:")


# --- dataset ------------------------------------------------------------------------------------

def test_dataset_refuses_non_empty_dir_and_resumes(tmp_path: Path):
    from analyzer.types import Record
    rec = Record("i1", "mined", "python", "real-fix", "a = 1\n", "a = 2\n", (1,), {})
    w = DatasetWriter(tmp_path, shard_records=1)
    assert w.add(rec) and not w.add(Record("i2", "mined", "python", "real-fix", "a  = 1\n", "a = 2\n", (1,)))
    w.commit_done("c1")
    w.close()
    # a torn last line from a crash is dropped on resume
    with open(tmp_path / "mined-00000.jsonl", "a") as f:
        f.write('{"id": "torn')
    with pytest.raises(ValueError, match="--resume"):
        DatasetWriter(tmp_path)
    w = DatasetWriter(tmp_path, resume=True)
    assert w.done == {"c1"} and not w.add(rec)
    w.close()
    assert len(_records(tmp_path)) == 1


# --- mine_repo end to end -----------------------------------------------------------------------

def _check_data(out: Path) -> None:
    proc = subprocess.run([sys.executable, str(shared_data("check_data.py")), str(out)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_mine_repo_real_fixes_golden(history: git.Repo, tmp_path: Path):
    out = tmp_path / "out"
    manifest = mine_repo(MineConfig(repo=history.working_tree_dir, out=out))
    assert manifest.complete and manifest.commits_done == 15
    records = _records(out)
    _golden("real_fixes.json", [_stable(r) for r in records])
    _golden("manifest_real_fixes.json", {k: v for k, v in manifest.to_dict().items()
                                         if k not in ("out_dir", "run")})
    assert {r["language"] for r in records} == {"python", "java"}
    assert all(r["task"] == "real-fix" for r in records)
    skipped = [json.loads(x) for x in (out / "skipped.ndjson").read_text().splitlines()]
    reasons = {(r["path"], r["reason"]) for r in skipped}
    assert ("", "merge commit") in reasons
    assert ("latin.py", "non-UTF-8 content") in reasons
    assert ("package-lock.json", "lock file") in reasons
    assert ("calc.py", "comment-only change") in reasons
    _check_data(out)


def test_mine_repo_mutations_deterministic_and_workers(history: git.Repo, tmp_path: Path):
    cfg = dict(repo=history.git_dir, mutations=2, fine_mutations=True, seed=3)
    a = mine_repo(MineConfig(out=tmp_path / "a", **cfg))
    b = mine_repo(MineConfig(out=tmp_path / "b", workers=2, **cfg))
    ra, rb = _records(tmp_path / "a"), _records(tmp_path / "b")
    assert ra == rb and a.by_language == b.by_language
    mutants = [r for r in ra if r["task"] == "mutation"]
    assert mutants and all(r["meta"]["pairs"] for r in mutants)
    _golden("mutations.json", [_stable(r) for r in mutants])
    _check_data(tmp_path / "a")


def test_mine_repo_resume_after_interruption(history: git.Repo, tmp_path: Path):
    full = tmp_path / "full"
    mine_repo(MineConfig(repo=history.git_dir, out=full, mutations=1))
    part = tmp_path / "part"
    mine_repo(MineConfig(repo=history.git_dir, out=part, mutations=1, max_commits=5))
    # simulate a crash after the records of the next commit were written but before it was done
    with pytest.raises(ValueError, match="--resume"):
        mine_repo(MineConfig(repo=history.git_dir, out=part, mutations=1))
    m = mine_repo(MineConfig(repo=history.git_dir, out=part, mutations=1, resume=True))
    assert m.commits_done == 15
    ids = [r["id"] for r in _records(part)]
    assert len(ids) == len(set(ids))
    assert sorted(ids) == sorted(r["id"] for r in _records(full))


def test_mine_repo_clone_url_and_bad_inputs(history: git.Repo, tmp_path: Path):
    m = mine_repo(MineConfig(repo=f"file://{history.git_dir}", out=tmp_path / "o", languages=("java",)))
    assert set(m.by_language) == {"java"} and m.skipped_files.get("language not selected")
    with pytest.raises(ValueError, match="could not clone"):
        mine_repo(MineConfig(repo=f"file://{tmp_path}/nowhere.git", out=tmp_path / "x"))
    with pytest.raises(ValueError, match="not a git repository"):
        mine_repo(MineConfig(repo=str(tmp_path / "o"), out=tmp_path / "y"))
    with pytest.raises(ValueError, match="does not exist"):
        mine_repo(MineConfig(repo=str(tmp_path / "missing"), out=tmp_path / "y"))
    git.Repo.init(tmp_path / "empty")
    with pytest.raises(ValueError, match="empty repository"):
        mine_repo(MineConfig(repo=str(tmp_path / "empty"), out=tmp_path / "z"))
    with pytest.raises(ValueError, match="revision 'nope' not found"):
        mine_repo(MineConfig(repo=history.git_dir, out=tmp_path / "w", rev="nope"))
    with pytest.raises(ValueError, match="unknown language"):
        MineConfig(repo=".", out=tmp_path, languages=("cobol",))


def test_mine_repo_shallow_clone(history: git.Repo, tmp_path: Path):
    shallow = tmp_path / "shallow"
    subprocess.run(["git", "clone", "--quiet", "--depth", "4", "--no-single-branch",
                    f"file://{history.git_dir}", str(shallow)], check=True)
    m = mine_repo(MineConfig(repo=str(shallow), out=tmp_path / "o"))
    assert m.run["shallow"] is True
    assert m.skipped_commits.get("shallow clone boundary (parent not fetched)", 0) >= 1


def test_mine_repo_corrupt_object_keeps_partial_output(history: git.Repo, tmp_path: Path):
    broken = tmp_path / "broken.git"
    subprocess.run(["git", "clone", "--quiet", "--bare", f"file://{history.git_dir}", str(broken)],
                   check=True)
    # delete the loose/packed object of an old commit's tree: git log dies part-way
    old = history.git.rev_parse("HEAD~8")
    tree = history.git.rev_parse(f"{old}^{{tree}}")
    subprocess.run(["git", "-C", str(broken), "repack", "-a", "-d", "-q"], check=True)
    subprocess.run(["git", "-C", str(broken), "unpack-objects", "-q"],
                   input=b"", check=False)
    packs = list((broken / "objects" / "pack").glob("*.pack"))
    for p in packs:  # explode the pack so one object can be removed
        data = p.read_bytes()
        for f in p.parent.glob(p.stem + ".*"):
            f.unlink()
        subprocess.run(["git", "-C", str(broken), "unpack-objects", "-q"], input=data, check=True)
    (broken / "objects" / tree[:2] / tree[2:]).unlink()
    out = tmp_path / "o"
    with pytest.raises(MiningError, match="--resume"):
        mine_repo(MineConfig(repo=str(broken), out=out))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] is False and manifest["commits_done"] >= 1


def test_docstring_and_new_definition_hunks():
    from miners.snippets import is_docstring_hunk, is_new_definition, python_docstring_lines
    old = 'def f(x):\n    """Doc."""\n    return x\n'
    new = 'def f(x):\n    """Doc.\n\n    More.\n    """\n    return x\n'
    (h,) = _diff(old, new)
    assert is_docstring_hunk(h, python_docstring_lines(old), python_docstring_lines(new))
    (h,) = _diff(old, old.replace("return x", "return x + 1"))
    assert not is_docstring_hunk(h, python_docstring_lines(old), python_docstring_lines(old))
    (h,) = _diff(old, "def g():\n    return 1\n\n\n" + old)
    assert is_new_definition(h, "python")
    (h,) = _diff(old, old.replace("    return x", "    if x:\n        x += 1\n    return x"))
    assert not is_new_definition(h, "python")
    js = "function a() {\n  return 1;\n}\n"
    hunk = Hunk(3, 0, 4, 3, (DiffLine("+", "function b(x) {", None, 4),
                             DiffLine("+", "  return x;", None, 5), DiffLine("+", "}", None, 6)))
    assert is_new_definition(hunk, "javascript")
    assert not is_new_definition(Hunk(1, 0, 2, 1, (DiffLine("+", "  if (x) { y(); }", None, 2),)),
                                 "javascript")
    assert js


def test_languages_outside_the_schema_are_skipped():
    h = _hunk(["echo a"], ["echo b"])
    assert code_hunks(FileDiff("a.sh", "a.sh", "modified", (h,)), FixConfig(), fix=False) == \
        ((), "language not in the dataset schema")


def test_history_want_reads_only_wanted_diffs(history: git.Repo):
    full = list(iter_commits(history.git_dir))
    picked = list(iter_commits(history.git_dir, want=lambda msg, parents: "Fix" in msg, chunk=4))
    assert [c.sha for c in picked] == [c.sha for c in full]
    for a, b in zip(full, picked):
        if "Fix" in a.message:
            assert b.diff_read and (b.files, b.dropped) == (a.files, a.dropped)
        else:
            assert not b.diff_read and b.files == ()


def test_blob_reader_skips_huge_files_and_keeps_going(history: git.Repo):
    with BlobReader(history.git_dir, max_bytes=10) as blobs:
        assert blobs.read_many([("HEAD", "Main.java"), ("HEAD", "README.md")]) == [None, b"# proj\n"]
