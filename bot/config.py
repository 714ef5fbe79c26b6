"""Deployment settings (environment) and per-repository policy (``.ptbot.toml``).

``Settings.from_env`` is the one place ptbot reads environment variables; the composition root
calls it once and passes the result down. ``RepoConfig`` is parsed from the ``.ptbot.toml`` on a
repository's *default* branch (a pull request cannot silence the bot), starting from the
deployment's defaults in ``Settings.repo_defaults``.
"""

from __future__ import annotations

import fnmatch
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

from analyzer.languages import LANGUAGES, language_for_path

Mode = Literal["ai-only", "all"]
MODES: tuple[str, ...] = ("ai-only", "all")

DEFAULT_GITHUB_API_URL = "https://api.github.com"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_CACHE_DIR = "~/.cache/ptbot"
DEVICES = ("auto", "cpu", "cuda", "mps")

# Labels that repositories commonly use to say "an agent wrote this" (a
# convention, not a standard, hence configurable).
DEFAULT_AI_LABELS: tuple[str, ...] = ("ai-generated", "agent-task")


@dataclass(frozen=True)
class RepoConfig:
    """What ptbot does on one repository; every field can be set in ``.ptbot.toml``."""

    mode: Mode = "ai-only"
    """``ai-only``: score only added lines attributed to an AI author; ``all``: every added line."""
    top_k: int = 3
    """At most this many inline comments per review, however large the change (the rest of the
    ranking goes to the summary table)."""
    lines_per_comment: int = 3
    """The comment budget grows with the change: one inline comment per this many scored lines
    (rounded up, so any scored change earns one), up to ``top_k``. With ``min_lift`` 1.5 and
    ``top_k`` 3, chosen on the real fixes of the corpus's validation repositories
    (``benchmarks/noise_budget.py``): the highest share of buggy changes with a comment on a buggy
    line (0.41) at no more than 1.5 comments per change and a precision of at least 0.25."""
    min_lift: float = 1.5
    """A line gets a comment only if its probability is at least this multiple of the change's own
    base rate (the mean probability of its other scored lines, with the prior below): it must
    stand out from the change, not pass a fixed bar. 0 turns the rule off."""
    base_rate_prior: float = 0.1
    """The probability the base rate starts from: ``base_rate_prior_lines`` lines at this
    probability are counted with the change's other scored lines, so a change of one or two
    lines has a sensible base rate instead of being compared with itself. Provisional default."""
    base_rate_prior_lines: int = 4
    """How many lines the prior weighs as (0: the change's own lines alone). Provisional default."""
    min_probability: float = 0.0
    """An absolute floor as well: only lines whose calibrated probability of needing an edit is at
    least this get a comment. 0 (the default) leaves it to ``min_lift``; calibrated probabilities
    are small by nature (few lines of a change are wrong), so a high floor means silence."""
    per_file_cap: int = 3
    """At most this many inline comments on any one file, so one noisy file cannot take them all."""
    include: tuple[str, ...] = ()
    """Glob patterns (``fnmatch``, ``*`` crosses ``/``) of paths to review; empty means all."""
    exclude: tuple[str, ...] = ()
    """Glob patterns of paths never reviewed (generated code, vendored code, fixtures)."""
    languages: tuple[str, ...] = ()
    """Languages to review (names from ``analyzer.languages``); empty means every known one."""
    ai_labels: tuple[str, ...] = DEFAULT_AI_LABELS
    """PR labels that mark every added line of the PR as AI-authored."""
    review_drafts: bool = False
    """Review draft PRs too (also needs the deployment's ``Settings.review_drafts``)."""

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if not isinstance(self.top_k, int) or isinstance(self.top_k, bool) or not 0 <= self.top_k <= 50:
            raise ValueError(f"top_k must be an integer from 0 to 50, got {self.top_k!r}")
        if not isinstance(self.per_file_cap, int) or isinstance(self.per_file_cap, bool) or self.per_file_cap < 1:
            raise ValueError(f"per_file_cap must be a positive integer, got {self.per_file_cap!r}")
        if isinstance(self.min_probability, bool) or not isinstance(self.min_probability, (int, float)) \
                or not 0.0 <= float(self.min_probability) <= 1.0:
            raise ValueError(f"min_probability must be a number from 0 to 1, got {self.min_probability!r}")
        if not isinstance(self.lines_per_comment, int) or isinstance(self.lines_per_comment, bool) \
                or self.lines_per_comment < 1:
            raise ValueError(f"lines_per_comment must be a positive integer, got {self.lines_per_comment!r}")
        if isinstance(self.min_lift, bool) or not isinstance(self.min_lift, (int, float)) \
                or not 0.0 <= float(self.min_lift) <= 100.0:
            raise ValueError(f"min_lift must be a number from 0 (off) to 100, got {self.min_lift!r}")
        if isinstance(self.base_rate_prior, bool) or not isinstance(self.base_rate_prior, (int, float)) \
                or not 0.0 <= float(self.base_rate_prior) <= 1.0:
            raise ValueError(f"base_rate_prior must be a number from 0 to 1, got {self.base_rate_prior!r}")
        if not isinstance(self.base_rate_prior_lines, int) or isinstance(self.base_rate_prior_lines, bool) \
                or self.base_rate_prior_lines < 0:
            raise ValueError("base_rate_prior_lines must be an integer >= 0, "
                             f"got {self.base_rate_prior_lines!r}")
        unknown = sorted(set(self.languages) - LANGUAGES)
        if unknown:
            raise ValueError(f"unknown language(s) {', '.join(unknown)}; "
                             f"known: {', '.join(sorted(LANGUAGES))}")
        for name in ("include", "exclude", "languages", "ai_labels"):
            value = getattr(self, name)
            if not isinstance(value, tuple) or not all(isinstance(v, str) and v for v in value):
                raise ValueError(f"{name} must be a list of non-empty strings, got {value!r}")
        if not isinstance(self.review_drafts, bool):
            raise ValueError(f"review_drafts must be true or false, got {self.review_drafts!r}")

    @classmethod
    def from_toml(cls, text: str, defaults: RepoConfig | None = None) -> RepoConfig:
        """Parse ``.ptbot.toml`` text over ``defaults``; unknown keys and bad values raise ValueError."""
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ValueError(f".ptbot.toml is not valid TOML: {e}") from e
        # Accept both top-level keys and a [ptbot] table, so the file can grow other sections.
        if set(data) == {"ptbot"} and isinstance(data["ptbot"], dict):
            data = data["ptbot"]
        return (defaults or cls()).with_overrides(data, source=".ptbot.toml")

    def with_overrides(self, data: Mapping[str, Any], source: str) -> RepoConfig:
        """A copy with ``data`` applied; ``source`` names where the values came from in errors."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{source}: unknown key(s) {', '.join(unknown)}; "
                             f"known keys: {', '.join(sorted(known))}")
        values: dict[str, Any] = {}
        for key, value in data.items():
            if key in ("include", "exclude", "languages", "ai_labels"):
                if isinstance(value, str):
                    value = [value]
                if not isinstance(value, list):
                    raise ValueError(f"{source}: {key} must be a list of strings, got {value!r}")
                value = tuple(value)
            values[key] = value
        try:
            return replace(self, **values)
        except ValueError as e:
            raise ValueError(f"{source}: {e}") from e

    def wants_path(self, path: str) -> bool:
        """True if ``path`` passes include/exclude and its language is one the repo reviews."""
        if self.include and not any(fnmatch.fnmatchcase(path, g) for g in self.include):
            return False
        if any(fnmatch.fnmatchcase(path, g) for g in self.exclude):
            return False
        language = language_for_path(path)
        if language is None:
            return False
        return not self.languages or language in self.languages


@dataclass(frozen=True)
class Settings:
    """How this ptbot deployment runs; built once by ``Settings.from_env``."""

    app_id: str = ""
    """GitHub App id (``PTBOT_APP_ID``); needed by workers, not by the webhook."""
    private_key: str = field(default="", repr=False)
    """The App's PEM private key (``PTBOT_PRIVATE_KEY`` or the file ``PTBOT_PRIVATE_KEY_FILE``)."""
    webhook_secret: str = field(default="", repr=False)
    """Webhook secret (``PTBOT_WEBHOOK_SECRET``); the webhook refuses every delivery without it."""
    github_api_url: str = DEFAULT_GITHUB_API_URL
    """REST API root (``PTBOT_GITHUB_API_URL``); ``https://HOST/api/v3`` for GitHub Enterprise."""
    redis_url: str = DEFAULT_REDIS_URL
    """Celery broker and delivery de-duplication store (``PTBOT_REDIS_URL``)."""
    cache_dir: str = DEFAULT_CACHE_DIR
    """Models, databases and caches (``PTBOT_CACHE_DIR``); ``~`` is expanded."""
    database_url: str = ""
    """SQLAlchemy URL of the label store (``PTBOT_DATABASE_URL``); default SQLite in ``cache_dir``."""
    model: str = ""
    """Model directory or name (``PTBOT_MODEL``); empty means the embedded default model."""
    model_homes: str = ""
    """Directory of per-repository model HOMEs (``PTBOT_MODEL_HOMES``): ``ptbot adapt`` keeps
    ``owner/name``'s model in ``<dir>/owner/name``, and the App and the Action score that
    repository with it once a version of its own has won the gate; empty: every repository gets
    ``model``."""
    adapt_mirrors: str = ""
    """Directory of local mirrors of the installed repositories (``PTBOT_ADAPT_MIRRORS``):
    ``<dir>/owner/name`` is a clone (bare or not) that the deployment keeps fetched; with
    ``model_homes`` set, the weekly adapt task (``ptbot worker --beat``) re-runs ``ptbot adapt``
    on each. Empty: no scheduled adaptation."""
    device: str = "auto"
    """Torch device for scoring (``PTBOT_DEVICE``): auto, cpu, cuda, cuda:N or mps."""
    seconds_between_writes: float = 1.0
    """Minimum gap between write requests of one installation (``PTBOT_SECONDS_BETWEEN_WRITES``)."""
    review_drafts: bool = False
    """Accept draft PR events at all (``PTBOT_REVIEW_DRAFTS``); repos still opt in via .ptbot.toml."""
    repo_defaults: RepoConfig = RepoConfig()
    """Policy for repositories without ``.ptbot.toml`` (``PTBOT_MODE``, ``PTBOT_TOP_K``,
    ``PTBOT_LINES_PER_COMMENT``, ``PTBOT_MIN_LIFT``, ``PTBOT_BASE_RATE_PRIOR``,
    ``PTBOT_BASE_RATE_PRIOR_LINES``, ``PTBOT_MIN_PROBABILITY``, ``PTBOT_PER_FILE_CAP``,
    ``PTBOT_AI_LABELS`` comma-separated)."""

    def __post_init__(self) -> None:
        if self.app_id and not self.app_id.strip().isdigit():
            raise ValueError(f"PTBOT_APP_ID must be the numeric GitHub App id, got {self.app_id!r}")
        if self.private_key and "-----BEGIN" not in self.private_key:
            raise ValueError("PTBOT_PRIVATE_KEY must be a PEM private key (-----BEGIN ... PRIVATE KEY-----); "
                             "download it from the App's settings page")
        if not self.github_api_url.startswith(("http://", "https://")):
            raise ValueError(f"PTBOT_GITHUB_API_URL must be an http(s) URL, got {self.github_api_url!r}")
        if not self.redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"PTBOT_REDIS_URL must be a redis:// URL, got {self.redis_url!r}")
        if self.database_url and "://" not in self.database_url:
            raise ValueError(f"PTBOT_DATABASE_URL must be an SQLAlchemy URL, got {self.database_url!r}")
        if self.device not in DEVICES and not self.device.startswith("cuda:"):
            raise ValueError(f"PTBOT_DEVICE must be one of {', '.join(DEVICES)} or cuda:N, got {self.device!r}")
        if self.adapt_mirrors and not self.model_homes:
            raise ValueError("PTBOT_ADAPT_MIRRORS needs PTBOT_MODEL_HOMES: scheduled adaptations keep each "
                             "repository's model in PTBOT_MODEL_HOMES/owner/name")
        if self.seconds_between_writes < 0:
            raise ValueError("PTBOT_SECONDS_BETWEEN_WRITES must be >= 0")
        if not self.database_url:
            # Frozen: fill the derived default through object.__setattr__, once, here.
            object.__setattr__(self, "database_url", f"sqlite:///{self.cache_path / 'ptbot.db'}")

    def model_for(self, repository: str | None) -> str:
        """The model that scores ``repository`` (``owner/name``): its own HOME under ``model_homes``
        when that serves a version of its own, else ``model`` (empty: the embedded default)."""
        from analyzer.versions import serving_home

        home = serving_home(Path(self.model_homes).expanduser() if self.model_homes else None, repository)
        return str(home) if home else self.model

    @property
    def cache_path(self) -> Path:
        """``cache_dir`` with ``~`` expanded."""
        return Path(self.cache_dir).expanduser()

    def require_app(self) -> None:
        """Raise ValueError unless the App credentials a worker needs are present."""
        missing = [name for name, v in (("PTBOT_APP_ID", self.app_id),
                                        ("PTBOT_PRIVATE_KEY or PTBOT_PRIVATE_KEY_FILE", self.private_key))
                   if not v]
        if missing:
            raise ValueError(f"GitHub App credentials missing: set {' and '.join(missing)}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        """Build settings from ``PTBOT_*`` variables; unset or empty variables keep the defaults."""
        env = {k: v for k, v in environ.items() if k.startswith("PTBOT_") and v != ""}
        private_key = env.get("PTBOT_PRIVATE_KEY", "")
        key_file = env.get("PTBOT_PRIVATE_KEY_FILE")
        if private_key and key_file:
            raise ValueError("set PTBOT_PRIVATE_KEY or PTBOT_PRIVATE_KEY_FILE, not both")
        if key_file:
            try:
                private_key = Path(key_file).expanduser().read_text()
            except OSError as e:
                raise ValueError(f"PTBOT_PRIVATE_KEY_FILE {key_file!r} cannot be read: {e}") from e
        # Keys pasted into env files often carry literal "\n" instead of newlines.
        private_key = private_key.replace("\\n", "\n")

        policy: dict[str, Any] = {}
        if "PTBOT_MODE" in env:
            policy["mode"] = env["PTBOT_MODE"]
        if "PTBOT_TOP_K" in env:
            policy["top_k"] = _parse_int("PTBOT_TOP_K", env["PTBOT_TOP_K"])
        if "PTBOT_PER_FILE_CAP" in env:
            policy["per_file_cap"] = _parse_int("PTBOT_PER_FILE_CAP", env["PTBOT_PER_FILE_CAP"])
        if "PTBOT_LINES_PER_COMMENT" in env:
            policy["lines_per_comment"] = _parse_int("PTBOT_LINES_PER_COMMENT", env["PTBOT_LINES_PER_COMMENT"])
        if "PTBOT_MIN_LIFT" in env:
            policy["min_lift"] = _parse_float("PTBOT_MIN_LIFT", env["PTBOT_MIN_LIFT"])
        if "PTBOT_BASE_RATE_PRIOR" in env:
            policy["base_rate_prior"] = _parse_float("PTBOT_BASE_RATE_PRIOR", env["PTBOT_BASE_RATE_PRIOR"])
        if "PTBOT_BASE_RATE_PRIOR_LINES" in env:
            policy["base_rate_prior_lines"] = _parse_int("PTBOT_BASE_RATE_PRIOR_LINES",
                                                         env["PTBOT_BASE_RATE_PRIOR_LINES"])
        if "PTBOT_MIN_PROBABILITY" in env:
            policy["min_probability"] = _parse_float("PTBOT_MIN_PROBABILITY", env["PTBOT_MIN_PROBABILITY"])
        if "PTBOT_AI_LABELS" in env:
            policy["ai_labels"] = [s.strip() for s in env["PTBOT_AI_LABELS"].split(",") if s.strip()]

        kwargs: dict[str, Any] = {
            "app_id": env.get("PTBOT_APP_ID", "").strip(),
            "private_key": private_key,
            "webhook_secret": env.get("PTBOT_WEBHOOK_SECRET", ""),
            "github_api_url": env.get("PTBOT_GITHUB_API_URL", DEFAULT_GITHUB_API_URL).rstrip("/"),
            "redis_url": env.get("PTBOT_REDIS_URL", DEFAULT_REDIS_URL),
            "cache_dir": env.get("PTBOT_CACHE_DIR", DEFAULT_CACHE_DIR),
            "database_url": env.get("PTBOT_DATABASE_URL", ""),
            "model": env.get("PTBOT_MODEL", ""),
            "model_homes": env.get("PTBOT_MODEL_HOMES", ""),
            "adapt_mirrors": env.get("PTBOT_ADAPT_MIRRORS", ""),
            "device": env.get("PTBOT_DEVICE", "auto"),
            "repo_defaults": RepoConfig().with_overrides(policy, source="environment"),
        }
        if "PTBOT_SECONDS_BETWEEN_WRITES" in env:
            kwargs["seconds_between_writes"] = _parse_float("PTBOT_SECONDS_BETWEEN_WRITES",
                                                            env["PTBOT_SECONDS_BETWEEN_WRITES"])
        if "PTBOT_REVIEW_DRAFTS" in env:
            kwargs["review_drafts"] = _parse_bool("PTBOT_REVIEW_DRAFTS", env["PTBOT_REVIEW_DRAFTS"])
        return cls(**kwargs)


def _parse_int(name: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {value!r}") from None


def _parse_float(name: str, value: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"{name} must be a number, got {value!r}") from None


def _parse_bool(name: str, value: str) -> bool:
    v = value.strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{name} must be true or false, got {value!r}")
