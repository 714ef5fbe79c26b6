"""The real-fix corpus: a data card in, train / validation / test JSONL out, the same every time.

The card (JSON, committed) names each repository with the commit its history is read from, its
licence, language family and split; the mined data is never committed, this module rebuilds it:

1. refuse the card if a repository is reserved for judging ptbot (the two lists beside the shared
   benchmark data: upstream repositories and Debian source packages, by name);
2. mine each repository at its pinned commit with ``miners.mine`` (resumable, so a rebuild after an
   interruption continues);
3. keep the fixes a careful dataset keeps: a fix cue in the subject line, no reverts, no version
   bumps, typo, rename, docs or formatting commits, no test files, a few labelled lines in a snippet
   short enough to read on a CPU;
4. drop every snippet whose content hash occurs in more than one repository (forks, vendored
   copies) *before* splitting, so no text crosses from one split to another;
5. sample at most ``per_repo[split]`` records per repository (seeded) and write one JSONL file per
   split. Every record carries ``meta.split``; training refuses records marked ``test``.

Splits are by repository: validation repositories make every choice, test repositories are only
reported.
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


SPLITS = ("train", "validation", "test")
FAMILIES = {"python": "Python", "javascript": "JavaScript/TypeScript", "typescript": "JavaScript/TypeScript",
            "java": "Java", "go": "Go", "c": "C/C++", "cpp": "C/C++", "rust": "Rust"}

_FIX_SUBJECT = re.compile(r"\b(fix(es|ed|ing)?|bug(s|fix)?|hotfix|crash(es|ed)?|regression|incorrect|wrong|"
                          r"broken|handle|prevent|avoid)\b", re.IGNORECASE)
_NOT_A_FIX = re.compile(r"^\s*revert\b|\b(bump|release|typo|typos|spelling|rename[sd]?|docs?|documentation|"
                        r"changelog|readme|format(ting)?|lint(ing)?|style|whitespace|comments?|deps?|"
                        r"dependenc(y|ies)|upgrade|version)\b", re.IGNORECASE)
_TEST_PATH = re.compile(r"(^|/)(tests?|__tests__|testing|spec|specs|testdata|benchmarks?|examples?|docs?)/"
                        r"|(_test\.go|Test\.java|Tests\.java|\.test\.[jt]sx?|\.spec\.[jt]sx?|_test\.py)$"
                        r"|(^|/)test_[^/]*\.py$", re.IGNORECASE)


class CorpusError(ValueError):
    """The card is invalid, names a reserved project, or a repository cannot be mined."""


@dataclass(frozen=True)
class CardRepo:
    """One repository of the corpus."""

    name: str
    """``owner/name`` as on GitHub."""
    url: str
    """Where to clone it from when it is not under the ``--repos`` directory."""
    commit: str
    """The commit whose history is mined (newest commit read)."""
    licence: str
    """SPDX licence of the repository."""
    family: str
    """Language family, one of ``FAMILIES``' values."""
    split: str
    """``train``, ``validation`` or ``test``."""
    max_commits: int | None = None
    """Newest commits read from ``commit`` back (None: the whole history)."""


@dataclass(frozen=True)
class Selection:
    """Which mined fixes the corpus keeps."""

    max_snippet_lines: int = 50
    """Longest snippet kept (reading states costs ~linear in tokens on a CPU)."""
    max_buggy_lines: int = 6
    """Most labelled lines per snippet: a fix that rewrites more is a refactoring."""
    per_repo: dict[str, int] = field(default_factory=lambda: {"train": 20, "validation": 25, "test": 40})
    """At most this many records per repository, by split (a seeded sample)."""
    seed: int = 0
    """Seed of the per-repository sample."""
    more_train: int = 0
    """Up to this many more records per training repository, on top of its ``per_repo`` sample:
    the rest of its kept records (in id order) shuffled by one ``Random(seed)`` that visits the
    training repositories in name order. A corpus grown this way still holds the smaller one, so
    its line states stay in the cache and its choices stay comparable; these records carry
    ``meta.more_train``."""


