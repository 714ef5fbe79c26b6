"""bot.config: Settings.from_env and .ptbot.toml parsing, with their error messages."""

from __future__ import annotations

from dataclasses import replace

import pytest

from bot.config import RepoConfig, Settings

PEM = "-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n"


def test_defaults_from_empty_environment(tmp_path):
    s = Settings.from_env({"PTBOT_CACHE_DIR": str(tmp_path)})
    assert s.github_api_url == "https://api.github.com"
    assert s.redis_url == "redis://127.0.0.1:6379/0"
    assert s.database_url == f"sqlite:///{tmp_path}/ptbot.db"
    assert s.model == "" and s.device == "auto" and s.seconds_between_writes == 1.0
    assert s.repo_defaults == RepoConfig()
    with pytest.raises(ValueError, match="PTBOT_APP_ID"):
        s.require_app()


def test_every_variable_is_read(tmp_path):
    env = {
        "PTBOT_APP_ID": "12345", "PTBOT_PRIVATE_KEY": PEM.replace("\n", "\\n"),
        "PTBOT_WEBHOOK_SECRET": "s3cret", "PTBOT_GITHUB_API_URL": "https://ghe.example.com/api/v3/",
        "PTBOT_REDIS_URL": "redis://cache:6379/2", "PTBOT_DATABASE_URL": "postgresql+psycopg://db/ptbot",
        "PTBOT_MODEL": "/models/ptbot-v1", "PTBOT_CACHE_DIR": str(tmp_path), "PTBOT_DEVICE": "cuda:1",
        "PTBOT_SECONDS_BETWEEN_WRITES": "0", "PTBOT_REVIEW_DRAFTS": "yes",
        "PTBOT_MODE": "all", "PTBOT_TOP_K": "3", "PTBOT_MIN_PROBABILITY": "0.7",
        "PTBOT_PER_FILE_CAP": "2", "PTBOT_AI_LABELS": "bot-pr, ai", "HOME": "/ignored",
        "PTBOT_LINES_PER_COMMENT": "10", "PTBOT_MIN_LIFT": "2.5", "PTBOT_BASE_RATE_PRIOR": "0.05",
        "PTBOT_BASE_RATE_PRIOR_LINES": "0",
    }
    s = Settings.from_env(env)
    assert s.app_id == "12345" and s.private_key == PEM  # literal \n turned into newlines
    assert s.github_api_url == "https://ghe.example.com/api/v3"
    assert (s.redis_url, s.database_url, s.model, s.device) == (
        "redis://cache:6379/2", "postgresql+psycopg://db/ptbot", "/models/ptbot-v1", "cuda:1")
    assert s.seconds_between_writes == 0.0 and s.review_drafts is True
    assert s.repo_defaults == RepoConfig(mode="all", top_k=3, min_probability=0.7, per_file_cap=2,
                                         ai_labels=("bot-pr", "ai"), lines_per_comment=10, min_lift=2.5,
                                         base_rate_prior=0.05, base_rate_prior_lines=0)
    s.require_app()


def test_secrets_stay_out_of_repr():
    s = Settings.from_env({"PTBOT_WEBHOOK_SECRET": "hunter2", "PTBOT_PRIVATE_KEY": PEM})
    assert "hunter2" not in repr(s) and "BEGIN" not in repr(s)


def test_private_key_file(tmp_path):
    key = tmp_path / "app.pem"
    key.write_text(PEM)
    assert Settings.from_env({"PTBOT_PRIVATE_KEY_FILE": str(key)}).private_key == PEM
    with pytest.raises(ValueError, match="cannot be read"):
        Settings.from_env({"PTBOT_PRIVATE_KEY_FILE": str(tmp_path / "missing.pem")})
    with pytest.raises(ValueError, match="not both"):
        Settings.from_env({"PTBOT_PRIVATE_KEY_FILE": str(key), "PTBOT_PRIVATE_KEY": PEM})


@pytest.mark.parametrize("env, message", [
    ({"PTBOT_APP_ID": "my-app"}, "numeric GitHub App id"),
    ({"PTBOT_PRIVATE_KEY": "not a key"}, "PEM private key"),
    ({"PTBOT_GITHUB_API_URL": "api.github.com"}, "http"),
    ({"PTBOT_REDIS_URL": "localhost:6379"}, "redis://"),
    ({"PTBOT_DEVICE": "tpu"}, "PTBOT_DEVICE"),
    ({"PTBOT_TOP_K": "five"}, "PTBOT_TOP_K must be an integer"),
    ({"PTBOT_MODE": "some"}, "mode must be one of"),
    ({"PTBOT_REVIEW_DRAFTS": "maybe"}, "true or false"),
])
def test_bad_environment_is_refused_with_a_clear_message(env, message):
    with pytest.raises(ValueError, match=message):
        Settings.from_env(env)


def test_repo_config_from_toml_over_defaults():
    defaults = RepoConfig(top_k=4)
    cfg = RepoConfig.from_toml(
        'mode = "all"\nmin_probability = 0.8\ninclude = ["src/*"]\nexclude = "src/gen/*"\n'
        'languages = ["python", "go"]\nai_labels = ["agent"]\nreview_drafts = true\n', defaults)
    assert cfg == replace(defaults, mode="all", min_probability=0.8, include=("src/*",),
                          exclude=("src/gen/*",), languages=("python", "go"),
                          ai_labels=("agent",), review_drafts=True)
    assert RepoConfig.from_toml("[ptbot]\ntop_k = 2\n").top_k == 2
    assert RepoConfig.from_toml("") == RepoConfig()


def test_repo_config_path_filter():
    cfg = RepoConfig(include=("src/*",), exclude=("src/vendor/*",), languages=("python",))
    assert cfg.wants_path("src/app/main.py")
    assert not cfg.wants_path("src/vendor/lib.py")
    assert not cfg.wants_path("docs/conf.py")
    assert not cfg.wants_path("src/app/main.go")
    assert not RepoConfig().wants_path("README.md")  # no known language


@pytest.mark.parametrize("text, message", [
    ("top_k = ", "not valid TOML"),
    ("topk = 3", "unknown key.*topk.*known keys"),
    ("mode = 'everything'", "mode must be one of"),
    ("top_k = 500", "top_k must be an integer from 0 to 50"),
    ("top_k = true", "top_k must be an integer"),
    ("min_probability = 1.5", "min_probability must be a number from 0 to 1"),
    ("per_file_cap = 0", "per_file_cap must be a positive integer"),
    ("lines_per_comment = 0", "lines_per_comment must be a positive integer"),
    ("lines_per_comment = 2.5", "lines_per_comment must be a positive integer"),
    ("min_lift = -1", "min_lift must be a number from 0"),
    ("min_lift = 'high'", "min_lift must be a number from 0"),
    ("base_rate_prior = 2", "base_rate_prior must be a number from 0 to 1"),
    ("base_rate_prior_lines = -1", "base_rate_prior_lines must be an integer >= 0"),
    ("languages = ['cobol']", "unknown language"),
    ("exclude = 3", "exclude must be a list of strings"),
    ("review_drafts = 'yes'", "review_drafts must be true or false"),
])
def test_bad_repo_config_is_refused_with_a_clear_message(text, message):
    with pytest.raises(ValueError, match=message) as e:
        RepoConfig.from_toml(text)
    assert ".ptbot.toml" in str(e.value)
