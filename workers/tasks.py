"""Celery tasks: the review pipeline's stages on their queues, and the web process's ``enqueue``.

``ptbot.review`` (cpu queue) reads the PR and plans; ``ptbot.score`` (gpu queue) runs the model;
``ptbot.publish`` (cpu queue) posts. Each stage hands plain JSON to the next with ``send_task``,
so a worker killed in the middle of a stage only repeats that stage (acks_late), and
``bot.pr_review`` makes the repeat harmless. ``InProcessQueue`` runs the same pipeline in a
thread for ``ptbot serve --eager`` (no Redis, no Celery worker). The web process sends tasks
by name (``workers.producer.celery_enqueue``) and never imports this module.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from analyzer.artifact import ArtifactError, default_model_dir, read_manifest, resolve_model_dir
from bot.config import Settings
from bot.github import GitHubApp
from bot.jobs import Job, read_job
from bot.pr_review import (
    MemoryLedger,
    Outcome,
    Prepared,
    RedisLedger,
    ReviewLedger,
    Scored,
    fail_review,
    prepare,
    publish,
    run_review,
    score,
)
from bot.render import Renderer
from bot.rescore import expand_job
from bot.review import Scorer
from bot.schema import PayloadError
from workers.producer import (
    ADAPT_SCHEDULE_TASK,
    ADAPT_TASK,
    EXTRACT_SHARD_TASK,
    FEEDBACK_TASK,
    HARVEST_TASK,
    MINE_RANGE_TASK,
    PUBLISH_TASK,
    REVIEW_TASK,
    SCORE_TASK,
)

log = logging.getLogger(__name__)



class PoisonJob(RuntimeError):
    """A task delivered more often than the cap allows: it is failed instead of redelivered."""


def load_scorer(settings: Settings, model: str | None = None) -> Scorer:
    """The RiskScorer of ``model`` (default: ``settings.model``, else the packaged model); imports torch."""
    from analyzer.score import RiskScorer
    from analyzer.supervisor import SupervisorConfig

    cfg = SupervisorConfig(device=settings.device, cache_dir=settings.cache_path)
    return RiskScorer.load(model or settings.model or None, supervisor=cfg)


def job_repository(job: dict[str, Any]) -> str | None:
    """``owner/name`` of the repository a review job is about (None when the job does not say)."""
    owner, name = job.get("owner"), job.get("repo")
    return f"{owner}/{name}" if owner and name else None


def expected_model_version(settings: Settings, repository: str | None = None) -> str | None:
    """``name@version`` of the configured model, read from its manifest without loading it.

    Lets CPU workers (which never load the model) recognise a job key that is already done.
    None when the manifest cannot be read; then only ``publish`` checks the key.
    """
    model = settings.model_for(repository)
    try:
        model_dir = resolve_model_dir(model) if model else default_model_dir()
        manifest = read_manifest(model_dir)
    except (ArtifactError, OSError, ValueError):
        return None
    # The same fields, with the same fallbacks, as ``RiskScorer.info``.
    name = manifest.get("name", os.path.basename(os.path.normpath(str(model_dir))))
    version = manifest.get("version", manifest.get("updated", ""))
    return f"{name}@{version}" if version else name


def shared_github(settings: Settings) -> GitHubApp:
    """The App client of a worker process: installation tokens and the per-installation write
    pace live in Redis (``PTBOT_REDIS_URL``), shared with every other worker process."""
    import redis

    from bot.token_cache import RedisTokenCache
    from bot.write_gate import RedisWriteGate

    client = redis.Redis.from_url(settings.redis_url, socket_timeout=5)
    return GitHubApp.from_settings(
        settings, token_cache=RedisTokenCache(client),
        write_gate=RedisWriteGate.factory(client, settings.github_api_url, settings.seconds_between_writes))


class WorkerRuntime:
    """What the tasks of one process use: GitHub App client, scorer, ledger, templates.

    Built by the composition root before the worker forks; every resource is created lazily in
    the process that uses it (sockets and locks must not cross a fork) and ``reset`` drops them
    in a new child (``worker_process_init``). The scorer is loaded once per process.
    """

    def __init__(self, settings: Settings, *,
                 scorer_factory: Callable[[], Scorer] | None = None,
                 github_factory: Callable[[], GitHubApp] | None = None,
                 ledger_factory: Callable[[], ReviewLedger] | None = None,
                 model_version: str | None = None,
                 repository_scorer_factory: Callable[[str], Scorer] | None = None) -> None:
        self.settings = settings
        self._scorer_factory = scorer_factory or (lambda: load_scorer(settings))
        # A repository with a model of its own (``Settings.model_homes``) is scored by it.
        self._repository_scorer_factory = repository_scorer_factory or (lambda model: load_scorer(settings, model))
        self._github_factory = github_factory or (lambda: shared_github(settings))
        self._ledger_factory = ledger_factory or (lambda: RedisLedger.from_url(settings.redis_url))
        self._model_version = model_version
        self._cache: dict[str, Any] = {}
        self._pid = os.getpid()
        self._lock = threading.Lock()

    def reset(self) -> None:
        """Forget every per-process resource (called in a freshly forked child)."""
        with self._lock:
            self._cache.clear()
            self._pid = os.getpid()

    def _get(self, name: str, factory: Callable[[], Any]) -> Any:
        with self._lock:
            if self._pid != os.getpid():  # forked without worker_process_init (e.g. a test pool)
                self._cache.clear()
                self._pid = os.getpid()
            if name not in self._cache:
                self._cache[name] = factory()
            return self._cache[name]

    def scorer(self, repository: str | None = None) -> Scorer:
        """The scorer for ``repository``: its own promoted model, else the deployment's.

        The repository's HOME pointer is read on every call, so a promotion or a rollback is
        served from the next job on; the version it replaces is dropped from this process.
        """
        own = self.settings.model_for(repository) if repository else self.settings.model
        if not repository or own == self.settings.model:
            return self._get("scorer", self._scorer_factory)
        version_dir = str(resolve_model_dir(own))
        key = f"scorer:{own}"
        with self._lock:
            held = self._cache.get(key)
            if held is not None and held[0] == version_dir and self._pid == os.getpid():
                return held[1]
        scorer = self._repository_scorer_factory(own)
        with self._lock:
            self._cache[key] = (version_dir, scorer)
        return scorer

    def github(self) -> GitHubApp:
        return self._get("github", self._github_factory)

    def ledger(self) -> ReviewLedger:
        return self._get("ledger", self._ledger_factory)

    def renderer(self) -> Renderer:
        return self._get("renderer", Renderer)

    def model_version(self, repository: str | None = None) -> str | None:
        if repository and self.settings.model_for(repository) != self.settings.model:
            return expected_model_version(self.settings, repository)  # follows the HOME's pointer
        if self._model_version is None:
            self._model_version = expected_model_version(self.settings) or ""
        return self._model_version or None

    def pull_request(self, job: Mapping[str, Any]) -> Any:
        return self.github().pull_request(int(job["installation_id"]), job["owner"], job["repo"],
                                          int(job["number"]))


def read_task_job(raw: Any, task: str) -> Job | None:
    """A task's job read back into its type (``bot.jobs.read_job``); None, logged with the delivery
    id, when it does not fit: a malformed job fails the same way on every retry, so it is dropped."""
    try:
        return read_job(raw)
    except PayloadError as e:
        delivery = raw.get("delivery") if isinstance(raw, Mapping) else None
        log.error("%s: dropping a job that does not fit its schema (delivery %s): %s", task, delivery, e)
        return None


def count_delivery(ledger: ReviewLedger, task_id: str, name: str, cap: int) -> int:
    """Count a delivery of ``task_id``; raise PoisonJob past ``cap`` (acks_late + worker lost
    would otherwise redeliver a job that kills its worker forever)."""
    n = ledger.count_delivery(task_id)
    if n > cap:
        raise PoisonJob(f"{name} {task_id} was delivered {n} times (cap {cap}); failing it. "
                        "Look for the job in the worker logs: it crashed or timed out every time.")
    if n > 1:
        log.warning("%s %s: delivery %d of at most %d", name, task_id, n, cap)
    return n


def give_up(runtime: WorkerRuntime, job: dict[str, Any], stage: str, error: BaseException | str,
            check_run_id: int | None = None) -> None:
    """Complete the job's check run as a failure with the reason (``bot.pr_review.fail_review``),
    so it does not spin "in progress" forever. Best effort: the task is failing anyway, and
    GitHub may be the reason."""
    try:
        api = runtime.pull_request(job)
        ledger = runtime.ledger()
    except Exception:
        log.exception("could not report the failure of %s/%s#%s", job.get("owner"), job.get("repo"),
                      job.get("number"))
        return
    fail_review(job, api, ledger, stage, error, check_run_id=check_run_id)


def register_tasks(app: Any, runtime: WorkerRuntime, *, cpu_queue: str, gpu_queue: str,
                   max_deliveries: int, lock_seconds: int) -> dict[str, Any]:
    """Define the three tasks on ``app`` (a Celery app built by ``workers.celery_app``)."""

    @app.task(bind=True, shared=False, name=REVIEW_TASK)
    def review_task(self: Any, raw: dict[str, Any]) -> dict[str, Any]:
        try:
            count_delivery(runtime.ledger(), self.request.id, REVIEW_TASK, max_deliveries)
        except PoisonJob as e:
            typed = read_task_job(raw, REVIEW_TASK)
            if typed is not None:
                give_up(runtime, typed, "prepare", e)
            raise
        job = read_task_job(raw, REVIEW_TASK)
        if job is None:
            return {"status": "invalid_job"}
        if feedback_wanted(runtime, job):  # label work runs beside the review
            self.app.send_task(FEEDBACK_TASK, args=[job.to_json()], queue=cpu_queue)
        jobs = expand_job(job, runtime.github)
        if jobs != [job]:  # a re-score of several PRs (one task each), or nothing to review
            ids = [self.app.send_task(REVIEW_TASK, args=[j.to_json()], queue=cpu_queue).id for j in jobs]
            return {"status": "fanned_out" if ids else "ignored", "tasks": ids}
        try:
            result = prepare(job, runtime.pull_request(job), runtime.settings.repo_defaults,
                             runtime.ledger(), runtime.renderer(),
                             model_version=runtime.model_version(job_repository(job)))
        except Exception as e:
            give_up(runtime, job, "prepare", e)
            raise
        if isinstance(result, Outcome):
            log.info("review of %s/%s#%s: %s (%s)", job.get("owner"), job.get("repo"),
                     job.get("number"), result.status, result.detail)
            return result.to_dict()
        sent = self.app.send_task(SCORE_TASK, args=[result.to_dict()], queue=gpu_queue)
        return {"status": "scoring", "task": sent.id}

    @app.task(bind=True, shared=False, name=SCORE_TASK)
    def score_task(self: Any, prepared: dict[str, Any]) -> dict[str, Any]:
        try:
            count_delivery(runtime.ledger(), self.request.id, SCORE_TASK, max_deliveries)
            scored = score(Prepared.from_dict(prepared), runtime.scorer(job_repository(prepared["job"])))
        except Exception as e:
            give_up(runtime, prepared["job"], "score", e, prepared.get("check_run_id"))
            raise
        sent = self.app.send_task(PUBLISH_TASK, args=[scored.to_dict()], queue=cpu_queue)
        return {"status": "publishing", "task": sent.id, "scored": scored.scored}

    @app.task(bind=True, shared=False, name=PUBLISH_TASK)
    def publish_task(self: Any, scored: dict[str, Any]) -> dict[str, Any]:
        prepared = scored["prepared"]
        try:
            count_delivery(runtime.ledger(), self.request.id, PUBLISH_TASK, max_deliveries)
            s = Scored.from_dict(scored)
            # The owner is the task id: a redelivery of this very task may take over its own lock.
            outcome = publish(s, runtime.pull_request(s.prepared.job), runtime.renderer(), runtime.ledger(),
                              owner=self.request.id, lock_seconds=lock_seconds,
                              feedback=feedback_sink(runtime))
        except Exception as e:
            give_up(runtime, prepared["job"], "publish", e, prepared.get("check_run_id"))
            raise
        return outcome.to_dict()

    return {REVIEW_TASK: review_task, SCORE_TASK: score_task, PUBLISH_TASK: publish_task}


# ----- reviewer feedback: opt in with workers.celery_app.enable_feedback --------------------------


def feedback_store(runtime: WorkerRuntime) -> Any:
    """The runtime's ``bot.store.LabelStore`` (one per process), or None when feedback is off."""
    url = getattr(runtime, "feedback_url", None)
    if not url:
        return None
    from bot.store import LabelStore

    return runtime._get("label_store", lambda: LabelStore(url))


