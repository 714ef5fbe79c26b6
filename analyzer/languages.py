"""Languages ptbot knows: file extension -> language name, which lines are worth a score, and
which are comments.

Standard library only (miners and bot use it too).
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath

# Names match the ``language`` field of the shared dataset schema.
EXTENSIONS: dict[str, str] = {
    ".py": "python", ".pyi": "python",
    ".java": "java",
    ".js": "javascript", ".mjs": "javascript", ".cjs": "javascript", ".jsx": "javascript",
    ".ts": "typescript", ".tsx": "typescript",
    ".go": "go",
    ".c": "c", ".h": "c",
    ".cc": "cpp", ".cpp": "cpp", ".cxx": "cpp", ".hpp": "cpp", ".hh": "cpp", ".hxx": "cpp",
    ".rs": "rust",
    ".rb": "ruby", ".php": "php", ".cs": "csharp", ".kt": "kotlin", ".swift": "swift",
    ".scala": "scala", ".sh": "shell",
}

LANGUAGES: frozenset[str] = frozenset(EXTENSIONS.values())

# A line made only of brackets, separators and whitespace carries no decision of its own
# (PtTrust's reference code skips them too); neither does a blank line.
_PUNCT_ONLY = re.compile(r"^[\s{}()\[\];,.:]*$")


def language_for_path(path: str) -> str | None:
    """Language of a file by its extension, or None when ptbot does not know it."""
    return EXTENSIONS.get(PurePosixPath(path).suffix.lower())


def is_scorable(line: str) -> bool:
    """True unless the line is blank or punctuation-only (``}``, ``});``, ``)``, ``]``...)."""
    return not _PUNCT_ONLY.match(line)


# A whole-line comment in the languages ptbot knows: "#" (but not a C preprocessor line or a Rust
# attribute, which are code), "//", a block comment's first, middle (" * ") or last line, an HTML
# comment, "-- " (SQL, Lua, Haskell). "*p = 0;" and "*args," are code: a middle line needs the
# star to be followed by a space, "/" or the end of the line. A directive counts only written
# against the "#" ("#include", "#if"): "# if the list is empty" is a Python comment, and an
# indented directive ("#  define X") is rare enough to read as a comment.
_COMMENT_LINE = re.compile(r"""^\s*(?:
        \#(?!(?:include|import|define|undef|ifn?def|if|elif|else|endif|pragma|error|line)\b)(?!!?\[)
      | // | /\* | \*(?:\s|/|$) | <!-- | --\s)""", re.VERBOSE)


def is_comment_line(line: str) -> bool:
    """True if the whole line is a comment (language-agnostic, lexical: see ``_COMMENT_LINE``)."""
    return bool(_COMMENT_LINE.match(line))
