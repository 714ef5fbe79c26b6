"""``ptbot mine-repo --queue``: ranges mined by a real Celery worker on real Redis equal a local run.

The worker runs in a thread of this process (celery's ``start_worker``, solo pool, as in
test_e2e_app.py); every Redis key of a test lives under a prefix of its own. The repositories are
the ``history`` fixture of test_miners.py (built with GitPython in tmp_path).
"""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import git
import pytest
import redis
from celery.contrib.testing.worker import start_worker
from click.testing import CliRunner
from test_miners import _commit, history  # noqa: F401 (pytest fixture)

from bot.config import Settings
from bot.pr_review import RedisLedger
from miners.mine import MineConfig, mine_repo
from miners.ranges import RANGES, RangeJob, mine_range, plan_ranges
from ptbot.cli import cli
from workers.celery_app import make_celery
from workers.producer import MINE_RANGE_TASK, WorkerConfig
from workers.scaleout import Piece, ScaleOutError, mine_on_queue, run_pieces
from workers.tasks import WorkerRuntime


@pytest.fixture
def cpu_worker(redis_url):
    """A Celery app whose worker (solo pool, cpu queue) runs in a thread; keys under a fresh prefix."""
    prefix = f"ptbot-test-{uuid.uuid4().hex}:"
    client = redis.Redis.from_url(redis_url)
    settings = Settings(redis_url=redis_url)
    runtime = WorkerRuntime(settings, ledger_factory=lambda: RedisLedger(client, prefix + "ledger:"))
    app = make_celery(settings, WorkerConfig(key_prefix=prefix), runtime)
    with start_worker(app, pool="solo", perform_ping_check=False, queues=["cpu"], shutdown_timeout=30,
                      loglevel="WARNING"):
        yield app
    for key in client.scan_iter(prefix + "*"):
        client.delete(key)


def _files(out: Path) -> dict[str, bytes]:
    """Every output file but the manifest (its ``run`` and ``out_dir`` differ by design)."""
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.is_file() and p.name != "manifest.json"}


def _counts(out: Path) -> dict:
    m = json.loads((out / "manifest.json").read_text())
    return {k: v for k, v in m.items() if k not in ("out_dir", "run")}


@pytest.mark.parametrize("mutations", [0, 2])
def test_queued_mining_equals_local_mining(history, tmp_path, cpu_worker, mutations):  # noqa: F811
    cfg = dict(repo=history.git_dir, mutations=mutations, fine_mutations=True, seed=3, shard_records=2)
    mine_repo(MineConfig(out=tmp_path / "local", **cfg))
    manifest = mine_on_queue(cpu_worker, [MineConfig(out=tmp_path / "queued", **cfg)], range_commits=4,
                             progress=False, timeout=120)
    assert manifest.complete and manifest.run["ranges"] == 4  # 15 commits in ranges of 4
    local, queued = _files(tmp_path / "local"), _files(tmp_path / "queued")
    assert sorted(queued) == sorted(local) and len([n for n in local if n.startswith("mined-")]) > 1
    assert queued == local  # shards, skipped.ndjson and commits.done, byte for byte
    assert _counts(tmp_path / "queued") == _counts(tmp_path / "local")
    assert not (tmp_path / "queued" / RANGES).exists()  # merged, then removed

    # An existing output needs --resume; resumed, the finished ranges are not mined again.
    with pytest.raises(ValueError, match="--resume"):
        mine_on_queue(cpu_worker, [MineConfig(out=tmp_path / "queued", **cfg)], progress=False, timeout=60)
    again = mine_on_queue(cpu_worker, [MineConfig(out=tmp_path / "queued", **cfg)], range_commits=4,
                          resume=True, progress=False, timeout=120)
    assert _files(tmp_path / "queued") == local and again.records == manifest.records


