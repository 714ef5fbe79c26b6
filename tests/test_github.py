"""bot.github through PyGithub over real HTTP to the fake GitHub server (tests/fake_github.py)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest
from conftest import TEST_APP_ID, TEST_INSTALLATION_ID, app_on
from fake_github import FakeCommit, FakeFile, FakeGitHub, FakePull, hunk_anchors, read_replay, REPLAY_DIR
from github import GithubException

from bot.config import Settings
from bot.github import (
    MAX_REVIEW_BODY_CHARS,
    GitHubApp,
    ReviewComment,
    RetryPolicy,
    anchor_error,
    marker_fingerprints,
    retry_delay,
    review_body_with_moved,
)

HEAD = "a" * 40
# A modified file: lines 10-17 on the new side, with 12 and 13 added.
APP_PATCH = ("@@ -10,6 +10,8 @@ def handler(event):\n"
             "     data = load(event)\n"
             "     if not data:\n"
             "-        return None\n"
             "+        log.warning(\"empty event\")\n"
             "+        return {}\n"
             "     for item in data:\n"
             "         process(item)\n"
             "+    flush()\n"
             "     return data")
NEW_PATCH = "@@ -0,0 +1,3 @@\n+def helper(x):\n+    y = x * 2\n+    return y"
RENAMED_PATCH = "@@ -1,2 +1,2 @@\n import os\n-A = 1\n+A = 2"
APP_TEXT = "\n".join(f"line {i}" for i in range(1, 18)) + "\n"


@pytest.fixture
def pr(fake_github: FakeGitHub):
    fake_github.add_repo("octo", "shop")
    pull = fake_github.add_pull("octo", "shop", FakePull(
        number=7, head_sha=HEAD, head_ref="claude/fix-handler", labels=["ai-generated"], author="ada",
        files=[FakeFile("src/app.py", APP_PATCH),
               FakeFile("src/helper.py", NEW_PATCH, status="added"),
               FakeFile("src/new_name.py", RENAMED_PATCH, status="renamed", previous_filename="src/old_name.py"),
               FakeFile("docs/logo.png", None, status="added"),
               FakeFile("src/moved.py", None, status="renamed", previous_filename="src/was.py"),
               FakeFile("src/gone.py", "@@ -1,2 +0,0 @@\n-a = 1\n-b = 2", status="removed")],
        commits=[FakeCommit("b" * 40, "Add helper", files=[FakeFile("src/helper.py", NEW_PATCH, status="added")]),
                 FakeCommit("c" * 40, "Fix handler\n\nCo-Authored-By: Claude <noreply@anthropic.com>",
                            author_name="Ada", author_email="ada@example.com", author_login="ada",
                            files=[FakeFile("src/app.py", APP_PATCH)])]))
    fake_github.repos["octo/shop"].contents[(HEAD, "src/app.py")] = APP_TEXT
    return pull


@pytest.fixture
def app(fake_github, app_private_key):
    return app_on(fake_github, app_private_key, max_attempts=4, backoff_base=0.2)


@pytest.fixture
def api(app, pr):
    return app.pull_request(TEST_INSTALLATION_ID, "octo", "shop", 7)


def test_replay_files_parse():
    exchanges = read_replay(REPLAY_DIR / "GithubIntegration.testGetAccessToken.txt")
    assert [e.verb for e in exchanges] == ["POST"] * 3
    assert exchanges[0].path == "/app/installations/30614431/access_tokens" and exchanges[0].status == 201
    assert json.loads(exchanges[0].response_body)["token"].startswith("ghs_")


def test_installation_token_from_a_verified_jwt(api, fake_github):
    assert api.head_sha == HEAD
    (mint,) = fake_github.requests_to("POST", r"^/app/installations/\d+/access_tokens$")
    assert mint.path == f"/app/installations/{TEST_INSTALLATION_ID}/access_tokens" and mint.status == 201
    assert mint.headers["Authorization"].startswith("Bearer ")
    (get_pr,) = fake_github.requests_to("GET", r"^/repos/octo/shop/pulls/7$")
    assert get_pr.headers["Authorization"].startswith("token ghs_fake")


def test_a_jwt_signed_with_another_key_is_refused(fake_github, pr):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    other = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    app = GitHubApp(str(TEST_APP_ID), other, fake_github.base_url, seconds_between_writes=0,
                    retry=RetryPolicy(max_attempts=1))
    with pytest.raises(GithubException) as e:
        app.pull_request(TEST_INSTALLATION_ID, "octo", "shop", 7).pull()
    assert e.value.status == 401


def test_files_become_file_diffs(api):
    files = {f.path: f for f in api.files()}
    app = files["src/app.py"]
    assert (app.status, app.old_path, app.new_path) == ("modified", "src/app.py", "src/app.py")
    assert app.added_linenos() == [12, 13, 16]
    assert app.hunks[0].new_linenos() == list(range(10, 18))
    assert files["src/helper.py"].status == "added" and files["src/helper.py"].old_path is None
    assert files["src/helper.py"].added_linenos() == [1, 2, 3]
    renamed = files["src/new_name.py"]
    assert (renamed.status, renamed.old_path) == ("renamed", "src/old_name.py") and renamed.added_linenos() == [2]
    assert files["docs/logo.png"].is_binary and files["docs/logo.png"].hunks == ()
    moved = files["src/moved.py"]  # a pure rename has no patch but is not binary
    assert (moved.status, moved.old_path, moved.is_binary, moved.hunks) == ("renamed", "src/was.py", False, ())
    assert files["src/gone.py"].status == "deleted" and files["src/gone.py"].new_path is None


def test_file_text_and_commits(api):
    assert api.file_text("src/app.py", HEAD) == APP_TEXT
    commits = api.commits()
    assert [c.sha for c in commits] == ["b" * 40, "c" * 40]
    assert commits[1].message.endswith("<noreply@anthropic.com>")
    assert (commits[1].author.name, commits[1].author.email, commits[1].author.login) == (
        "Ada", "ada@example.com", "ada")
    assert commits[1].files[0].path == "src/app.py" and commits[1].files[0].added_linenos() == [12, 13, 16]


def test_each_commit_is_fetched_once_and_through_the_retries(api, fake_github):
    """A listed commit is never fetched behind the retry path (PyGithub's ``raw_data`` would)."""
    fake_github.fail_next("GET", r"/commits/b{40}$", 502)
    commits = api.commits()
    assert [c.files[0].path for c in commits] == ["src/helper.py", "src/app.py"]
    assert [r.status for r in fake_github.requests_to("GET", r"/commits/b{40}$")] == [502, 200]
    assert [r.status for r in fake_github.requests_to("GET", r"/commits/c{40}$")] == [200]
    assert len(fake_github.requests_to("GET", r"/pulls/7/commits$")) == 1
    assert [c.sha for c in api.commits(with_files=False)] == ["b" * 40, "c" * 40]
    assert len(fake_github.requests_to("GET", r"/commits/[bc]{40}$")) == 3  # no more per-commit reads


def test_anchor_validation_against_hunks(api):
    files = api.files()
    assert anchor_error(files, ReviewComment("src/app.py", 12, "x")) is None
    assert anchor_error(files, ReviewComment("src/app.py", 10, "x")) is None  # context lines anchor too
    assert "part of the diff" in anchor_error(files, ReviewComment("src/app.py", 40, "x"))
    assert "not part of the diff" in anchor_error(files, ReviewComment("README.md", 1, "x"))
    assert anchor_error(files, ReviewComment("src/app.py", 13, "x", start_line=11)) is None


def test_post_review_with_inline_comments(api, fake_github):
    body = "Summary <!-- ptbot:model=v1 sha=" + HEAD + " -->"
    comments = [ReviewComment("src/app.py", 12, "risky <!-- ptbot:fp=00000000000000aa -->"),
                ReviewComment("src/helper.py", 2, "risky <!-- ptbot:fp=00000000000000bb -->", start_line=1)]
    posted = api.post_review(body, comments)
    (review,) = fake_github.reviews
    assert posted.review_id == review["id"] and posted.moved_to_body == ()
    assert review["state"] == "COMMENTED" and review["commit_id"] == HEAD
    (post,) = fake_github.requests_to("POST", r"/pulls/7/reviews$")
    assert post.body["event"] == "COMMENT" and post.body["commit_id"] == HEAD
    assert post.body["comments"][1] == {"path": "src/helper.py", "line": 2, "side": "RIGHT", "start_line": 1,
                                        "start_side": "RIGHT", "body": comments[1].body}
    assert api.posted_fingerprints() == {"00000000000000aa", "00000000000000bb"}


def test_one_bad_anchor_fails_the_whole_review_on_the_fake(fake_github, pr, api):
    api.head_sha  # mint a token
    token = next(iter(fake_github.tokens))
    data = json.dumps({"event": "COMMENT", "body": "b", "comments": [
        {"path": "src/app.py", "line": 12, "body": "ok"},
        {"path": "src/app.py", "line": 3, "body": "outside"}]}).encode()
    req = urllib.request.Request(f"{fake_github.base_url}/repos/octo/shop/pulls/7/reviews", data=data,
                                 method="POST", headers={"Authorization": f"token {token}"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=5)
    assert e.value.code == 422
    assert json.loads(e.value.read())["errors"] == ["Pull request review thread line must be part of the diff"]
    assert fake_github.reviews == [] and fake_github.review_comments == []


def test_anchor_outside_the_diff_goes_to_the_body_without_a_422(api, fake_github):
    posted = api.post_review("Summary", [ReviewComment("src/app.py", 12, "in diff"),
                                         ReviewComment("src/app.py", 3, "outside <!-- ptbot:fp=00000000000000cc -->")])
    assert [c.line for c in posted.inline] == [12] and [c.line for c in posted.moved_to_body] == [3]
    assert len(fake_github.requests_to("POST", r"/pulls/7/reviews$")) == 1
    (review,) = fake_github.reviews
    assert "`src/app.py` line 3" in review["body"] and "outside" in review["body"]
    assert "00000000000000cc" in api.posted_fingerprints()  # not posted again next time


def test_422_after_a_push_drops_the_bad_anchor_and_retries_once(api, fake_github, pr):
    api.files()  # the pipeline read the diff...
    # ...then a push changed it: line 16 is no longer part of any hunk.
    pr.files[0] = FakeFile("src/app.py", "@@ -10,3 +10,4 @@\n     data = load(event)\n     if not data:\n"
                                         "-        return None\n+        log.warning(\"empty\")\n+        return {}")
    posted = api.post_review("Summary", [ReviewComment("src/app.py", 12, "still valid"),
                                         ReviewComment("src/app.py", 16, "now outside")])
    statuses = [r.status for r in fake_github.requests_to("POST", r"/pulls/7/reviews$")]
    assert statuses == [422, 200]
    assert [c.line for c in posted.inline] == [12] and [c.line for c in posted.moved_to_body] == [16]
    (review,) = fake_github.reviews
    assert [c["line"] for c in fake_github.review_comments] == [12]
    assert "now outside" in review["body"]


def test_a_review_body_with_every_finding_moved_stays_under_githubs_limit(api, fake_github):
    """A summary near the renderer's cap, then a 422 that the fresh diff does not explain: every
    comment moves into the body, which must still fit GitHub's 65,536 characters."""
    body = "<!-- ptbot:fp=00000000000000ff -->\n" + "s" * 59_950
    comments = [ReviewComment("src/app.py", 12 if i % 2 else 13,
                              f"finding {i} " + "x" * 900 + f" <!-- ptbot:fp={i:016x} -->") for i in range(40)]
    fake_github.fail_next("POST", r"/pulls/7/reviews$", 422)
    posted = api.post_review(body, comments)
    assert [r.status for r in fake_github.requests_to("POST", r"/pulls/7/reviews$")] == [422, 200]
    (review,) = fake_github.reviews
    assert posted.inline == () and len(posted.moved_to_body) == 40
    assert MAX_REVIEW_BODY_CHARS - 1_000 < len(review["body"]) <= MAX_REVIEW_BODY_CHARS
    assert review["body"].startswith(body) and "**Findings that could not be anchored in the diff**" in review["body"]
    shown = marker_fingerprints(review["body"]) - {"00000000000000ff"}
    assert shown == {f"{i:016x}" for i in range(len(shown))} and 0 < len(shown) < 40
    assert f"_{40 - len(shown)} more findings that could not be anchored in the diff were left out" in review["body"]


@pytest.mark.parametrize("body_chars, moved, kept", [
    (100, 3, 3),        # everything fits
    (65_000, 3, 0),     # no room for any finding: only the note that counts them
    (70_000, 2, 0),     # the summary alone is too long: cut, the note still fits
    (70_000, 0, 0),
    (64_000, 200, 1),
])
def test_review_body_with_moved_never_exceeds_the_limit(body_chars, moved, kept):
    body = "<!-- ptbot:fp=0000000000000001 -->" + "b" * body_chars
    comments = [ReviewComment("a.py", i + 1, "y" * 700) for i in range(moved)]
    out = review_body_with_moved(body, comments)
    assert len(out) <= MAX_REVIEW_BODY_CHARS and out.startswith("<!-- ptbot:fp=0000000000000001 -->")
    assert out.count("y" * 700) == kept
    if moved > kept:
        assert f"{moved - kept} more finding" in out
    if len(body) > MAX_REVIEW_BODY_CHARS:
        assert "summary cut to fit" in out


def test_secondary_rate_limit_backoff_is_honoured(api, fake_github):
    api.files()
    fake_github.secondary_rate_limit_next("POST", r"/pulls/7/reviews$", retry_after=1)
    api.post_review("Summary", [ReviewComment("src/app.py", 12, "x")])
    first, second = fake_github.requests_to("POST", r"/pulls/7/reviews$")
    assert (first.status, second.status) == (403, 200)
    assert second.at - first.at >= 1.0  # waited the retry-after
    assert len(fake_github.reviews) == 1


def test_rate_limit_exhaustion_gives_up_after_the_bounded_attempts(api, fake_github):
    fake_github.fail_next("GET", r"/pulls/7$", 403, {"retry-after": "0"},
                          {"message": "You have exceeded a secondary rate limit."}, times=10)
    with pytest.raises(GithubException) as e:
        api.pull()
    assert e.value.status == 403
    assert len(fake_github.requests_to("GET", r"/pulls/7$")) == 4  # RetryPolicy(max_attempts=4)


def test_server_errors_are_retried_but_permission_errors_are_not(api, fake_github):
    fake_github.fail_next("GET", r"/pulls/7$", 502, times=2)
    assert api.head_sha == HEAD
    fake_github.fail_next("GET", r"/contents/", 403, body={"message": "Resource not accessible by integration"})
    with pytest.raises(GithubException):
        api.file_text("src/app.py", HEAD)
    assert len(fake_github.requests_to("GET", r"/contents/")) == 1


def test_writes_of_one_installation_are_spaced(fake_github, app_private_key, pr):
    app = GitHubApp(str(TEST_APP_ID), app_private_key, fake_github.base_url, seconds_between_writes=0.5)
    api = app.pull_request(TEST_INSTALLATION_ID, "octo", "shop", 7)
    for _ in range(3):
        api.create_check_run(summary="s", title="t")
    times = [r.at for r in fake_github.requests_to("POST", r"/check-runs$")]
    assert len(times) == 3 and all(b - a >= 0.45 for a, b in zip(times, times[1:]))


def test_check_run(api, fake_github):
    run_id = api.create_check_run(title="ptbot: 3 risky lines", summary="scored 10 of 12", external_id="k1")
    run = fake_github.check_runs[run_id]
    assert (run["status"], run["conclusion"], run["head_sha"], run["external_id"]) == (
        "completed", "neutral", HEAD, "k1")
    assert run["output"]["summary"] == "scored 10 of 12"


def test_check_run_in_progress_then_completed(api, fake_github):
    run_id = api.create_check_run(status="in_progress", conclusion=None)
    assert fake_github.check_runs[run_id]["status"] == "in_progress"
    assert fake_github.check_runs[run_id]["conclusion"] is None
    api.update_check_run(run_id, status="completed", conclusion="neutral", title="t", summary="done")
    run = fake_github.check_runs[run_id]
    assert (run["status"], run["conclusion"], run["output"]["summary"]) == ("completed", "neutral", "done")
    assert [r.method for r in fake_github.requests if "/check-runs" in r.path] == ["POST", "PATCH"]


def test_review_comments_use_conditional_requests(api, fake_github):
    api.post_review("S", [ReviewComment("src/app.py", 12, "x <!-- ptbot:fp=00000000000000dd -->")])
    first = api.review_comments()
    second = api.review_comments()
    assert first == second and len(first) == 1
    gets = fake_github.requests_to("GET", r"/pulls/7/comments$")
    assert [g.status for g in gets] == [200, 304]
    assert "If-None-Match" not in gets[0].headers and gets[1].headers["If-None-Match"].startswith('"')


def test_human_comments_with_markers_do_not_count(api, fake_github):
    api.post_review("S", [ReviewComment("src/app.py", 12, "x <!-- ptbot:fp=00000000000000ee -->")])
    fake_github.review_comments[0]["user"].update(login="mallory", type="User")
    assert api.posted_fingerprints() == set()


def test_markers_forged_by_another_bot_do_not_count(api, fake_github):
    """Only this App's own login (``GET /app`` slug + ``[bot]``) vouches for a marker: another
    App's bot posting ptbot's markers cannot silence ptbot's findings."""
    api.post_review("S <!-- ptbot:fp=00000000000000f1 -->",
                    [ReviewComment("src/app.py", 12, "x <!-- ptbot:fp=00000000000000f2 -->")])
    api.post_review("S <!-- ptbot:fp=00000000000000f3 -->",
                    [ReviewComment("src/app.py", 13, "x <!-- ptbot:fp=00000000000000f4 -->")])
    assert api.bot_login() == "ptbot-test[bot]"
    forged = {"login": "other-app[bot]", "type": "Bot"}
    fake_github.reviews[1]["user"] = dict(fake_github.reviews[1]["user"], **forged)
    fake_github.review_comments[1]["user"] = dict(fake_github.review_comments[1]["user"], **forged)
    assert api.posted_fingerprints() == {"00000000000000f1", "00000000000000f2"}
    # Logins are case-insensitive on GitHub.
    fake_github.reviews[0]["user"]["login"] = "PTBot-Test[bot]"
    assert "00000000000000f1" in api.posted_fingerprints()


@pytest.mark.parametrize("status, headers, message, attempt, expected", [
    (403, {"Retry-After": "30"}, "secondary rate limit", 0, 30.0),
    (429, {"retry-after": "5"}, "", 2, 5.0),
    (403, {"x-ratelimit-remaining": "0", "x-ratelimit-reset": "1100"}, "API rate limit exceeded", 0, 101.0),
    (403, {}, "You have exceeded a secondary rate limit", 0, 60.0),
    (403, {}, "You have exceeded a secondary rate limit", 2, 240.0),
    (403, {}, "You have exceeded a secondary rate limit", 3, 300.0),  # capped at max_delay
    (403, {}, "Resource not accessible by integration", 0, None),
    (502, {}, "", 1, 4.0),
    (404, {}, "Not Found", 0, None),
    (403, {"retry-after": "1"}, "", 9, None),  # out of attempts
])
def test_retry_delay(status, headers, message, attempt, expected):
    policy = RetryPolicy(max_attempts=10, backoff_base=60, server_error_base=2, max_delay=300, jitter=0.5)
    assert retry_delay(status, headers, message, attempt, policy, now=1000.0, rand=0.0) == expected


def test_retry_delay_jitter_is_bounded():
    policy = RetryPolicy(jitter=0.1, max_delay=900)
    assert retry_delay(403, {"retry-after": "10"}, "", 0, policy, 0.0, 0.999) == pytest.approx(10.999, abs=1e-3)


def test_marker_fingerprints():
    body = "x <!-- ptbot:fp=abc123 model=v1 --> y <!--ptbot:fp=def456-->"
    assert marker_fingerprints(body) == {"abc123", "def456"}
    assert marker_fingerprints("no marker") == set()


def test_fake_hunk_anchors():
    right, left = hunk_anchors(APP_PATCH)[0]
    assert right == set(range(10, 18)) and left == set(range(10, 16))


def test_repo_config_comes_from_the_default_branch(api, fake_github):
    defaults = Settings().repo_defaults
    assert api.repo_config(defaults) == defaults  # no file: the defaults
    repo = fake_github.repos["octo/shop"]
    repo.contents[(HEAD, ".ptbot.toml")] = "top_k = 0\n"  # the PR's own copy is ignored
    repo.contents[("main", ".ptbot.toml")] = "top_k = 2\nmode = 'all'\n"
    cfg = api.repo_config(defaults)
    assert (cfg.top_k, cfg.mode) == (2, "all")
    repo.contents[("main", ".ptbot.toml")] = "topk = 2\n"
    with pytest.raises(ValueError, match="unknown key"):
        api.repo_config(defaults)


def test_line_provenance(api, fake_github, pr):
    prov = api.line_provenance(ai_labels=())
    # The head branch is claude/...: every added line is AI, whichever commit wrote it.
    assert {k for k, v in prov.items() if v.is_ai} == set(prov)
    assert prov[("src/app.py", 12)].commit == "c" * 40
    assert prov[("src/helper.py", 1)].commit == "b" * 40

    pr.head_ref, pr.labels = "fix-handler", []
    api.pull(refresh=True)
    prov = api.line_provenance(ai_labels=())
    assert prov[("src/app.py", 12)].is_ai and "noreply@anthropic.com" in prov[("src/app.py", 12)].reason
    assert not prov[("src/helper.py", 1)].is_ai  # the human commit


def test_writes_are_not_retried_after_a_server_error(api, fake_github):
    api.files()
    fake_github.fail_next("POST", r"/pulls/7/reviews$", 502)
    with pytest.raises(GithubException) as e:
        api.post_review("S", [ReviewComment("src/app.py", 12, "x")])
    assert e.value.status == 502 and len(fake_github.requests_to("POST", r"/pulls/7/reviews$")) == 1
