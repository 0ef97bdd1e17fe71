"""directalign.secrets: where the key and the server come from, and what `redact` masks (and what it leaves)."""

from __future__ import annotations

import pytest

from directalign import secrets
from directalign.secrets import DEFAULT_BASE_URL, api_key, base_url, redact


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.setattr(secrets, "_SEEN_KEYS", set())


def test_explicit_then_environment_then_local_default(monkeypatch):
    assert (api_key(), base_url()) == ("EMPTY", DEFAULT_BASE_URL)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-the-environment-0000")
    monkeypatch.setenv("OPENAI_BASE_URL", "https://gateway.example/v1")
    assert (api_key(), base_url()) == ("sk-from-the-environment-0000", "https://gateway.example/v1")
    assert (api_key("explicit-key"), base_url("http://h:1/v1")) == ("explicit-key", "http://h:1/v1")
    assert (api_key(""), base_url("")) == ("sk-from-the-environment-0000", "https://gateway.example/v1")


@pytest.mark.parametrize(
    "text,expected",
    [
        ("https://user:pass@host/v1", "https://***@host/v1"),
        ("at http://alice:p@ss:w0rd@10.0.0.1:8000/v1 (refused)", "at http://***@10.0.0.1:8000/v1 (refused)"),
        ("https://token@host.example/v1", "https://***@host.example/v1"),
        ("https://host/v1?api_key=abc123&model=x", "https://host/v1?api_key=***&model=x"),
        ("https://host/v1?x=1&TOKEN=abc;key=def#frag", "https://host/v1?x=1&TOKEN=***;key=***#frag"),
        ("Authorization: Bearer abc.def-123, next", "Authorization: Bearer ***, next"),
        ("Incorrect key sk-proj-AbCdEf0123456789xyz given", "Incorrect key *** given"),
    ],
)
def test_credentials_are_masked(text, expected):
    assert redact(text) == expected


def test_ordinary_text_and_urls_are_left_alone():
    for text in ("http://localhost:8000/v1", "mail me at a@b.org", "openai:gpt-4o@2024-05-13", "EMPTY", "sk-short"):
        assert redact(text) == text


def test_known_keys_are_masked_anywhere_long_ones_only(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "env-secret-value-1")
    api_key("explicit-secret-2")
    api_key("short")  # too short to mask as a literal: it would also hit ordinary words
    text = "keys env-secret-value-1 and explicit-secret-2 and short"
    assert redact(text) == "keys *** and *** and short"


def test_nested_values_keep_their_shape():
    value = {"judge": "openai:m@https://u:p@h/v1", "scores": [1, 0.5], "urls": ("https://u:p@h",), "n": 3}
    assert redact(value) == {"judge": "openai:m@https://***@h/v1", "scores": [1, 0.5], "urls": ("https://***@h",),
                             "n": 3}
