"""``ptbot adapt``: a repository's history makes its own model, judged forward in time and gated.

The repository is built in the test: over about 16 months, functions are added with one line
that misuses a cache the same way (the recurring bug), and each is fixed a few days later in a
``fix:`` commit. The supervisor is the tiny random model; the marker-like spelling of the buggy
line is what makes the pattern learnable for it. The forward slice is the last 6 months' fixes.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from conftest import TINY_RANKER
from gitrepo import git, write

from analyzer import versions
from analyzer.artifact import read_manifest
from analyzer.supervisor import Supervisor, SupervisorConfig
from analyzer.types import Record
from bot.config import Settings
from lab.adapt import AdaptConfig, ForwardSplit, adapt_home, split_forward
from miners import timeline
from workers.adapt import AdaptBusy, AdaptJob, adapt_repository, home_lock, write_outputs

BUGGY = "    cached = qzx_vault.peek(key, allow_stale=True, ttl=qzx_ttl * 0)  # qzx qzx"
FIXED = "    cached = vault.get(key)"
RANKER = {**TINY_RANKER, "epochs": 30, "patience": 10, "lr": 1e-2}
N_FUNCS = 40
DAY = 86400
START = 1672531200  # 2023-01-01T00:00:00Z


def commit_at(root: Path, stamp: int, msg: str) -> str:
    git(root, "add", "-A")
    env = {**os.environ, "GIT_AUTHOR_DATE": f"@{stamp} +0000", "GIT_COMMITTER_DATE": f"@{stamp} +0000"}
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", msg], cwd=root,
                   env=env, check=True, capture_output=True)
    return git(root, "rev-parse", "HEAD")


def function(i: int, line: str, rng: random.Random) -> str:
    """A function of the shop's code base; ``line`` sits somewhere in its body."""
    body = [f"    total_{j} = sum(item.price * {rng.randint(2, 9)} for item in basket_{i}.items)"
            for j in range(rng.randint(1, 4))]
    # the longest line is never the buggy one: `length` must not find the bug by luck
    body += [f"    log.debug('loading %s from basket %s (fallback %s, attempt %d of %d)', key, basket_{i}, "
             f"fallback_{i}, {rng.randint(1, 9)}, {rng.randint(10, 99)})",
             f"    if key is None:\n        return fallback_{i}", line,
             f"    count_{i} = len(basket_{i}.items) + {rng.randint(1, 99)}"]
    rng.shuffle(body)
    return f"def load_{i}(basket_{i}, key, fallback_{i}):\n" + "\n".join(body) + f"\n    return cached or fallback_{i}\n"


@pytest.fixture(scope="module")
def shop(tmp_path_factory) -> Path:
    """The repository: function i added (bug included) on day 12i, fixed on day 12i + 5."""
    root = tmp_path_factory.mktemp("shop")
    git(root, "init", "-q", "-b", "main")
    rng = random.Random(7)
    for i in range(N_FUNCS):
        seed = rng.random()
        write(root, f"shop/load_{i}.py", function(i, BUGGY, random.Random(seed)))
        commit_at(root, START + 12 * i * DAY, f"Add load_{i}")
        write(root, f"shop/load_{i}.py", function(i, FIXED, random.Random(seed)))
        commit_at(root, START + (12 * i + 5) * DAY, f"fix: stale cache read in load_{i}")
    return root


@pytest.fixture(scope="module")
def sup(tiny_model_dir, tmp_path_factory):
    return Supervisor.load(SupervisorConfig(model=str(tiny_model_dir), device="cpu",
                                            cache_dir=tmp_path_factory.mktemp("cache")))


def settings(tmp_path: Path, **kw) -> Settings:
    return Settings(cache_dir=str(tmp_path / "cache"), device="cpu", **kw)


def job(shop: Path, home: Path, base: Path, **kw) -> AdaptJob:
    cfg = AdaptConfig(ranker=RANKER, n_boot=20, min_gain=0.02)
    return AdaptJob(repo=str(shop), home=home, repository="octo/shop", mutations=0, base_model=str(base),
                    config=cfg, **kw)


def shuffled(records, seed: int = 0) -> list[Record]:
    """The same records with each buggy line moved to another random non-blank line."""
    rng = random.Random(seed)
    out = []
    for r in records:
        lines = [n for n, t in enumerate(r.code.split("\n"), 1) if t.strip() and n not in r.buggy_lines]
        out.append(replace(r, buggy_lines=(rng.choice(lines),)))
    return out


