"""The endpoint URL: what may be shown of it, and what the client is given.

A user may put credentials in ``annotate.base_url``: ``http://user:PASSWORD@host/v1`` or a
key in the query (``https://proxy/v1?api-key=...``). The URL is shown in logs, task-run
names, stage errors and the manifest, and stored in the Prefect database, so everything
but the client sees ``redaction.redact_url``'s form: the userinfo becomes ``***`` and so does
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

from urllib.parse import parse_qsl, urlsplit, urlunsplit

# What may be shown of a URL is decided in one place, for every URL-valued field: nuner_core.redaction.


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