@dataclass(frozen=True)
class Card:
    """A corpus, described well enough to rebuild it."""

    name: str
    repositories: tuple[CardRepo, ...]
    mine: dict[str, Any]
    """``miners.mine.MineConfig`` options used for every repository (e.g. ``{"mutations": 0}``)."""
    selection: Selection

    @classmethod
    def load(cls, path: Path) -> Card:
        try:
            doc = json.loads(Path(path).read_text(encoding="utf-8"))
            repos = tuple(CardRepo(**r) for r in doc["repositories"])
            card = cls(doc["name"], repos, dict(doc.get("mine", {})), Selection(**doc.get("selection", {})))
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise CorpusError(f"{path}: not a corpus card ({e})") from e
        card.validate()
        return card

    def validate(self) -> None:
        names = [r.name for r in self.repositories]
        if len(set(names)) != len(names):
            raise CorpusError(f"repositories listed twice: {sorted({n for n in names if names.count(n) > 1})}")
        for r in self.repositories:
            if r.split not in SPLITS:
                raise CorpusError(f"{r.name}: split {r.split!r} is not one of {SPLITS}")
            if r.family not in set(FAMILIES.values()):
                raise CorpusError(f"{r.name}: family {r.family!r} is not one of {sorted(set(FAMILIES.values()))}")
            if "/" not in r.name:
                raise CorpusError(f"{r.name}: name must be owner/name")
        if set(self.selection.per_repo) != set(SPLITS):
            raise CorpusError(f"selection.per_repo needs a cap for each of {SPLITS}")

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "mine": self.mine, "selection": asdict(self.selection),
                "repositories": [asdict(r) for r in self.repositories]}


# ------------------------------------------------------------------------------------ reserved


def _norm(name: str) -> str:
    name = name.lower().strip()
    name = re.sub(r"(\.js|-js|\.py|-python|python-|py-|-rs|\.rs|-go|go-)$", "", name)
    return re.sub(r"^(python-|py|node-|lib)", "", name) if len(name) > 4 else name


def read_reserved(data_dir: Path) -> tuple[set[str], set[str]]:
    """(reserved upstream repositories ``owner/name``, reserved project and package names)."""
    repos: set[str] = set()
    names: set[str] = set()
    for fname in ("reserved-projects.txt", "reserved-debian-packages.txt"):
        path = Path(data_dir) / fname
        if not path.is_file():
            raise CorpusError(f"{path} not found: the corpus is checked against both reserved lists "
                              "(pass --reserved DIR, the folder that holds them)")
        for line in path.read_text(encoding="utf-8").splitlines():
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            for token in line.split():
                if "/" in token:
                    repos.add(token.lower())
                    names.add(_norm(token.split("/", 1)[1]))
                elif token.lower() not in FAMILIES and token.lower() not in ("javascript", "python"):
                    names.add(_norm(token))
    return repos, names


def reserved_hits(card: Card, reserved: tuple[set[str], set[str]]) -> list[str]:
    """Repositories of ``card`` that are, or are named like, a reserved project."""
    repos, names = reserved
    hits = []
    for r in card.repositories:
        owner_name = r.name.lower()
        if owner_name in repos or _norm(owner_name.split("/", 1)[1]) in names:
            hits.append(r.name)
    return hits


# ----------------------------------------------------------------------------------- selection


def rejection(rec: dict[str, Any], sel: Selection) -> str | None:
    """Why a mined real fix is left out of the corpus, or None to keep it."""
    meta = rec.get("meta") or {}
    subject = (meta.get("message") or "").splitlines()[0] if meta.get("message") else ""
    if rec.get("task") != "real-fix":
        return "not a real fix"
    if not _FIX_SUBJECT.search(subject):
        return "no fix cue in the subject line"
    if _NOT_A_FIX.search(subject):
        return "revert, version bump, docs, typo, rename or formatting commit"
    if _TEST_PATH.search(meta.get("path") or ""):
        return "test, example or docs file"
    n = len(rec["code"].splitlines())
    if n > sel.max_snippet_lines:
        return f"snippet longer than {sel.max_snippet_lines} lines"
    if not rec["buggy_lines"] or len(rec["buggy_lines"]) > sel.max_buggy_lines:
        return f"more than {sel.max_buggy_lines} labelled lines"
    return None


def _content_key(rec: dict[str, Any]) -> str:
    return (rec.get("meta") or {}).get("content_hash") or rec["code"]