def test_several_repositories_are_merged_in_order_without_duplicates(history, tmp_path, cpu_worker):  # noqa: F811
    fork_dir = tmp_path / "fork"
    fork = git.Repo.clone_from(history.working_tree_dir, fork_dir)
    calc = (fork_dir / "calc.py").read_text()
    _commit(fork, {"calc.py": calc.replace("return lo\n", "return lo + 0\n", 1)}, "Add a no-op", 1_700_000_500)
    _commit(fork, {"calc.py": calc}, "Fix the no-op in clamp", 1_700_000_600)
    cfg = dict(mutations=1, seed=1)
    # Locally: one repository after the other into the same output (the second one resumed).
    mine_repo(MineConfig(repo=history.git_dir, out=tmp_path / "local", **cfg))
    mine_repo(MineConfig(repo=str(fork_dir), out=tmp_path / "local", resume=True, **cfg))
    m = mine_on_queue(cpu_worker, [MineConfig(repo=history.git_dir, out=tmp_path / "queued", **cfg),
                                   MineConfig(repo=str(fork_dir), out=tmp_path / "queued", **cfg)],
                      range_commits=6, progress=False, timeout=120)

    def records(out: Path) -> list[dict]:
        return [json.loads(x) for p in sorted(out.glob("mined-*.jsonl")) for x in p.read_text().splitlines()]

    queued = records(tmp_path / "queued")
    assert queued == records(tmp_path / "local")
    assert len({r["meta"]["content_hash"] for r in queued}) == len(queued)
    assert {r["meta"]["repo"] for r in queued} == {"proj", "fork"}  # the fork's own fix is kept
    assert m.run["repos"] == [history.git_dir, str(fork_dir)]
    local = _counts(tmp_path / "local")
    assert _counts(tmp_path / "queued") == local


def test_a_redelivered_range_rewrites_its_own_directory(history, tmp_path):  # noqa: F811
    (job, *_) = plan_ranges(MineConfig(repo=history.git_dir, out=tmp_path / "out", mutations=1), range_commits=5)
    again = plan_ranges(MineConfig(repo=history.git_dir, out=tmp_path / "out", mutations=1), range_commits=5)[0]
    assert again == job  # names are fixed by repository, settings and commits
    other = plan_ranges(MineConfig(repo=history.git_dir, out=tmp_path / "out", mutations=2), range_commits=5)[0]
    assert other.key != job.key
    first = mine_range(RangeJob.from_dict(json.loads(json.dumps(job.to_dict()))))  # as a task gets it
    assert first["status"] == "mined" and first["commits"] == 5
    content = _files(job.path())
    assert mine_range(job)["status"] == "already mined"
    # A delivery that died half-way leaves only a temporary directory; the next one replaces it.
    (job.path().parent / f".tmp-{job.dir_name}-dead").mkdir()
    shutil.rmtree(job.path())
    assert mine_range(job)["status"] == "mined"
    assert _files(job.path()) == content and len(content) == 3  # shard, skipped.ndjson, commits.done
    assert [p.name for p in job.path().parent.iterdir() if not p.name.startswith(".tmp")] == [job.dir_name]


def test_a_failing_range_is_reported_with_its_error(history, tmp_path, cpu_worker):  # noqa: F811
    repo = tmp_path / "moved"
    shutil.copytree(history.git_dir, repo)
    jobs = plan_ranges(MineConfig(repo=str(repo), out=tmp_path / "out"), range_commits=8)
    shutil.rmtree(repo)  # the workers cannot see the repository
    pieces = [Piece(j.to_dict(), j.done, j.failed_path(), j.dir_name) for j in jobs]
    failures = run_pieces(cpu_worker, MINE_RANGE_TASK, "cpu", pieces, desc="", progress=False, timeout=60)
    assert [label for label, _ in failures] == [j.dir_name for j in jobs]
    assert all("does not exist" in error for _, error in failures)


def test_cli_mine_repo_queue_options(tmp_path):
    runner = CliRunner()
    res = runner.invoke(cli, ["mine-repo", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "o")])
    assert res.exit_code != 0 and "several repositories need --queue" in res.output
    res = runner.invoke(cli, ["mine-repo", "a", "b", "--queue", "--name", "x", "--out", str(tmp_path / "o")])
    assert res.exit_code != 0 and "--name names one repository" in res.output
    res = runner.invoke(cli, ["mine-repo", "--help"])
    text = " ".join(res.output.split())
    assert "at the same path" in text and "--range-commits" in text


def test_scaleout_without_a_worker_times_out(history, tmp_path, redis_url):  # noqa: F811
    prefix = f"ptbot-test-{uuid.uuid4().hex}:"
    app = make_celery(Settings(redis_url=redis_url), WorkerConfig(key_prefix=prefix))
    try:
        with pytest.raises(ScaleOutError, match="still unfinished.*--training-only"):
            mine_on_queue(app, [MineConfig(repo=history.git_dir, out=tmp_path / "o")], progress=False,
                          timeout=0.5, poll=0.1)
    finally:
        client = redis.Redis.from_url(redis_url)
        for key in client.scan_iter(prefix + "*"):
            client.delete(key)
