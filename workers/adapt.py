"""``ptbot adapt`` from start to end: one repository's history (and its reviewers' feedback) ->
its own model, judged forward in time, promoted in its model HOME only when it wins.

1. mine the repository (``miners.mine``: real fixes, plus mutations of its clean code);
2. date every record by its commit (``miners.timeline``) and split at the cut;
3. with a label store, add the repository's exported feedback, dated by the head it was given on;
4. ``lab.adapt.adapt_home`` binds, compares and gates;
5. write the comparison (``--json``) and the report (``--report``: tables, Top-K curves, HTML).

The command line and the scheduled Celery task both run ``adapt_repository``. Adapting is
training: the supervisor is loaded here, never by anything that scores pull requests.
"""

from __future__ import annotations

import fcntl
import json
import logging
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from analyzer import artifact, versions
from analyzer.types import Record
from bot.config import Settings
from lab.adapt import AdaptConfig, AdaptResult, adapt_home, split_forward
from lab.records import load_records
from miners import timeline
from miners.history import git
from miners.mine import MineConfig, mine_repo, opened_repo, short_repo_name

log = logging.getLogger(__name__)

LOCK = ".adapt.lock"


class AdaptBusy(RuntimeError):
    """Another ``adapt`` is writing the same model HOME right now."""


@dataclass(frozen=True)
class AdaptJob:
    """One adaptation: which repository, into which HOME, split where, with what."""

    repo: str
    """Work tree, bare repository or clone URL whose history is mined."""
    home: Path
    """Model HOME of the repository (created from ``base_model`` when it does not exist)."""
    repository: str = ""
    """The repository's name in results and in the label store (``owner/name``); default: REPO's last part."""
    until: str | None = None
    """The cut: a date or a revision (``miners.timeline.resolve_cut``); default: newest commit - holdout."""
    holdout_months: int = 6
    """Without ``until``: months of the newest history held out as the forward slice."""
    rev: str = "HEAD"
    """Revision whose history is mined."""
    mutations: int = 1
    """Mutated copies of each clean snippet (0: real fixes only)."""
    max_commits: int | None = None
    """Mine at most this many commits (newest first)."""
    languages: tuple[str, ...] = ()
    """Only these languages (empty: all that ``analyzer.languages`` knows)."""
    feedback_db: str | None = None
    """Label store URL whose feedback on ``repository`` joins the records (None: no feedback)."""
    seed_data: tuple[Path, ...] = ()
    """Shared-schema JSONL files added to the fit side (e.g. the data the default model was bound on)."""
    base_model: str | None = None
    """Model that a new HOME starts from (default: ``PTBOT_MODEL`` or the packaged model)."""
    config: AdaptConfig = field(default_factory=AdaptConfig)
    """Training and gate settings."""

    def __post_init__(self) -> None:
        if self.holdout_months < 1:
            raise ValueError(f"holdout_months must be at least 1, got {self.holdout_months}")
        if self.mutations < 0:
            raise ValueError(f"mutations must be 0 or more, got {self.mutations}")
        if not self.repository:
            object.__setattr__(self, "repository", short_repo_name(self.repo))