def select(mined: dict[str, list[dict[str, Any]]], card: Card) -> tuple[dict[str, list[dict]], dict[str, Any]]:
    """Filter, deduplicate across repositories, split and sample. ``mined``: records by repo name."""
    sel = card.selection
    reasons: Counter[str] = Counter()
    kept: dict[str, list[dict]] = {}
    for r in card.repositories:
        keep = []
        for rec in mined.get(r.name, []):
            why = rejection(rec, sel)
            if why:
                reasons[why] += 1
            else:
                keep.append(rec)
        kept[r.name] = keep
    # A text seen in two repositories (a fork, a vendored copy) is dropped from both, so no
    # snippet can sit in train and in test at once.
    owners: dict[str, set[str]] = defaultdict(set)
    for name, recs in kept.items():
        for rec in recs:
            owners[_content_key(rec)].add(name)
    shared = {k for k, v in owners.items() if len(v) > 1}
    splits: dict[str, list[dict]] = {s: [] for s in SPLITS}
    per_repo: dict[str, dict[str, int]] = {}
    rest: dict[str, list[dict]] = {}
    for r in card.repositories:
        seen: set[str] = set()
        unique = []
        for rec in sorted(kept[r.name], key=lambda x: x["id"]):
            key = _content_key(rec)
            if key in shared:
                reasons["same snippet in another repository"] += 1
            elif key in seen:
                reasons["duplicate within the repository"] += 1
            else:
                seen.add(key)
                unique.append(rec)
        cap = sel.per_repo[r.split]
        sample = random.Random(f"{sel.seed}:{r.name}").sample(unique, min(cap, len(unique)))
        sample.sort(key=lambda x: x["id"])
        for rec in sample:
            rec["meta"] = {**rec["meta"], "split": r.split, "family": r.family}
        splits[r.split].extend(sample)
        per_repo[r.name] = {"mined": len(mined.get(r.name, [])), "kept": len(unique), "sampled": len(sample)}
        sampled = {x["id"] for x in sample}
        rest[r.name] = [u for u in unique if u["id"] not in sampled]
    if sel.more_train:
        rng = random.Random(sel.seed)
        by_name = {r.name: r for r in card.repositories}
        for name in sorted(n for n, r in by_name.items() if r.split == "train"):
            more = rest[name]
            rng.shuffle(more)
            more = sorted(more[:sel.more_train], key=lambda x: x["id"])
            for rec in more:
                rec["meta"] = {**rec["meta"], "split": "train", "family": by_name[name].family, "more_train": True}
            splits["train"].extend(more)
            per_repo[name]["sampled"] += len(more)
    return splits, {"rejected": dict(reasons.most_common()), "per_repo": per_repo}


def counts(splits: dict[str, list[dict]]) -> dict[str, Any]:
    """Records and labelled lines per split and language."""
    out: dict[str, Any] = {}
    for s, recs in splits.items():
        by_lang: dict[str, dict[str, int]] = defaultdict(lambda: {"records": 0, "buggy_lines": 0, "lines": 0})
        for rec in recs:
            c = by_lang[rec["language"]]
            c["records"] += 1
            c["buggy_lines"] += len(rec["buggy_lines"])
            c["lines"] += len(rec["code"].splitlines())
        out[s] = dict(sorted(by_lang.items()))
    return out


# ------------------------------------------------------------------------------------- build


def _source(repo: CardRepo, repos_dir: Path | None) -> str:
    if repos_dir is not None:
        for cand in (repos_dir / repo.name.replace("/", "+"), repos_dir / repo.name):
            for d in (cand / "repo", cand):
                if (d / "HEAD").exists() or (d / ".git").exists():
                    return str(d)
    return repo.url


def build(card: Card, out_dir: Path, *, reserved_dir: Path, repos_dir: Path | None = None,
          progress: bool = False, log=lambda msg: None) -> dict[str, Any]:
    """Mine, select and write ``out_dir/{train,validation,test}.jsonl`` + ``corpus.json``."""
    from miners.mine import MineConfig, MiningError, mine_repo

    hits = reserved_hits(card, read_reserved(reserved_dir))
    if hits:
        raise CorpusError(f"reserved for judging ptbot, never mined: {', '.join(hits)}")
    out_dir = Path(out_dir)
    mined: dict[str, list[dict[str, Any]]] = {}
    for i, repo in enumerate(card.repositories, 1):
        target = out_dir / "mined" / repo.name.replace("/", "+")
        done = target / "manifest.json"
        if not (done.exists() and json.loads(done.read_text()).get("complete")):
            log(f"mining {repo.name} ({i}/{len(card.repositories)}) at {repo.commit[:12]}")
            try:
                mine_repo(MineConfig(repo=_source(repo, repos_dir), out=target, name=repo.name, rev=repo.commit,
                                     max_commits=repo.max_commits, resume=True, **card.mine),
                          progress=progress)
            except (ValueError, MiningError) as e:
                raise CorpusError(f"{repo.name}: {e}") from e
        mined[repo.name] = [json.loads(line) for shard in sorted(target.glob("*.jsonl"))
                            for line in shard.read_text(encoding="utf-8").splitlines() if line.strip()]
    splits, report = select(mined, card)
    for s, recs in splits.items():
        with (out_dir / f"{s}.jsonl").open("w", encoding="utf-8") as f:
            for rec in recs:
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    summary = {"card": card.to_dict(), "counts": counts(splits), **report}
    (out_dir / "corpus.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary
