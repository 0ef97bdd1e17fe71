"""API keys and server URLs: where they come from, and `redact`, which keeps them out of messages and files.

An OpenAI-compatible backend or judge takes its key and base URL as the official `openai` client does: an
explicit value first, then the OPENAI_API_KEY and OPENAI_BASE_URL environment variables. Where the client would
then fall back to the hosted API (and fail without a key), ours falls back to a local server:
http://localhost:8000/v1 (vLLM's `serve`) with the placeholder key "EMPTY" that such servers accept.

`redact` removes what must not be printed or written: the user:password of a URL (https://user:pass@host/...),
the value of key-like query parameters (?api_key=..., &token=...), bearer tokens, sk-... keys and hf_... tokens,
the values of OPENAI_API_KEY and HF_TOKEN, and every key that passed through `api_key` or `remember_secret` in
this process (keys of 8 characters or more: a shorter literal would also mask ordinary words). Call it on every
message and every value written to a file that may hold a URL or a key (judge names, error messages, configs,
metrics), not on model text.
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any

DEFAULT_BASE_URL = "http://localhost:8000/v1"
NO_KEY = "EMPTY"  # what local OpenAI-compatible servers accept; not a secret
MASK = "***"
_MIN_LITERAL = 8

# scheme://userinfo@ : the greedy class runs to the last "@" before the path, so a raw "@" in a password is covered.
_URL_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)[^/\s?#]*@")
_KEY_PARAMETER = re.compile(
    r"(?P<name>[?&;](?:api[_-]?key|key|access[_-]?token|token|password|secret|auth)=)[^&;#\s]+", re.IGNORECASE
)
_BEARER = re.compile(r"(?P<name>\bBearer\s+)[^\s\"',]+", re.IGNORECASE)
_SK_KEY = re.compile(r"\bsk-[A-Za-z0-9_-]{16,}")
_HF_TOKEN = re.compile(r"\bhf_[A-Za-z0-9]{20,}")
_SEEN_KEYS: set[str] = set()


def api_key(explicit: str | None = None) -> str:
    """The key to send: `explicit`, else $OPENAI_API_KEY, else "EMPTY". It is remembered for `redact`."""
    key = explicit or os.environ.get("OPENAI_API_KEY") or NO_KEY
    if len(key) >= _MIN_LITERAL:
        _SEEN_KEYS.add(key)
    return key


def remember_secret(secret: str) -> None:
    """Mask `secret` (a Hub token, say) in everything `redact` sees from now on."""
    if len(secret) >= _MIN_LITERAL:
        _SEEN_KEYS.add(secret)


def base_url(explicit: str | None = None) -> str:
    """The server to call: `explicit`, else $OPENAI_BASE_URL, else http://localhost:8000/v1."""
    return explicit or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL


def redact(value: Any) -> Any:
    """`value` with credentials masked as "***": a string, or the strings inside dicts, lists and tuples (dict keys
    included); anything else is returned as it is."""
    if isinstance(value, str):
        return _redact_text(value)
    if isinstance(value, dict):
        return {redact(k): redact(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(redact(v) for v in value)
    return value


class RedactingFilter(logging.Filter):
    """A logging filter that passes every record on with its message redacted."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = redact(record.getMessage()), None
        return True


def redact_logs(*logger_names: str) -> None:
    """Redact what these loggers emit (httpx logs every request's full URL, credentials included, at INFO).

    A logger's filters see only the records made on that logger itself, not its children's: name each one.
    """
    for name in logger_names:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactingFilter) for f in logger.filters):
            logger.addFilter(RedactingFilter())


def _redact_text(text: str) -> str:
    # Literal keys first: a key can also sit inside a URL or after "Bearer", where the patterns would cut it short.
    keys = set(_SEEN_KEYS)
    for name in ("OPENAI_API_KEY", "HF_TOKEN"):
        env_key = os.environ.get(name, "")
        if len(env_key) >= _MIN_LITERAL:
            keys.add(env_key)
    for key in sorted(keys, key=len, reverse=True):
        text = text.replace(key, MASK)
    text = _URL_USERINFO.sub(lambda m: f"{m['scheme']}{MASK}@", text)
    text = _KEY_PARAMETER.sub(lambda m: f"{m['name']}{MASK}", text)
    text = _BEARER.sub(lambda m: f"{m['name']}{MASK}", text)
    text = _HF_TOKEN.sub(MASK, text)
    return _SK_KEY.sub(MASK, text)
