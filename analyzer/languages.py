"""Languages ptbot knows: file extension -> language name, and which lines are worth a score.

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
# (PtTrust skips them too, method.md §1.2); neither does a blank line.
_PUNCT_ONLY = re.compile(r"^[\s{}()\[\];,.:]*$")


def language_for_path(path: str) -> str | None:
    """Language of a file by its extension, or None when ptbot does not know it."""
    return EXTENSIONS.get(PurePosixPath(path).suffix.lower())


def is_scorable(line: str) -> bool:
    """True unless the line is blank or punctuation-only (``}``, ``});``, ``)``, ``]``...)."""
    return not _PUNCT_ONLY.match(line)
