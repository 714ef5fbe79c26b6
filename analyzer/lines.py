"""Map token offsets to source lines: which token's state stands for each line.

Rules (PtTrust's line tokens, without the reference code's leak through shared newline tokens):
- a token belongs to the line that holds its **first character**, so merged tokens such as
  ``"\\n    "`` (newline + next line's indentation) or ``"):\\n"`` belong to exactly one line and
  never leak a vector or a label into the neighbouring line;
- a line's vector is the state of the token holding its terminating newline when that token starts
  on the line (the usual case), else the last token that starts on the line (the last line without
  a newline, or a newline swallowed by a token from an earlier line);
- blank and punctuation-only lines get no vector (``is_scorable``); a line with no token of its
  own gets none either.

Standard library only, so golden-file tests can run without torch.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

from analyzer.languages import is_scorable


@dataclass(frozen=True, slots=True)
class LineSpan:
    """The tokens of one line."""

    line: int
    """1-based line number."""
    first_token: int
    """Index of the first token that starts on this line."""
    end_token: int
    """Index of the token whose state is the line's vector."""
    n_tokens: int
    """Tokens that start on this line (for token-weighted metrics)."""
    text: str
    """The line's text without its line ending (LF or CRLF)."""


def source_lines(text: str) -> list[str]:
    """The lines of a file as git and GitHub number them, without their line endings.

    Split on LF only: ``str.splitlines`` would also split on form feeds, U+2028 and other
    characters that are ordinary text inside a line to git, and every later line number would be
    off. The CR of a CRLF ending is dropped; a final newline does not start another line.
    """
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return [ln[:-1] if ln.endswith("\r") else ln for ln in lines]


def as_read(text: str) -> str:
    """``text`` as the supervisor reads it: CRLF endings as LF and no leading byte-order mark, so
    a Windows-saved file is the same code, not lines that all end in an unseen carriage return.
    Line numbers are unchanged."""
    return text.removeprefix("\ufeff").replace("\r\n", "\n")


def line_starts(text: str) -> list[int]:
    """Character index where each line starts (line i+1 starts at result[i])."""
    starts = [0]
    for i, ch in enumerate(text):
        if ch == "\n" and i + 1 < len(text):
            starts.append(i + 1)
    return starts


def map_lines(text: str, offsets: list[tuple[int, int]], base: int = 0) -> list[LineSpan]:
    """Scorable lines of ``text`` with their token spans.

    ``offsets`` are token character spans in the tokenized string; ``text`` starts at character
    ``base`` of that string (a prompt prefix may come first). Tokens that start before ``base``
    (the prefix) or are empty (special tokens) belong to no line.
    """
    starts = line_starts(text)
    lines = source_lines(text)
    # newline position (relative to text) of each line, or None for an unterminated last line
    newline_at = [starts[i + 1] - 1 if i + 1 < len(starts) else
                  (len(text) - 1 if text.endswith("\n") else None) for i in range(len(starts))]
    owned: list[list[int]] = [[] for _ in starts]
    holder: list[int | None] = [None] * len(starts)
    for t, (s, e) in enumerate(offsets):
        s, e = s - base, e - base
        if e <= s or s < 0 or s >= len(text):
            continue
        ln = bisect.bisect_right(starts, s) - 1
        owned[ln].append(t)
        nl = newline_at[ln]
        if nl is not None and s <= nl < e:
            holder[ln] = t
    spans = []
    for i, toks in enumerate(owned):
        if not toks or i >= len(lines) or not is_scorable(lines[i]):
            continue
        end = holder[i] if holder[i] is not None else toks[-1]
        spans.append(LineSpan(line=i + 1, first_token=toks[0], end_token=end,
                              n_tokens=len(toks), text=lines[i]))
    return spans
