"""Credentials in URLs, and messages of bounded length: what may be shown, written or stored.

A URL may carry credentials: userinfo (``http://user:PASSWORD@host/v1``) or a secret in its
query (``https://proxy/v1?api-key=...``). Whatever becomes a file (a manifest, an experiment
artifact), a flow parameter (stored in Prefect's database) or a message shows
:func:`redact_url`'s form: the userinfo becomes ``***`` and so does the value of every query
parameter whose name looks like a secret. :func:`redact_values` applies it to every string at
any depth of a config tree, :func:`redact_text` to the URLs inside free text.

:func:`credentialed_urls` finds what the redaction would hide, so that a caller can hand the
real URL over where one is needed (``annotation.config.handed_over``) or refuse it.

:func:`safe_message` is what a command line or a flow state shows of an error: redacted, and
at most :data:`MAX_MESSAGE_CHARS` long (an input echoed back in an error can be megabytes).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

MASK = "***"
# Query parameter names that carry credentials in the wild: key, api_key, api-key, apikey,
# access_token, token, secret, password, pwd, sig / signature (Azure SAS), auth, credential.
_SECRET_NAME = re.compile(r"key|token|secret|passw|pwd|^sig$|signature|auth|credential|session", re.IGNORECASE)
# A URL inside text: a scheme, ://, then up to whitespace or a quote (as reprs and messages quote them).
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>`]+")
MAX_MESSAGE_CHARS = 4000  # an error message: a screenful, enough for every problem of a bad file
MAX_VALUE_CHARS = 200  # one offending value quoted in an error


def redact_url(url: str) -> str:
    """``url`` with its userinfo and secret-looking query values replaced by ``***``."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- raises ValueError for a malformed port or IPv6 literal
    except ValueError:
        # Not a URL we can take apart: show the scheme only rather than risk a secret.
        scheme = url.split(":", 1)[0] if ":" in url else ""
        return f"{scheme}://{MASK}" if scheme.isalpha() else MASK
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{MASK}@{netloc.rpartition('@')[2]}"
    query = "&".join(_redact_pair(pair) for pair in parts.query.split("&")) if parts.query else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _redact_pair(pair: str) -> str:
    name, sep, value = pair.partition("=")
    return f"{name}={MASK}" if sep and value and _SECRET_NAME.search(name) else pair


def url_secrets(url: str) -> list[str]:
    """The credential strings in ``url``, longest first, to mask in any message that might echo them.

    The password and secret query values count from 4 characters, the user name from 8 (a
    key used as the user name): masking a short word such as ``user`` everywhere would
    garble messages without protecting anything.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return []
    raw_user, _, raw_password = parts.netloc.rpartition("@")[0].partition(":")
    found = [s for s in (parts.password, raw_password) if s and len(s) >= 4]
    found += [s for s in (parts.username, raw_user) if s and len(s) >= 8]
    found += [v for n, v in parse_qsl(parts.query, keep_blank_values=True) if len(v) >= 4 and _SECRET_NAME.search(n)]
    return sorted({s for s in found if s != MASK}, key=len, reverse=True)


def has_masked_secret(url: str) -> bool:
    """True for a URL that went through :func:`redact_url`: its credentials are gone."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    if MASK in parts.netloc.rpartition("@")[0]:
        return True
    return any(value == MASK for _, value in parse_qsl(parts.query, keep_blank_values=True))


def redact_text(text: str) -> str:
    """``text`` with every URL in it redacted (a message, a free-text field, a URL on its own)."""
    return _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), text) if "://" in text else text


def redact_values(value: Any) -> Any:
    """``value`` with every string at any depth redacted (mappings, lists and tuples rebuilt; keys too)."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {redact_values(k): redact_values(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact_values(v) for v in value)
    return value


def credentialed_urls(value: Any, where: str = "") -> list[tuple[str, str]]:
    """(dotted path, URL) of every URL at any depth of ``value`` whose credentials redaction hides.

    A list item's path is its list's (``evaluate.llms.base_url``): what matters is the field.
    """
    if isinstance(value, str):
        return [(where, m.group(0)) for m in _URL_IN_TEXT.finditer(value) if redact_url(m.group(0)) != m.group(0)]
    found: list[tuple[str, str]] = []
    if isinstance(value, dict):
        for key, item in value.items():
            found += credentialed_urls(item, f"{where}.{key}" if where else str(key))
    elif isinstance(value, (list, tuple)):
        for item in value:
            found += credentialed_urls(item, where)
    return found


def cap_message(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """``text`` cut to ``limit`` characters, saying how much was left out."""
    if len(text) <= limit:
        return text
    kept = max(0, limit - 40)  # room for the note
    return f"{text[:kept]} ... ({len(text) - kept:,} more characters)"


def safe_message(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """What may be printed or stored of an error message: URL credentials masked, length capped."""
    return cap_message(redact_text(text), limit)


def shown_value(value: Any, limit: int = MAX_VALUE_CHARS) -> str:
    """An offending input as an error quotes it: redacted before it is cut (a cut URL could not be), capped."""
    return cap_message(repr(redact_values(value)), limit)