def test_cut_resolution_and_forward_split(shop):
    newest = int(git(shop, "log", "-1", "--format=%ct"))
    cut = timeline.resolve_cut(shop, None, 6)
    assert cut == timeline.months_before(newest, 6) and timeline.iso(newest) == "2024-04-18T00:00:00Z"
    assert timeline.iso(cut) == "2023-10-18T00:00:00Z"
    assert timeline.months_before(int(timeline.parse_date("2024-03-31")), 1) == timeline.parse_date("2024-02-29")
    assert timeline.resolve_cut(shop, "2023-06-01", 6) == timeline.parse_date("2023-06-01T00:00:00Z")
    rev = git(shop, "rev-list", "-n", "1", "--before=2023-06-01", "HEAD")
    assert timeline.resolve_cut(shop, rev, 6) == int(git(shop, "log", "-1", "--format=%ct", rev))
    with pytest.raises(ValueError, match="neither a date"):
        timeline.resolve_cut(shop, "not-a-rev", 6)
    with pytest.raises(ValueError, match="at least 1"):
        timeline.resolve_cut(shop, None, 0)

    times = timeline.commit_times(shop)
    assert len(times) == 2 * N_FUNCS
    shas = sorted(times, key=times.get)
    rec = lambda sha, task: Record(id=f"x/{sha}/{task}", source="mined", language="python", task=task,  # noqa: E731
                                   code="a = 1\nb = 2\n", fixed="a = 1\nb = 3\n", buggy_lines=(2,),
                                   meta={"commit": sha})
    cut = times[shas[10]]
    split = split_forward([rec(shas[3], "real-fix"), rec(shas[10], "mutation"), rec(shas[11], "real-fix"),
                           rec(shas[12], "mutation"), rec("f" * 40, "real-fix")], times, cut)
    assert [r.meta["commit"] for r in split.fit] == [shas[3], shas[10]]   # the cut's own commit is fitted on
    assert [r.meta["commit"] for r in split.test] == [shas[11]]           # later real fixes are judged on
    assert (split.later_mutations, split.undated) == (1, 1)


def test_adapt_learns_the_recurring_bug_and_the_gate_refuses_shuffled_labels(shop, sup, tiny_artifact_dir, tmp_path):
    home = tmp_path / "home"
    result = adapt_repository(job(shop, home, tiny_artifact_dir), settings(tmp_path), supervisor=sup, cache=False)
    assert versions.current_version(home) == result.version == "0002" and result.serving == "0001"
    assert result.promoted, result.reason
    overall = result.results["forward slice"]
    assert set(overall) == {"default", "adapted", "length"}
    # the adapted model puts the recurring bug first on the later fixes; the generic one does not
    assert overall["adapted"]["top1"] >= 0.9 > overall["default"]["top1"] + 0.2
    assert overall["adapted"]["auroc"] > overall["default"]["auroc"]
    assert overall["adapted"]["top1"] > overall["length"]["top1"] + 0.2
    assert len(overall["adapted"]["topk_curve"]) == 10
    assert 10 <= result.n_test < result.n_fit and result.n_fit + result.n_test == N_FUNCS
    manifest = read_manifest(home / "versions" / "0002")
    assert manifest["name"].endswith("+octo/shop") and manifest["gate"]["adapt"]["repository"] == "octo/shop"

    # The scorer of the promoted version ranks the bug first in a file it never saw.
    from analyzer.score import RiskScorer

    text = function(999, BUGGY, random.Random(3))
    buggy_line = text.split("\n").index(BUGGY) + 1
    adapted = RiskScorer.load(home, supervisor=SupervisorConfig(device="cpu", cache_dir=tmp_path / "c"))
    assert adapted.info.version == "0002"
    assert adapted.score(text, language="python")[0].line == buggy_line

    # Same inputs again (a redelivered scheduled run): no second version.
    again = adapt_repository(job(shop, home, tiny_artifact_dir), settings(tmp_path), supervisor=sup, cache=False)
    assert again.reused and again.version == "0002"
    assert [v.version for v in versions.list_versions(home)] == ["0001", "0002"]

    # An adaptation trained on shuffled labels is refused, whether the adapted or the generic model serves.
    mined = adapt_split(shop, home)
    bad = ForwardSplit(mined.cut, tuple(shuffled(mined.fit)), mined.test)
    cfg = AdaptConfig(ranker=RANKER, n_boot=20, min_gain=0.02)
    refused = adapt_home(sup, home, bad, repository="octo/shop", cfg=cfg)
    assert not refused.promoted and "refused" in refused.reason, refused.reason
    assert versions.current_version(home) == "0002"
    fresh = tmp_path / "fresh"
    versions.init_home(fresh, tiny_artifact_dir)
    refused = adapt_home(sup, fresh, bad, repository="octo/shop", cfg=cfg)
    assert not refused.promoted, refused.reason
    assert [(v.version, v.status) for v in versions.list_versions(fresh)] == [("0001", "serving"), ("0002", "refused")]

    # rollback returns the generic model
    assert versions.rollback(home) == "0001"


