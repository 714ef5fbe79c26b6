"""Read labelled JSONL records (the shared dataset schema) and split them by problem.

Standard library only. Splits are by *problem*, never by record: DebugBench has several bugs of
one LeetCode problem, and lines of one program are correlated, so a record-level split would
leak the answer into the dev set.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from pathlib import Path

from analyzer.types import Record


class RecordError(ValueError):
    """A data file is missing or not in the JSONL record schema (``Record``)."""


def load_records(paths: Iterable[Path], languages: Sequence[str] | None = None) -> list[Record]:
    """All records of the given JSONL files (optionally only some languages), in file order."""
    out: list[Record] = []
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise RecordError(f"data file not found: {path}")
        with path.open(encoding="utf-8") as f:
            for n, raw in enumerate(f, 1):
                if not raw.strip():
                    continue
                try:
                    rec = Record.from_dict(json.loads(raw))
                except (json.JSONDecodeError, ValueError, TypeError) as e:
                    raise RecordError(f"{path}:{n}: not a record in the shared schema ({e})") from e
                if languages is None or rec.language in languages:
                    out.append(rec)
    return out


def problem_key(rec: Record) -> str:
    """The problem a record belongs to: records of one problem always land in the same split."""
    meta = rec.meta or {}
    name = meta.get("slug") or meta.get("task_id") or rec.id.rsplit("/", 1)[-1]
    if rec.source == "humanevalpack" and "/" in str(name):
        name = str(name).rsplit("/", 1)[-1]  # "Python/12" and "Java/12" are one problem
    return f"{rec.source}:{str(name).lower()}"


def in_dev(key: str, dev_fraction: float, seed: int = 0) -> bool:
    """Deterministic, order-free assignment of a problem to the dev split (hash of key+seed)."""
    h = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64 < dev_fraction


def split_by_problem(records: Sequence[Record], dev_fraction: float = 0.2,
                     seed: int = 0) -> tuple[list[Record], list[Record]]:
    """(train, dev): every problem's records go to exactly one side."""
    if not 0 < dev_fraction < 1:
        raise ValueError(f"dev_fraction must be in (0, 1), got {dev_fraction}")
    train, dev = [], []
    for rec in records:
        (dev if in_dev(problem_key(rec), dev_fraction, seed) else train).append(rec)
    return train, dev


def refuse_test_repositories(records: Sequence[Record]) -> None:
    """Raise ValueError if any record comes from a corpus test repository (``meta.split == "test"``).

    The real-fix corpus is split by repository and its test repositories are only ever reported:
    no training, selection or calibration step may read their labels.
    """
    bad = [r.id for r in records if (r.meta or {}).get("split") == "test"]
    if bad:
        raise ValueError(f"{len(bad)} record(s) come from the corpus's test repositories (e.g. {bad[0]!r}); "
                         "they are for reporting only and never train, select or calibrate a model")
