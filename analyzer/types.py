"""Shared domain types: code, diffs, labelled records and line scores.

Standard library only: every ptbot package (and the torch-free webhook process) imports this.
Each type is a frozen dataclass with ``to_dict``/``from_dict`` where it crosses a process
boundary (JSONL shards, Celery payloads, ``--format json``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

LineKind = Literal["+", "-", " "]
FileStatus = Literal["added", "modified", "deleted", "renamed", "copied"]


@dataclass(frozen=True, slots=True)
class DiffLine:
    """One line of a hunk; deletions carry only ``old_lineno``, additions only ``new_lineno``."""

    kind: LineKind
    text: str
    old_lineno: int | None
    new_lineno: int | None


@dataclass(frozen=True, slots=True)
class Hunk:
    """One ``@@`` hunk of a unified diff."""

    old_start: int
    old_count: int
    new_start: int
    new_count: int
    lines: tuple[DiffLine, ...]
    header: str = ""

    def added_linenos(self) -> list[int]:
        """New-file line numbers of the ``+`` lines."""
        return [ln.new_lineno for ln in self.lines if ln.kind == "+" and ln.new_lineno]

    def new_linenos(self) -> list[int]:
        """New-file line numbers this hunk shows (context and additions): valid review anchors."""
        return [ln.new_lineno for ln in self.lines if ln.kind != "-" and ln.new_lineno]


@dataclass(frozen=True, slots=True)
class FileDiff:
    """All hunks of one file in a diff, with what git said about the file itself."""

    old_path: str | None
    new_path: str | None
    status: FileStatus
    hunks: tuple[Hunk, ...] = ()
    is_binary: bool = False

    @property
    def path(self) -> str:
        """The path a reviewer sees: the new path, or the old one for deletions."""
        return self.new_path or self.old_path or ""

    def added_linenos(self) -> list[int]:
        """New-file line numbers of every added line, in order."""
        return [n for h in self.hunks for n in h.added_linenos()]


@dataclass(frozen=True, slots=True)
class Record:
    """One labelled snippet: the JSONL record of the benchmark files and ``ptbot mine-repo``."""

    id: str
    source: str
    language: str
    task: str
    code: str
    fixed: str
    buggy_lines: tuple[int, ...]
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["buggy_lines"] = list(self.buggy_lines)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Record:
        missing = [k for k in ("id", "language", "code", "buggy_lines") if k not in d]
        if missing:
            raise ValueError(f"record {d.get('id', '?')!r} lacks field(s) {', '.join(missing)}")
        return cls(
            id=str(d["id"]),
            source=str(d.get("source", "")),
            language=str(d["language"]),
            task=str(d.get("task", "")),
            code=str(d["code"]),
            fixed=str(d.get("fixed", "")),
            buggy_lines=tuple(int(x) for x in d["buggy_lines"]),
            meta=dict(d.get("meta") or {}),
        )


@dataclass(frozen=True, slots=True)
class ScoreRequest:
    """A file to score: its whole text, which lines to report (None = all) and its language."""

    path: str
    text: str
    lines: frozenset[int] | None = None
    language: str | None = None


@dataclass(frozen=True, slots=True)
class Feature:
    """One SAE latent that drove a line's score: index, activation, and a human label if known."""

    latent: int
    activation: float
    label: str = ""


@dataclass(frozen=True, slots=True)
class LineScore:
    """Risk of one line: raw ranker score, calibrated probability that it needs an edit, rank."""

    path: str
    line: int
    text: str
    score: float
    probability: float
    rank: int
    features: tuple[Feature, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "line": self.line,
            "rank": self.rank,
            "probability": round(self.probability, 6),
            "score": round(self.score, 6),
            "text": self.text,
            "features": [
                {"latent": f.latent, "activation": round(f.activation, 6), "label": f.label}
                for f in self.features
            ],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LineScore:
        return cls(
            path=d["path"],
            line=int(d["line"]),
            text=d["text"],
            score=float(d["score"]),
            probability=float(d["probability"]),
            rank=int(d["rank"]),
            features=tuple(
                Feature(int(f["latent"]), float(f["activation"]), f.get("label", ""))
                for f in d.get("features", ())
            ),
        )


@dataclass(frozen=True, slots=True)
class Skipped:
    """A file (or part of one) that was not scored, and why, in words a user can act on."""

    path: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"path": self.path, "reason": self.reason}


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """What produced a report: artifact name and version, supervisor id, probed layer."""

    name: str
    supervisor: str
    layer: int
    version: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "supervisor": self.supervisor, "layer": self.layer,
                "version": self.version}


@dataclass(frozen=True, slots=True)
class Report:
    """The result of a review: ranked lines (rank 1 first) and the files that were skipped."""

    model: ModelInfo
    lines: tuple[LineScore, ...]
    skipped: tuple[Skipped, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The stable ``--format json`` document (documented in the README)."""
        return {
            "model": self.model.to_dict(),
            "lines": [ln.to_dict() for ln in sorted(self.lines, key=lambda x: x.rank)],
            "skipped": [s.to_dict() for s in self.skipped],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Report:
        m = d["model"]
        return cls(
            model=ModelInfo(m["name"], m["supervisor"], int(m["layer"]), m.get("version", "")),
            lines=tuple(LineScore.from_dict(x) for x in d["lines"]),
            skipped=tuple(Skipped(s["path"], s["reason"]) for s in d.get("skipped", ())),
        )