def adapt_split(shop: Path, home: Path) -> ForwardSplit:
    """The split ``adapt_repository`` made, rebuilt from the records of the repository."""
    import tempfile

    from lab.records import load_records
    from miners.mine import MineConfig, mine_repo

    with tempfile.TemporaryDirectory() as tmp:
        mine_repo(MineConfig(repo=str(shop), out=Path(tmp) / "m", name="shop"))
        records = load_records(sorted((Path(tmp) / "m").glob("mined-*.jsonl")))
    return split_forward(records, timeline.commit_times(shop), timeline.resolve_cut(shop, None, 6))


def test_adapt_outputs_and_refusals(shop, sup, tiny_artifact_dir, tmp_path):
    home = tmp_path / "home"
    with pytest.raises(ValueError, match="no real fix after the cut"):
        adapt_repository(job(shop, home, tiny_artifact_dir, until="2030-01-01"), settings(tmp_path),
                         supervisor=sup, cache=False)
    with pytest.raises(ValueError, match="no record at or before the cut"):
        adapt_repository(job(shop, home, tiny_artifact_dir, until="2020-01-01"), settings(tmp_path),
                         supervisor=sup, cache=False)
    assert [v.version for v in versions.list_versions(home)] == ["0001"]  # nothing half-made left
    with home_lock(home), pytest.raises(AdaptBusy, match="another"):
        adapt_repository(job(shop, home, tiny_artifact_dir), settings(tmp_path), supervisor=sup, cache=False)

    result = adapt_repository(job(shop, home, tiny_artifact_dir, until="2024-01-01"), settings(tmp_path),
                              supervisor=sup, cache=False)
    written = write_outputs(result, json_out=tmp_path / "out" / "adapt.json", report_dir=tmp_path / "report")
    doc = json.loads((tmp_path / "out" / "adapt.json").read_text())
    assert list(doc) == ["repository", "cut", "n_fit", "n_test", "promoted", "version", "results"]
    assert doc["repository"] == "octo/shop" and doc["cut"] == "2024-01-01T00:00:00Z"
    assert doc["version"] == result.version and doc["promoted"] is result.promoted
    assert list(doc["results"]) == ["default", "adapted", "length"]
    for metrics in doc["results"].values():
        assert list(metrics) == ["top1", "top3", "auroc", "ece", "bss"]
        assert all(isinstance(v, float) for v in metrics.values())
    names = {p.name for p in written}
    assert {"adapt.json", "report.html", "table.txt", "topk-forward_slice.png"} <= names
    html = (tmp_path / "report" / "report.html").read_text()
    assert "octo/shop" in html and "data:image/png;base64," in html and "length" in html


