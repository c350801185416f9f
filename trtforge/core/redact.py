"""Hide passwords and secret keys wherever a catalog URL or an S3 location is shown.

CI logs keep whatever a command prints, so ``doctor``, error messages and anything else that
names a catalog or a bucket shows ``postgresql+psycopg://u:***@host/db``. The password of a URL
trtforge was given is found by parsing its userinfo (``scheme://user:password@host``), so it may
hold any character (spaces, quotes, an unescaped ``@`` or ``/``); it is then replaced wherever it
appears. Drivers may repeat the password in their own error texts (psycopg names the host it failed
to resolve, which holds part of a password with an unescaped ``@``), so free text is cleaned too:
the literal secrets of every URL this process opened and of the AWS environment variables, and by
pattern every other URL's password, query parameters whose names say they are secret and
``password=...`` in libpq connection strings.
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
# scheme://user:password@ in free text (URLs trtforge was not given): the password runs to the last
# '@' before any whitespace or quote. A given URL's password is parsed instead (_userinfo_passwords).
_USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^\s/:@'\"]*:)([^\s'\"]*)@")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")
_ENV_SECRETS = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "PGPASSWORD")
_MIN_SECRET = 4  # shorter fragments would mask unrelated text

_known: set[str] = set()


def _userinfo_passwords(url: str) -> set[str]:
    """The password of ``scheme://user:password@host...`` (or ``user:password@host``, no scheme),
    parsed from the URL's structure.

    The user name runs to the first ':' (it holds no '/' or '@'); the password runs from there to
    an '@', whatever it holds (spaces, quotes, '/', '@'). Parsers disagree on which '@' ends it
    (SQLAlchemy: the first; a password with an unescaped '@': the last), so both readings count.
    """
    scheme, sep, rest = url.strip().partition("://")
    if not sep:  # user:password@host without a scheme, as an endpoint is sometimes mistyped
        rest = url.strip()
    elif not _SCHEME.fullmatch(scheme):
        return set()
    user, colon, after = rest.partition(":")
    if not colon or "/" in user or "@" in user or "@" not in after or any(c.isspace() for c in user):
        return set()
    return {after[: after.index("@")], after[: after.rindex("@")]} - {""}


def secrets_of(url: str) -> set[str]:
    """The secret parts of a URL (password, secret query values), raw and percent-decoded."""
    found = _userinfo_passwords(url)
    for match in _USERINFO.finditer(url):
        found.add(match.group(2))
    for match in _SECRET_PARAM.finditer(url):
        found.add(match.group(2))
    pieces = set()
    for secret in found:
        for form in (secret, unquote(secret)):
            pieces.add(form)
            # A password with an unescaped '@', '/', ':', space or quote is split by URL parsers;
            # drivers then echo the pieces (e.g. as a host name).
            pieces.update(re.split(r"[@/:\s'\"]", form))
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
    secrets = set(_known)
    for url in urls:
        secrets |= secrets_of(url)
    secrets.update(v for name in _ENV_SECRETS if len(v := os.environ.get(name, "")) >= _MIN_SECRET)
    out = text
    for secret in sorted(secrets, key=len, reverse=True):  # known secrets first, whole
        out = out.replace(secret, MASK)
    out = _USERINFO.sub(lambda m: f"{m.group(1)}{MASK}@", out)
    out = _SECRET_PARAM.sub(lambda m: f"{m.group(1)}{MASK}", out)
    return _SECRET_KEYWORD.sub(lambda m: f"{m.group(1)}{MASK}", out)
