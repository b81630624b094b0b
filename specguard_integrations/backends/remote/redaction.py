"""Secrets kept out of every message: what the client says about a server (its URL, an
upstream's own error message, an HTTP library's error) passes through a `Redactor` first.

A base URL's userinfo (``https://user:password@host``) is sent as HTTP Basic auth and named
``https://***@host``; the API key (a bearer token), the password and the userinfo are replaced
by ``***`` wherever they appear, percent-encoded or not; so is any ``Bearer <token>`` and the
userinfo of any URL an upstream quotes (a redirect's ``Location``). Exceptions, their ``repr``,
log records, trace files, OTel spans and `specguard serve`'s error bodies all carry messages
built here, so none of them carries a secret.
"""

from __future__ import annotations

import logging
import re
import urllib.parse
import weakref

MASK = "***"
# a URL's userinfo runs to the last "@" of its authority (a password may hold an "@")
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)[^/\s]*@")
_BEARER = re.compile(r"(?i)\b(bearer\s+)[^\s\"',;}]+")


def redact_url(url: str) -> str:
    """`url` with any userinfo masked (``http://***@host:8000``)."""
    return _USERINFO.sub(rf"\1{MASK}@", url)


def split_userinfo(url: str) -> tuple[str, str]:
    """(`url` without its userinfo, the userinfo as written): the userinfo runs to the last
    ``@`` of the authority, as HTTP clients read it."""
    scheme, sep, rest = url.partition("://")
    authority, slash, path = rest.partition("/")
    userinfo, at, host = authority.rpartition("@")
    if not sep or not at:
        return url, ""
    return f"{scheme}://{host}{slash}{path}", userinfo


class Redactor:
    """Masks the secrets one client knows: its API key and its base URL's userinfo."""

    def __init__(self, base_url: str, api_key: str | None = None) -> None:
        userinfo = split_userinfo(base_url.strip())[1]
        password = userinfo.partition(":")[2]
        raw = [api_key or "", userinfo, password]
        raw += [urllib.parse.unquote(s) for s in raw] + [urllib.parse.quote(s) for s in raw]
        # the longest first, so a secret that contains another is masked whole
        self.secrets = sorted({s for s in raw if s}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        """`text` with every known secret, URL userinfo and bearer token masked."""
        for secret in self.secrets:
            text = text.replace(secret, MASK)
        return _BEARER.sub(rf"\1{MASK}", _USERINFO.sub(rf"\1{MASK}@", text))


class _LibraryLogFilter(logging.Filter):
    """Masks every known client's secrets in the HTTP libraries' own log records (httpx logs
    each request's URL at INFO; httpcore, at DEBUG, the raw headers an upstream answers)."""

    def __init__(self) -> None:
        super().__init__()
        self.redactors: weakref.WeakSet[Redactor] = weakref.WeakSet()

    def filter(self, record: logging.LogRecord) -> bool:
        redactors = list(self.redactors)
        if redactors:
            text = record.getMessage()
            for redact in redactors:
                text = redact(text)
            record.msg, record.args = text, ()
        return True


_FILTER = _LibraryLogFilter()


def guard_library_logs(redactor: Redactor) -> None:
    """Have the HTTP libraries' loggers pass their records through `redactor` (for as long as
    it lives)."""
    if not _FILTER.redactors:
        for name in ("httpx", "httpcore", "httpcore.http11", "httpcore.connection"):
            logger = logging.getLogger(name)
            if _FILTER not in logger.filters:
                logger.addFilter(_FILTER)
    _FILTER.redactors.add(redactor)