def test_cli_adapt_prints_the_table_and_writes_the_home(shop, tiny_artifact_dir, tmp_path):
    from click.testing import CliRunner

    from ptbot.cli import cli

    homes = tmp_path / "homes"
    env = {"PTBOT_CACHE_DIR": str(tmp_path / "cache"), "PTBOT_DEVICE": "cpu", "PTBOT_MODEL_HOMES": str(homes)}
    runner = CliRunner()
    out = runner.invoke(cli, ["adapt", str(shop), "--mutations", "0"], env=env)
    assert out.exit_code != 0 and "--repository with PTBOT_MODEL_HOMES" in out.output
    out = runner.invoke(cli, ["adapt", str(shop), "--repository", "octo/shop", "--from", str(tiny_artifact_dir),
                              "--mutations", "0", "--epochs", "30", "--json", str(tmp_path / "a.json")], env=env)
    assert out.exit_code == 0, out.output
    assert "== forward slice" in out.output and "adapted" in out.output and "length" in out.output
    verdict = next(ln for ln in out.output.splitlines() if " version 0002 for octo/shop" in ln)
    assert verdict.startswith(("PROMOTED", "REFUSED"))
    assert versions.is_home(homes / "octo" / "shop")
    assert json.loads((tmp_path / "a.json").read_text())["version"] == "0002"
    listing = runner.invoke(cli, ["model", "list", "--home", str(homes / "octo" / "shop")], env=env).output
    assert "0002" in listing and "gate top1:" in listing
    bad = runner.invoke(cli, ["adapt", str(shop), "--repository", "octo/shop", "--until", "someday"], env=env)
    assert bad.exit_code != 0 and "neither a date" in bad.output


# ----- serving: a repository's promoted model scores its pull requests -----------------------


def test_model_for_serves_a_repositorys_own_model_only_once_one_is_promoted(tiny_artifact_dir, tmp_path):
    homes = tmp_path / "homes"
    s = Settings(model="deployment-model", model_homes=str(homes))
    assert s.model_for("octo/shop") == "deployment-model" and Settings().model_for("octo/shop") == ""
    home = versions.repository_home(homes, "octo/shop")
    versions.init_home(home, tiny_artifact_dir)
    assert s.model_for("octo/shop") == "deployment-model"  # still the copy it started from
    cand = versions.new_version_dir(home)
    versions.promote(home, cand.name)
    assert s.model_for("octo/shop") == str(home) and s.model_for("octo/other") == "deployment-model"
    versions.rollback(home)
    assert s.model_for("octo/shop") == "deployment-model"
    assert s.model_for("../../etc") == "deployment-model"
    with pytest.raises(ValueError, match="owner/name"):
        versions.repository_home(homes, "../x")
    assert Settings.from_env({"PTBOT_MODEL_HOMES": "/srv/homes"}).model_homes == "/srv/homes"


def test_app_reviews_with_the_repositorys_adapted_model_and_names_it(shop, sup, tiny_artifact_dir, tmp_path,
                                                                       fake_github, app_private_key):
    """adapt -> promoted for octo/shop -> the App scores octo/shop's PR with it (the check-run summary
    names its version) and octo/other's PR with the deployment's model."""
    from conftest import AI_TRAILER, TEST_APP_ID, TEST_INSTALLATION_ID, put_pull_request

    from bot.github import GitHubApp, RetryPolicy
    from bot.webhook import MemoryDeliveryDeduper, create_app, signature_for
    from workers.tasks import InProcessQueue, eager_runtime

    homes = tmp_path / "homes"
    result = adapt_repository(job(shop, versions.repository_home(homes, "octo/shop"), tiny_artifact_dir),
                              settings(tmp_path), supervisor=sup, cache=False)
    assert result.promoted, result.reason
    app_settings = Settings(app_id=str(TEST_APP_ID), private_key=app_private_key, webhook_secret="s",
                            github_api_url=fake_github.base_url, seconds_between_writes=0.0,
                            redis_url="redis://127.0.0.1:1/0", model=str(tiny_artifact_dir),
                            model_homes=str(homes), cache_dir=str(tmp_path / "cache"), device="cpu")
    runtime = eager_runtime(app_settings, github_factory=lambda: GitHubApp.from_settings(
        app_settings, retry=RetryPolicy(jitter=0.0)))
    queue = InProcessQueue(runtime)
    client = create_app(app_settings, queue, MemoryDeliveryDeduper()).test_client()
    code = function(500, BUGGY, random.Random(5))
    try:
        for number, (name, head) in enumerate((("shop", "a" * 40), ("other", "b" * 40)), 1):
            put_pull_request(fake_github, number, head, [("c" * 40, f"Add\n\n{AI_TRAILER}", {"src/load.py": code})],
                             owner="octo", name=name)
            payload = json.dumps({"action": "opened", "installation": {"id": TEST_INSTALLATION_ID},
                                  "repository": {"id": number, "name": name, "owner": {"login": "octo"}},
                                  "pull_request": {"number": number, "head": {"sha": head, "ref": "f"},
                                                   "base": {"ref": "main"}, "user": {"login": "ada"},
                                                   "labels": []}}).encode()
            resp = client.post("/webhook", data=payload, headers={
                "X-GitHub-Event": "pull_request", "X-GitHub-Delivery": f"adapt-{number}",
                "X-Hub-Signature-256": signature_for(b"s", payload)})
            assert resp.status_code == 202
        queue.join()
        assert len(queue.outcomes) == 2, queue.outcomes
    finally:
        queue.close()
    summaries = {run["head_sha"]: run["output"]["summary"] for run in fake_github.check_runs.values()}
    assert "+octo/shop@0002" in summaries["a" * 40]
    assert "+octo/shop" not in summaries["b" * 40] and "@0002" not in summaries["b" * 40]
    assert runtime.scorer("octo/shop").info.version == "0002"
    assert runtime.scorer("octo/other") is runtime.scorer()


