"""The endpoint URL: what may be shown of it, and what the client is given.

A user may put credentials in ``annotate.base_url``: ``http://user:PASSWORD@host/v1`` or a
key in the query (``https://proxy/v1?api-key=...``). The URL is shown in logs, task-run
names, stage errors and the manifest, and stored in the Prefect database, so everything
but the client sees :func:`redact_url`'s form: the userinfo becomes ``***`` and so does
the value of every query parameter whose name looks like a secret. The config keeps the
URL as given in a private attribute (``AnnotateConfig.endpoint()``), which no dump or
repr contains.

Authentication is the one the user configured: with an API key (``annotate.api_key_env``)
the request carries ``Authorization: Bearer <key>`` and nothing else. httpx would turn
userinfo in the URL into Basic auth, silently replacing the key, so the client gets the
URL without it (:func:`client_url`); only when no key is configured is the userinfo
passed on, and httpx then sends it as Basic auth, which is what a URL with userinfo means.
Query parameters are passed as ``default_query``: the openai client appends paths to the
base URL's raw path, which would put ``/chat/completions`` after the query.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlsplit, urlunsplit

MASK = "***"
# Query parameter names that carry credentials in the wild: key, api_key, api-key, apikey,
# access_token, token, secret, password, pwd, sig / signature (Azure SAS), auth, credential.
_SECRET_NAME = re.compile(r"key|token|secret|passw|pwd|^sig$|signature|auth|credential|session", re.IGNORECASE)


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


def client_url(url: str, *, keep_userinfo: bool) -> tuple[str, dict[str, str]]:
    """(base URL for ``AsyncOpenAI``, its query parameters as ``default_query``)."""
    parts = urlsplit(url)
    netloc = parts.netloc if keep_userinfo else parts.netloc.rpartition("@")[2]
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    return urlunsplit((parts.scheme, netloc, parts.path, "", "")), query


def has_userinfo(url: str) -> bool:
    try:
        return "@" in urlsplit(url).netloc
    except ValueError:
        return False
