"""Keeping secrets out of everything the connector writes.

One registry of secret values, fed by every configured secret as it is resolved
(:meth:`connector.settings.SecretRef.resolve`) and every token or credential as it
arrives from a token provider (:func:`register_token`). :func:`scrub` replaces each
value by ``***`` in every form it takes in text:

- raw;
- URL-encoded (``quote``, ``quote_plus``, upper- or lower-case hex): a form body
  echoed back by a server;
- JSON-escaped (with and without ``\\uXXXX`` for non-ASCII): the value inside a JSON
  string that is itself logged or stored;
- base64 at any alignment (standard and URL-safe alphabets): inside a Basic
  authorization header or any longer encoded blob.

It is applied at the boundaries, never trusted to callers: log records
(:mod:`connector.logs`), error messages as they are built
(:class:`connector.errors.ConnectorError`), the run report and the JSON report, the
state store's run errors and dead-letter messages, and the CLI's output.
"""

from __future__ import annotations

import base64
import json
import threading
from collections import OrderedDict
from typing import Any
from urllib.parse import quote, quote_plus

MASK = "***"
#: shorter values are too likely to occur by chance in ordinary text
MIN_LENGTH = 4
#: a base64 fragment shorter than this could match unrelated encoded text
MIN_BASE64_FRAGMENT = 8
#: the sandbox's fake client secret is public (written in config/sandbox.yaml); masking
#: it would turn every "sandbox-salesforce" into "***-salesforce"
PUBLIC_VALUES = frozenset({"sandbox"})
#: issued tokens remembered (the newest); an older one has long expired. Configured
#: secrets are all kept.
MAX_TOKENS = 64


def encoded_forms(value: str) -> set[str]:
    """Every form of ``value`` that :func:`scrub` looks for (``value`` itself included)."""
    forms = {value}
    for encoded in (quote(value, safe=""), quote(value), quote_plus(value)):
        forms.add(encoded)
        forms.add(_lower_hex(encoded))
    forms.add(json.dumps(value)[1:-1])
    forms.add(json.dumps(value, ensure_ascii=False)[1:-1])
    forms.update(_base64_fragments(value.encode("utf-8")))
    return {form for form in forms if len(form) >= MIN_LENGTH}


def _lower_hex(encoded: str) -> str:
    parts = encoded.split("%")
    return parts[0] + "".join("%" + p[:2].lower() + p[2:] for p in parts[1:])


def _base64_fragments(raw: bytes) -> set[str]:
    """The characters of base64(``prefix + raw + suffix``) that only ``raw`` decides.

    Base64 turns 3 bytes into 4 characters, so where the value starts inside a longer
    blob (0, 1 or 2 bytes into a group) changes its encoding; the characters that
    straddle a byte of the surroundings are left out.
    """
    fragments: set[str] = set()
    for shift in range(3):
        encoded = base64.b64encode(b"\0" * shift + raw).decode("ascii")
        start = -(-8 * shift // 6)  # the first character made of the value's bits only
        end = 8 * (shift + len(raw)) // 6  # the last one that holds no bit after it
        fragment = encoded[start:end]
        if len(fragment) >= MIN_BASE64_FRAGMENT:
            fragments.add(fragment)
            fragments.add(fragment.replace("+", "-").replace("/", "_"))
    return fragments


class SecretRegistry:
    """The values to mask, and their forms (longest first, so a form containing a
    shorter one is replaced whole). Thread-safe; :meth:`scrub` takes no lock."""

    def __init__(self, max_tokens: int = MAX_TOKENS) -> None:
        self._lock = threading.Lock()
        self._secrets: dict[str, None] = {}
        self._tokens: OrderedDict[str, None] = OrderedDict()
        self._max_tokens = max_tokens
        self._forms: tuple[str, ...] = ()

    def add_secret(self, value: str | None) -> None:
        if value is None or not self._acceptable(value) or value in self._secrets:
            return
        with self._lock:
            self._secrets[value] = None
            self._rebuild()

    def add_token(self, value: str | None) -> None:
        if value is None or not self._acceptable(value) or value in self._secrets:
            return
        with self._lock:
            if value in self._tokens:
                self._tokens.move_to_end(value)
                return
            self._tokens[value] = None
            while len(self._tokens) > self._max_tokens:
                self._tokens.popitem(last=False)
            self._rebuild()

    @staticmethod
    def _acceptable(value: str) -> bool:
        return len(value) >= MIN_LENGTH and value not in PUBLIC_VALUES

    def _rebuild(self) -> None:
        forms: set[str] = set()
        for value in (*self._secrets, *self._tokens):
            forms.update(encoded_forms(value))
        forms -= PUBLIC_VALUES
        self._forms = tuple(sorted(forms, key=len, reverse=True))

    def scrub(self, text: str) -> str:
        for form in self._forms:  # a snapshot: a concurrent registration swaps the tuple
            if form in text:
                text = text.replace(form, MASK)
        return text

    def __bool__(self) -> bool:
        return bool(self._forms)

    def clear(self) -> None:
        """Forget every value (tests that need a clean registry)."""
        with self._lock:
            self._secrets.clear()
            self._tokens.clear()
            self._forms = ()


#: the process's one registry: secrets are process-wide, like the log handlers that need them
REGISTRY = SecretRegistry()


def register_secret(*values: str | None) -> None:
    """A configured secret (client secret, access token given in the config)."""
    for value in values:
        REGISTRY.add_secret(value)


def register_token(*values: str | None) -> None:
    """A token or credential the process obtained (access, refresh, device code, assertion)."""
    for value in values:
        REGISTRY.add_token(value)


def scrub(text: str) -> str:
    """``text`` with every registered value, in every form, replaced by ``***``."""
    return REGISTRY.scrub(text) if REGISTRY else text


def scrub_data(data: Any) -> Any:
    """A copy of JSON-like ``data`` with :func:`scrub` applied to every string, keys included."""
    if not REGISTRY:
        return data
    if isinstance(data, str):
        return REGISTRY.scrub(data)
    if isinstance(data, dict):
        return {
            (REGISTRY.scrub(k) if isinstance(k, str) else k): scrub_data(v) for k, v in data.items()
        }
    if isinstance(data, (list, tuple)):
        return [scrub_data(item) for item in data]
    return data