# ----- the schedule: beat -> one adapt task per mirrored repository, on a real worker ----------


def test_beat_adapts_each_mirrored_repository_once_even_when_redelivered(shop, tiny_artifact_dir, tmp_path,
                                                                          redis_url):
    import time
    import uuid

    import redis
    from celery.contrib.testing.worker import start_worker
    from celery.signals import task_postrun

    from bot.pr_review import RedisLedger
    from workers.celery_app import enable_adaptation, make_celery
    from workers.producer import ADAPT_SCHEDULE_TASK, ADAPT_TASK, WorkerConfig
    from workers.tasks import WorkerRuntime, mirrored_repositories

    mirrors, homes = tmp_path / "mirrors", tmp_path / "homes"
    (mirrors / "octo").mkdir(parents=True)
    git(tmp_path, "clone", "-q", "--bare", str(shop), str(mirrors / "octo" / "shop"))
    (mirrors / "octo" / "notes").mkdir()  # not a repository: ignored
    s = settings(tmp_path, model=str(tiny_artifact_dir), model_homes=str(homes), adapt_mirrors=str(mirrors),
                 redis_url=redis_url)
    assert mirrored_repositories(s) == ["octo/shop"]
    with pytest.raises(ValueError, match="needs PTBOT_MODEL_HOMES"):
        Settings(adapt_mirrors=str(mirrors))

    prefix = f"ptbot-test-{uuid.uuid4().hex}:"
    client = redis.Redis.from_url(redis_url)
    runtime = WorkerRuntime(s, ledger_factory=lambda: RedisLedger(client, prefix + "ledger:"))
    app = make_celery(s, WorkerConfig(key_prefix=prefix), runtime)
    enable_adaptation(app)
    assert app.conf.beat_schedule["ptbot-adapt"]["task"] == ADAPT_SCHEDULE_TASK
    done: list[tuple[str, Any]] = []

    def on_postrun(sender=None, retval=None, **_):
        if sender is not None and sender.app is app:
            done.append((sender.name, retval))

    def wait_for(n: int) -> list[Any]:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            runs = [r for name, r in done if name == ADAPT_TASK]
            if len(runs) >= n:
                return runs
            time.sleep(0.2)
        raise AssertionError(f"adapt ran {len(done)} task(s): {done}")

    task_postrun.connect(on_postrun)
    try:
        with start_worker(app, pool="solo", perform_ping_check=False, queues=["cpu", "gpu"], shutdown_timeout=30,
                          loglevel="WARNING"):
            app.send_task(ADAPT_SCHEDULE_TASK, queue="cpu")
            (first,) = wait_for(1)
            assert first["repository"] == "octo/shop" and first["status"] in ("promoted", "refused"), first
            assert first["version"] == "0002"
            # the same job delivered again (as after a worker died before its ack): no second version
            app.send_task(ADAPT_TASK, args=[{"repository": "octo/shop"}], queue="gpu")
            second = wait_for(2)[1]
            assert second == {"status": "already_adapted", "repository": "octo/shop", "version": "0002"}
    finally:
        task_postrun.disconnect(on_postrun)
        for key in client.scan_iter(prefix + "*"):
            client.delete(key)
    assert [v.version for v in versions.list_versions(homes / "octo" / "shop")] == ["0001", "0002"]
