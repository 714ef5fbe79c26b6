"""Per-line vectors from the supervisor, and the ranker's input features built from them.

Two stages:
- ``extract``: texts -> for each text, its scorable lines (``LineSpan``) and the probed-layer state
  at each line's end token, shape (n_lines, d). One truncated forward per text, batched.
- ``ranker_inputs``: one snippet's line states -> the ranker's features: the states centred on
  the snippet's mean (what is unusual about this line *within its file*, which transfers across
  languages far better than absolute states: an early probe measured 2-4x on Python ->
  JavaScript; uncentred vectors also encode the language and style of the snippet, and a ranker
  trained on Python with them ranked Java/Go signature lines first), shape features (log token
  count, relative position, log length), because the longest line is a strong baseline that the
  ranker should be able to use, not re-learn from states, and a last 0/1 column marking
  declaration lines.

The ranker reads the raw states, not the SAE's latents: on real fixes in six languages a ranker on
Qwen2.5-Coder-0.5B's layer-6 states put the buggy line first more often than one on the latents
(validation repositories, mean Top-1 0.213 vs 0.197). The SAE only explains a line, naming its
most over-active latents.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from analyzer.artifact import config_fields
from analyzer.declarations import declares
from analyzer.lines import LineSpan, as_read, map_lines
from analyzer.supervisor import Encoded, Supervisor


@dataclass(frozen=True)
class FeatureConfig:
    """How line states become ranker inputs (saved in the artifact manifest).

    Every input row ends with the declaration column (``declaration_column``): 1.0 for an
    import/include/use line or a function/type header, else 0.0. It is language-agnostic, so what
    Python teaches about such lines reaches other languages' signatures (validation repositories,
    mean Top-1 0.212 -> 0.250, no length prior), and the ranker's length prior skips those lines.
    """

    prefix: str = "```{language}\n"
    """Text put before the code (``{language}`` is filled in); keeps the code off position 0,
    whose state is an attention sink with activations ~100x larger than any other token."""
    shape: bool = True
    """Append log token count and log character length."""
    position: bool = True
    """Append the line's relative position in the file (0 = first scorable line, 1 = last)."""
    relative_shape: bool = True
    """Centre the shape columns on the snippet mean too, so every input says how a line differs
    from the rest of its file: lines of Java or C++ are longer than Python's across the board, and
    a ranker trained on Python extrapolates absolute lengths badly. Chosen on the Python dev split
    and on mined non-Python fixes, never on evaluation data (validation Top-1 0.159 -> 0.175)."""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> FeatureConfig:
        """Read a manifest's ``features``, as ``to_dict`` wrote it."""
        return cls(**config_fields(cls, d, "FeatureConfig"))

    def prefix_for(self, language: str | None) -> str:
        return self.prefix.replace("{language}", language or "")

    def n_inputs(self, d: int) -> int:
        """Ranker inputs per line for ``d``-wide line states (the last one: the declaration column)."""
        return d + 2 * int(self.shape) + int(self.position) + 1


@dataclass(frozen=True)
class SnippetLines:
    """A text's scorable lines and their states."""

    lines: list[LineSpan]
    states: torch.Tensor
    """(n_lines, d) float32: probed-layer state at each line's end token."""


class StateCache:
    """Line states on disk, keyed by supervisor weights hash, layer and the exact input text.

    Reading code is the expensive step of training and evaluation; the same snippets are read by
    ``pretrain``, ``bind`` and every ``eval`` run, so each is read once. One small file per text.
    """

    def __init__(self, root: Path, sup: Supervisor):
        self.dir = Path(root) / "states" / f"{sup.info.sha256[:16]}-L{sup.layer}"

    def _path(self, model_input: str) -> Path:
        h = hashlib.sha256(model_input.encode("utf-8", "surrogatepass")).hexdigest()
        return self.dir / h[:2] / f"{h}.pt"

    def get(self, model_input: str) -> torch.Tensor | None:
        p = self._path(model_input)
        if not p.exists():
            return None
        try:
            return torch.load(p, weights_only=True)
        except (OSError, RuntimeError, EOFError):
            return None  # a torn write from a killed run: recompute

    def put(self, model_input: str, states: torch.Tensor) -> None:
        p = self._path(model_input)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_suffix(f".tmp{id(states)}")
        torch.save(states.contiguous().clone(), tmp)
        tmp.replace(p)