def feedback_sink(runtime: WorkerRuntime) -> Any:
    """The ``FeedbackSink`` for ``publish``, or None when feedback is off."""
    store = feedback_store(runtime)
    if store is None:
        return None
    from bot.feedback import StoreFeedback

    return StoreFeedback(store, getattr(runtime, "feedback_settings", None))


def feedback_wanted(runtime: WorkerRuntime, job: Mapping[str, Any]) -> bool:
    """Does this webhook job carry label work: a feedback event, a push or a close?"""
    if not getattr(runtime, "feedback_url", None):
        return False
    return job.get("kind") in ("feedback", "closed") or job.get("action") == "synchronize"


def run_feedback_job(runtime: WorkerRuntime, job: Mapping[str, Any]) -> dict[str, Any]:
    """Store the labels one webhook job implies (threads, replies, pushes, merges)."""
    from bot.feedback import GitHubFeedbackAPI, handle_feedback_job, handle_pull_request_job, pr_text_reader

    store = feedback_store(runtime)
    if job.get("kind") == "feedback":
        owner, _, name = str(job.get("repo_full_name") or "/").partition("/")
        pr = runtime.github().pull_request(int(job["installation_id"]), owner, name, int(job["number"]))
        return {"status": handle_feedback_job(store, job, GitHubFeedbackAPI(pr, store))}
    counts = handle_pull_request_job(store, job, pr_text_reader(runtime.pull_request(job)),
                                     getattr(runtime, "feedback_settings", None))
    return {"status": "labelled", **counts}


