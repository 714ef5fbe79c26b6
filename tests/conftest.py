"""Fixtures shared across the test suite: real services on loopback, no network."""

from __future__ import annotations

import os
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