@contextmanager
def home_lock(home: Path) -> Iterator[None]:
    """Hold ``home``'s adapt lock (an advisory file lock), or raise AdaptBusy at once."""
    home.mkdir(parents=True, exist_ok=True)
    with open(home / LOCK, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise AdaptBusy(f"another `ptbot adapt` is writing {home}; try again when it has finished") from None
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def ensure_home(home: Path, base_model: str | None) -> None:
    """Create ``home`` from ``base_model`` (or the packaged model) unless it is a HOME already."""
    if versions.is_home(home):
        return
    src = artifact.resolve_model_dir(base_model) if base_model else artifact.default_model_dir()
    versions.init_home(home, src)
    log.info("created model home %s from %s", home, src)


def feedback_records(url: str, repository: str, languages: Sequence[str]) -> list[Record]:
    """The label store's feedback on ``repository`` as records (``ptbot feedback export``)."""
    from bot.feedback import export_records
    from bot.store import LabelStore

    store = LabelStore(url)
    try:
        records, summary = export_records(store, repository)
    finally:
        store.close()
    log.info("feedback on %s: %d record(s) (%d positive, %d negative line(s))", repository, summary.records,
             summary.positive_lines, summary.negative_lines)
    return [r for r in records if not languages or r.language in languages]


def load_supervisor(settings: Settings, home: Path) -> Any:
    """The supervisor the serving version of ``home`` was built on."""
    from analyzer.supervisor import Supervisor, SupervisorConfig

    ref = artifact.read_manifest(versions.current_dir(home))["supervisor"]
    return Supervisor.load(SupervisorConfig(model=ref["model"], layer=int(ref["layer"]), device=settings.device,
                                            cache_dir=settings.cache_path))


def adapt_repository(job: AdaptJob, settings: Settings, *, supervisor: Any = None, progress: bool = False,
                     cache: bool = True) -> AdaptResult:
    """Run one adaptation (see the module docstring); AdaptBusy when the HOME is being written.

    ``supervisor``: an already loaded one (tests, a worker that keeps it); ``cache``: keep the
    line states read under ``settings.cache_dir`` so a repeated run does not read the code again.
    """
    home = Path(job.home)
    with home_lock(home), tempfile.TemporaryDirectory(prefix="ptbot-adapt-") as tmp:
        ensure_home(home, job.base_model or settings.model or None)
        mine_cfg = MineConfig(repo=job.repo, out=Path(tmp) / "mined", name=short_repo_name(job.repo), rev=job.rev,
                              max_commits=job.max_commits, languages=job.languages, mutations=job.mutations,
                              seed=job.config.seed)
        with opened_repo(mine_cfg) as (repo_dir, _):
            cut = timeline.resolve_cut(repo_dir, job.until, job.holdout_months, job.rev)
            times = timeline.commit_times(repo_dir, job.rev)
            head = git(repo_dir, "rev-parse", f"{job.rev}^{{commit}}").strip()
            mine_repo(replace(mine_cfg, repo=repo_dir), progress=progress)
            records = load_records(sorted(mine_cfg.out.glob("mined-*.jsonl")))
            if job.feedback_db:
                records += feedback_records(job.feedback_db, job.repository, job.languages)
        split = split_forward(records, times, cut)
        log.info("%s: %d records, cut %s: %d fit, %d forward (%d undated, %d later mutations left out)",
                 job.repository, len(records), timeline.iso(cut), len(split.fit), len(split.test), split.undated,
                 split.later_mutations)
        seed = load_records(list(job.seed_data), list(job.languages) or None) if job.seed_data else []
        sup = supervisor or load_supervisor(settings, home)
        state_cache = None
        if cache:
            from analyzer.features import StateCache

            state_cache = StateCache(settings.cache_path, sup)
        inputs = {"head": head, "rev": job.rev, "mutations": job.mutations, "max_commits": job.max_commits,
                  "languages": list(job.languages), "seed_data": [str(p) for p in job.seed_data],
                  "feedback": bool(job.feedback_db)}
        return adapt_home(sup, home, split, repository=job.repository, seed_records=seed, cfg=job.config,
                          inputs=inputs, cache=state_cache, progress=progress)


def write_outputs(result: AdaptResult, *, json_out: Path | None = None, report_dir: Path | None = None) -> list[Path]:
    """``--json FILE`` and ``--report DIR`` (PNG Top-K curves per slice + report.html); the paths written."""
    from bot.eval_report import render_table, write_plots

    written: list[Path] = []
    if json_out:
        Path(json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(json_out).write_text(json.dumps(result.to_json(), indent=2) + "\n", encoding="utf-8")
        written.append(Path(json_out))
    if report_dir:
        doc = result.report_doc()
        written += write_plots(doc, Path(report_dir), title=f"ptbot adapt: {result.repository} "
                               f"(forward slice after {timeline.iso(result.cut)})")
        table = Path(report_dir) / "table.txt"
        table.write_text(render_table(doc), encoding="utf-8")
        written.append(table)
    return written
