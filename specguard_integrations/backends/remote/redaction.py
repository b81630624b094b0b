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

import re
import urllib.parse

MASK = "***"
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)[^/\s@?#]*@")
_BEARER = re.compile(r"(?i)\b(bearer\s+)[^\s\"',;}]+")


def redact_url(url: str) -> str:
    """`url` with any userinfo masked (``http://***@host:8000``)."""
    return _USERINFO.sub(rf"\1{MASK}@", url)


class Redactor:
    """Masks the secrets one client knows: its API key and its base URL's userinfo."""

    def __init__(self, base_url: str, api_key: str | None = None) -> None:
        found = _USERINFO.match(base_url.strip())
        userinfo = found.group(0)[len(found.group(1)) : -1] if found else ""
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