def harvest_feedback(runtime: WorkerRuntime, force: bool = False) -> dict[str, Any]:
    """One beat: poll the reactions of every PR that is due."""
    from bot.feedback import FeedbackSettings, GitHubFeedbackAPI, harvest_due

    store = feedback_store(runtime)
    settings = getattr(runtime, "feedback_settings", None) or FeedbackSettings()
    results = harvest_due(store, lambda row: GitHubFeedbackAPI(
        runtime.github().pull_request(row.installation_id, *row.repo.split("/", 1), row.number), store),
        settings, force=force)
    return {"status": "harvested", "pull_requests": len(results), "votes": sum(r.votes for r in results)}


def register_feedback_tasks(app: Any, runtime: WorkerRuntime) -> dict[str, Any]:
    """Define the feedback task (webhook label work) and the harvest task (Celery beat)."""

    @app.task(shared=False, name=FEEDBACK_TASK)
    def feedback_task(raw: dict[str, Any]) -> dict[str, Any]:
        job = read_task_job(raw, FEEDBACK_TASK)
        return run_feedback_job(runtime, job) if job is not None else {"status": "invalid_job"}

    @app.task(shared=False, name=HARVEST_TASK)
    def harvest_task(force: bool = False) -> dict[str, Any]:
        return harvest_feedback(runtime, force)

    return {FEEDBACK_TASK: feedback_task, HARVEST_TASK: harvest_task}