def supervisor_input(sup: Supervisor, text: str, prefix: str) -> tuple[str, Encoded, list[LineSpan]]:
    """One text as the supervisor reads it: the model input (``prefix`` + the text as read,
    ``lines.as_read``; also the state-cache key), its tokens, and the text's scorable lines."""
    text = as_read(text)
    enc = sup.encode(prefix + text)
    return prefix + text, enc, map_lines(text, enc.offsets, base=len(prefix))


def extract(sup: Supervisor, texts: Sequence[str], languages: Sequence[str | None],
            cfg: FeatureConfig, progress: bool = False, chunk: int = 64,
            desc: str = "reading code", cache: StateCache | None = None) -> list[SnippetLines]:
    """Line states for many texts: one batched truncated forward pass per ``chunk`` texts."""
    encoded = [supervisor_input(sup, text, cfg.prefix_for(lang)) for text, lang in zip(texts, languages)]
    out: list[SnippetLines | None] = [None] * len(encoded)
    todo = []
    for i, (key, _, spans) in enumerate(encoded):
        hit = cache.get(key) if cache is not None else None
        if hit is not None and hit.shape[0] == len(spans):
            out[i] = SnippetLines(spans, hit)
        else:
            todo.append(i)
    bar = tqdm(total=len(todo), desc=desc, unit="file", disable=not progress or not todo, leave=False)
    for c in range(0, len(todo), chunk):
        part = todo[c:c + chunk]
        states = sup.states([encoded[i][1].ids for i in part])
        for i, h in zip(part, states):
            key, _, spans = encoded[i]
            idx = torch.tensor([s.end_token for s in spans], dtype=torch.long)
            lines = h[idx] if spans else h[:0]   # (n_lines, d)
            out[i] = SnippetLines(spans, lines)
            if cache is not None:
                cache.put(key, lines)
        bar.update(len(part))
    bar.close()
    return [o for o in out if o is not None]


def ranker_inputs(states: torch.Tensor, lines: Sequence[LineSpan], cfg: FeatureConfig) -> torch.Tensor:
    """(n_lines, d) line states of one snippet -> (n_lines, cfg.n_inputs(d)): the centred states,
    the shape columns, and last the declaration column (``declaration_column``), which
    ``analyzer.ranker`` reads to leave declaration lines out of its length prior."""
    parts = [states - states.mean(dim=0, keepdim=True)]
    n = len(lines)
    # Column order [log tokens, position, log chars] is what shipped models were trained on.
    extra = []
    if cfg.shape:
        extra.append(torch.tensor([float(s.n_tokens) for s in lines], dtype=states.dtype).log1p())
    if cfg.position:
        extra.append(torch.arange(n, dtype=states.dtype) / max(n - 1, 1))
    if cfg.shape:
        extra.append(torch.tensor([float(len(s.text.strip())) for s in lines], dtype=states.dtype).log1p())
    if extra:
        shape = torch.stack(extra, dim=1).reshape(n, len(extra))
        if cfg.relative_shape and cfg.shape:
            cols = [0, len(extra) - 1]  # log tokens and log chars; position is relative already
            shape[:, cols] -= shape[:, cols].mean(dim=0, keepdim=True)
        parts.append(shape)
    parts.append(declaration_column(lines).to(states.dtype))
    return torch.cat(parts, dim=1)


def declaration_column(lines: Sequence[LineSpan]) -> torch.Tensor:
    """(n_lines, 1) float32: 1.0 where the line declares (``analyzer.declarations``), else 0.0."""
    return torch.tensor([[float(declares(s.text))] for s in lines], dtype=torch.float32).reshape(len(lines), 1)
