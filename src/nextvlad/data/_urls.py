"""Data URLs: which are remote, which carry credentials, and how they are written down.

A signed URL (S3's ``X-Amz-Signature``, GCS's ``X-Goog-Signature``, Azure's ``sig``) or an
API key or token in the query (``key``, ``apikey``, ``token``, ``access_token``, ...) is a
legitimate way to read a private object, so such URLs are read; but their query string is
never written anywhere (errors, logs, ``run.json``, the cache's file names and notes):
:func:`redact_url` is what is written instead. A user or password in the URL is refused.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from nextvlad.errors import ConfigError

__all__ = [
    "check_url",
    "has_secret_query",
    "is_remote",
    "local_path",
    "redact_text",
    "redact_url",
    "scheme",
]

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
# Query parameters that carry a secret, or belong to a signed URL whose signature is in
# another parameter (X-Amz-*, X-Goog-*): matched against the lower-cased name.
_SECRET_NAME = re.compile(
    r"^(key|sig|code|auth|authorization|pwd|passwd)$"
    r"|token|secret|password|signature|credential|api[-_]?key|access[-_]?key|accessid"
    r"|^x-(amz|goog)-"
)
REDACTED = "REDACTED"
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>()]+")


def scheme(name: str) -> str:
    """The URL scheme of ``name``, lower-cased ('' for a plain path)."""
    match = _SCHEME.match(name)
    return match.group(1).lower() if match else ""


def is_remote(name: str) -> bool:
    """A URL of another scheme than ``file://``."""
    return scheme(name) not in ("", "file")


def local_path(name: str) -> str:
    """``file:///a/b`` -> ``/a/b``; anything else unchanged."""
    return name[len("file://") :] if scheme(name) == "file" else name


def has_secret_query(url: str) -> bool:
    """Whether the query of ``url`` holds a credential (a signature, key or token)."""
    query = urlsplit(url).query
    names = [name for name, _ in parse_qsl(query, keep_blank_values=True)]
    return any(_SECRET_NAME.search(name.lower()) for name in names)


def redact_url(url: str) -> str:
    """``url`` as it may be written down: without a user or password, and with its query
    string replaced by ``REDACTED`` when that holds a credential (signed URLs, ``key=``,
    ``token=``, ...); anything else (plain paths, URLs without secrets) unchanged."""
    if not scheme(url):
        return url
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    query = REDACTED if has_secret_query(url) else parts.query
    if netloc == parts.netloc and query == parts.query:
        return url
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redact_text(text: str) -> str:
    """``text`` (an error message of a library) with each URL in it redacted."""
    return _URL_IN_TEXT.sub(lambda match: redact_url(match.group()), text)


def check_url(url: str) -> None:
    """Refuses a URL with a user or a password in it (``ConfigError``, naming it redacted)."""
    parts = urlsplit(url)
    if parts.username or parts.password:
        raise ConfigError(
            f"{redact_url(url)}: a user or password in a data URL is refused: it would reach "
            "logs and run.json; use the filesystem's own configuration (environment, config "
            "file, instance role) or a signed URL"
        )