class InProcessQueue:
    """``enqueue`` for ``ptbot serve --eager``: jobs run one at a time in a background thread.

    Nothing is durable: a job in flight when the process stops is lost (GitHub can redeliver).
    """

    def __init__(self, runtime: WorkerRuntime) -> None:
        self.runtime = runtime
        self.outcomes: list[Outcome] = []
        self._jobs: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="ptbot-eager", daemon=True)
        self._thread.start()

    def __call__(self, job: dict[str, Any]) -> str:
        job_id = f"eager-{uuid.uuid4().hex[:12]}"
        self._jobs.put(dict(job, _id=job_id))
        return job_id

    def join(self) -> None:
        """Wait until every job enqueued so far has run."""
        self._jobs.join()

    def close(self) -> None:
        self._jobs.put(None)
        self._thread.join(timeout=30)

    def _loop(self) -> None:
        while True:
            job = self._jobs.get()
            try:
                if job is None:
                    return
                typed = read_task_job(job, f"eager job {job['_id']}")
                jobs = expand_job(typed, self.runtime.github) if typed is not None else []
                for j in jobs:
                    outcome = run_review(j, self.runtime.pull_request(j), self.runtime.scorer(job_repository(j)),
                                         self.runtime.renderer(), self.runtime.ledger(),
                                         self.runtime.settings.repo_defaults, owner=job["_id"])
                    self.outcomes.append(outcome)
                    log.info("eager job %s: %s (%s)", job["_id"], outcome.status, outcome.detail)
            except Exception:
                log.exception("eager job %s failed", job and job.get("_id"))
            finally:
                self._jobs.task_done()


