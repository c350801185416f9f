"""Hide passwords and secret keys wherever a catalog URL or an S3 location is shown.

CI logs keep whatever a command prints, so ``doctor``, error messages and anything else that
names a catalog or a bucket shows ``postgresql+psycopg://u:***@host/db``. Drivers may repeat
the password in their own error texts (psycopg names the host it failed to resolve, which holds
part of a password with an unescaped ``@``), so free text is cleaned too: every URL's password,
query parameters whose names say they are secret, ``password=...`` in libpq connection strings,
and the literal secrets of every URL this process opened and of the AWS environment variables.
"""

from __future__ import annotations

import os
import re
from urllib.parse import unquote

MASK = "***"
# Query parameters (and libpq keywords) whose values are secrets: passwords, keys, tokens,
# presigned-URL signatures and credentials (X-Amz-Signature, X-Amz-Credential, ...).
_SENSITIVE_NAME = (
    r"[A-Za-z0-9_.-]*(?:pass|pwd|secret|token|signature|credential|apikey|api_key|access_key)[A-Za-z0-9_.-]*"
)
_SECRET_PARAM = re.compile(rf"(?i)([?&;]{_SENSITIVE_NAME}=)([^&#\s'\"]*?)(?=[&#\s'\"]|:\s|:?$)")
_SECRET_KEYWORD = re.compile(rf"(?i)((?<![?&;\w.-]){_SENSITIVE_NAME}\s*=\s*)('[^']*'|[^\s'\"&]+)")
# scheme://user:password@ : the password runs to the last '@' before any whitespace or quote.
_USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^\s/:@'\"]*:)([^\s'\"]*)@")
_ENV_SECRETS = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "PGPASSWORD")
_MIN_SECRET = 4  # shorter fragments would mask unrelated text

_known: set[str] = set()


def secrets_of(url: str) -> set[str]:
    """The secret parts of a URL (password, secret query values), raw and percent-decoded."""
    found: set[str] = set()
    for match in _USERINFO.finditer(url):
        found.add(match.group(2))
    for match in _SECRET_PARAM.finditer(url):
        found.add(match.group(2))
    pieces = set()
    for secret in found:
        for form in (secret, unquote(secret)):
            pieces.add(form)
            # A password with an unescaped '@', '/' or ':' is split by URL parsers; drivers then
            # echo the pieces (e.g. as a host name).
            pieces.update(re.split(r"[@/:]", form))
    return {p for p in pieces if len(p) >= _MIN_SECRET}


def remember(url: str) -> None:
    """Record a URL's secrets so that any later message naming them is cleaned (see redact)."""
    _known.update(secrets_of(url))


def redact_url(url: str) -> str:
    """The URL with its password and secret query values replaced by ``***``."""
    return redact(url, url)


def redact(text: str, *urls: str) -> str:
    """``text`` with every password, secret key and known secret replaced by ``***``.

    ``urls`` are URLs whose secrets may appear in ``text`` in other forms (a driver's message);
    secrets of URLs passed to :func:`remember` and of the AWS/libpq environment count too.
    """
    if not text:
        return text
    out = _USERINFO.sub(lambda m: f"{m.group(1)}{MASK}@", text)
    out = _SECRET_PARAM.sub(lambda m: f"{m.group(1)}{MASK}", out)
    out = _SECRET_KEYWORD.sub(lambda m: f"{m.group(1)}{MASK}", out)
    secrets = set(_known)
    for url in urls:
        secrets |= secrets_of(url)
    secrets.update(v for name in _ENV_SECRETS if len(v := os.environ.get(name, "")) >= _MIN_SECRET)
    for secret in sorted(secrets, key=len, reverse=True):
        out = out.replace(secret, MASK)
    return out