def eager_runtime(settings: Settings, **kwargs: Any) -> WorkerRuntime:
    """A runtime whose ledger, tokens and write gates live in memory (the one-machine trial
    needs no Redis)."""
    ledger = MemoryLedger()
    kwargs.setdefault("github_factory", lambda: GitHubApp.from_settings(settings))
    return WorkerRuntime(settings, ledger_factory=lambda: ledger, **kwargs)


# ----- scale-out training work: mine-repo --queue, extract --queue --------------------------------


def _note_failure(path: Any, error: BaseException) -> None:
    """Leave the error where the waiting producer looks (it shares the output directory)."""
    from pathlib import Path

    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(f"{type(error).__name__}: {error}\n", encoding="utf-8")
    except OSError:
        log.exception("could not write the failure marker %s", path)


def training_supervisor(runtime: WorkerRuntime, model: str, layer: int) -> Any:
    """The supervisor at ``layer``, loaded once per worker process (on the first shard it reads)."""
    def load() -> Any:
        from analyzer.supervisor import Supervisor, SupervisorConfig

        return Supervisor.load(SupervisorConfig(model=model, layer=layer, device=runtime.settings.device,
                                                cache_dir=runtime.settings.cache_path))

    return runtime._get(f"supervisor:{model}:{layer}", load)


def register_scaleout_tasks(app: Any, runtime: WorkerRuntime, *, max_deliveries: int) -> dict[str, Any]:
    """Define the range-mining task (cpu queue) and the line-states task (gpu queue).

    Both write into the output directory the producer names, so workers must see it (and the
    repository) at the same path; a task that fails leaves ``<piece>.failed`` with the error
    there. Their outputs appear by atomic rename under names fixed by the work itself, so a
    redelivered task rewrites the same piece instead of adding one.
    """
    @app.task(bind=True, shared=False, name=MINE_RANGE_TASK)
    def mine_range_task(self: Any, job: dict[str, Any]) -> dict[str, Any]:
        from miners.ranges import RangeJob, mine_range

        rng = RangeJob.from_dict(job)
        try:
            count_delivery(runtime.ledger(), self.request.id, MINE_RANGE_TASK, max_deliveries)
            return mine_range(rng)
        except Exception as e:
            _note_failure(rng.failed_path(), e)
            raise

    @app.task(bind=True, shared=False, name=EXTRACT_SHARD_TASK)
    def extract_shard_task(self: Any, job: dict[str, Any]) -> dict[str, Any]:
        from lab import shards

        out_dir, index = job["dir"], int(job["index"])
        try:
            count_delivery(runtime.ledger(), self.request.id, EXTRACT_SHARD_TASK, max_deliveries)
            manifest = shards.read_manifest(out_dir)
            if shards.shard_done(out_dir, manifest, index):
                return {"shard": index, "status": "already read"}
            ref = manifest["supervisor"]
            sup = training_supervisor(runtime, ref["model"], int(ref["layer"]))
            path = shards.extract_shard(sup, out_dir, index)
            return {"shard": index, "status": "read", "path": str(path)}
        except Exception as e:
            _note_failure(shards.failed_path(out_dir, index), e)
            raise

    return {MINE_RANGE_TASK: mine_range_task, EXTRACT_SHARD_TASK: extract_shard_task}


# ----- scheduled per-repository adaptation: workers.celery_app.enable_adaptation ----------------


ADAPT_TIME_LIMIT = 6 * 3600
"""Seconds one repository's adaptation may take (mining, reading the code, training)."""


def mirrored_repositories(settings: Settings) -> list[str]:
    """``owner/name`` of every repository mirrored under ``settings.adapt_mirrors`` (sorted)."""
    from pathlib import Path

    if not settings.adapt_mirrors:
        return []
    root = Path(settings.adapt_mirrors).expanduser()
    return sorted(f"{owner.name}/{repo.name}" for owner in root.iterdir() if owner.is_dir()
                  for repo in owner.iterdir()
                  if (repo / ".git").exists() or (repo / "HEAD").is_file()) if root.is_dir() else []


def run_adaptation(runtime: WorkerRuntime, repository: str) -> dict[str, Any]:
    """``ptbot adapt`` for one mirrored repository into its home; a repeat on an unchanged
    history (a redelivery) finds the version it made and trains nothing."""
    from pathlib import Path

    from analyzer.versions import repository_home
    from workers.adapt import AdaptBusy, AdaptJob, adapt_repository

    settings = runtime.settings
    mirror = Path(settings.adapt_mirrors).expanduser() / repository
    home = repository_home(Path(settings.model_homes).expanduser(), repository)
    try:
        result = adapt_repository(AdaptJob(repo=str(mirror), home=home, repository=repository), settings)
    except AdaptBusy as e:
        log.info("adapt %s: %s", repository, e)
        return {"status": "busy", "repository": repository}
    except ValueError as e:  # e.g. no fix after the cut yet: nothing to judge on this week
        log.info("adapt %s: not adapted: %s", repository, e)
        return {"status": "skipped", "repository": repository, "reason": str(e)}
    status = "already_adapted" if result.reused else ("promoted" if result.promoted else "refused")
    log.info("adapt %s: %s version %s (%s)", repository, status, result.version, result.reason)
    return {"status": status, "repository": repository, "version": result.version}


def register_adaptation_tasks(app: Any, runtime: WorkerRuntime, *, gpu_queue: str,
                              max_deliveries: int) -> dict[str, Any]:
    """Define the beat task (one adapt task per mirrored repository) and the adapt task."""
    @app.task(bind=True, shared=False, name=ADAPT_SCHEDULE_TASK)
    def adapt_schedule_task(self: Any) -> dict[str, Any]:
        repos = mirrored_repositories(runtime.settings)
        for repository in repos:
            self.app.send_task(ADAPT_TASK, args=[{"repository": repository}], queue=gpu_queue)
        return {"status": "scheduled", "repositories": repos}

    # Mining and training take far longer than a review. A redelivery while this still runs (the
    # broker's visibility timeout is sized for reviews) finds the home locked and ends as "busy".
    @app.task(bind=True, shared=False, name=ADAPT_TASK, soft_time_limit=ADAPT_TIME_LIMIT,
              time_limit=ADAPT_TIME_LIMIT + 600)
    def adapt_task(self: Any, job: dict[str, Any]) -> dict[str, Any]:
        count_delivery(runtime.ledger(), self.request.id, ADAPT_TASK, max_deliveries)
        return run_adaptation(runtime, str(job["repository"]))

    return {ADAPT_SCHEDULE_TASK: adapt_schedule_task, ADAPT_TASK: adapt_task}
