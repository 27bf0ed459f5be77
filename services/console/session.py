"""The console's session (会话): one encrypted cookie, nothing kept on the server.

The cookie holds the person's access token (issued by the gateway's ``/v1/auth/login``), who they
are as the token says, the CSRF token of the session and when it was last used. It is sealed with
AES-256-GCM under a key derived from ``TONGBAN_KEY_ENCRYPTION_KEY`` (HKDF, so the key that seals
private keys at rest never seals cookies itself), so every replica opens it and no one else can
read or change it; it is ``HttpOnly``, ``Secure`` and ``SameSite=Strict``.

A visitor who has not logged in gets a session too, without a token: its CSRF token protects the
login and language forms. Logging in starts a new session (new CSRF token: no fixation).
"""

from __future__ import annotations

import base64
import binascii
import secrets
import time
from dataclasses import dataclass, field, replace

import orjson
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from services.common.keywrap import KEK_BYTES, KeyWrap, KeyWrapError, decode_kek

COOKIE = "tongban_console"
COOKIE_PATH = "/console"
CONTEXT = "tongban console session v1"  # associated data: a value sealed for anything else does not open
LANGUAGES = ("zh-CN", "en")
DEFAULT_LANGUAGE = "zh-CN"


@dataclass(frozen=True)
class Session:
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    language: str = DEFAULT_LANGUAGE
    last_seen: float = field(default_factory=time.time)
    token: str | None = None  # the person's access token; None: not logged in
    token_expires: float = 0.0
    username: str = ""
    department: str = ""
    roles: tuple[str, ...] = ()

    @property
    def signed_in(self) -> bool:
        return self.token is not None

    def idle(self, now: float, timeout_s: float) -> bool:
        """Whether a logged-in session is over: unused for ``timeout_s``, or its token has expired."""
        return self.signed_in and (now - self.last_seen > timeout_s or now >= self.token_expires)

    def signed_out(self) -> Session:
        """The same visitor, logged out: a fresh CSRF token, the language kept."""
        return Session(language=self.language)


class Sealer:
    """Seals sessions into cookie values and opens them again."""

    def __init__(self, kek: str) -> None:
        raw = decode_kek(kek)
        derived = HKDF(algorithm=hashes.SHA256(), length=KEK_BYTES, salt=None, info=CONTEXT.encode()).derive(raw)
        self._wrap = KeyWrap(base64.urlsafe_b64encode(derived).rstrip(b"=").decode())

    def seal(self, session: Session) -> str:
        payload = orjson.dumps(
            {
                "c": session.csrf,
                "l": session.language,
                "s": session.last_seen,
                "t": session.token,
                "x": session.token_expires,
                "u": session.username,
                "d": session.department,
                "r": list(session.roles),
            }
        )
        return base64.urlsafe_b64encode(self._wrap.seal(payload, CONTEXT)).rstrip(b"=").decode()

    def open(self, value: str | None) -> Session | None:
        """The session of a cookie value; None for a missing, altered or foreign one."""
        if not value:
            return None
        try:
            sealed = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
            data = orjson.loads(self._wrap.open(sealed, CONTEXT))
            language = data["l"] if data["l"] in LANGUAGES else DEFAULT_LANGUAGE
            return Session(
                csrf=str(data["c"]),
                language=language,
                last_seen=float(data["s"]),
                token=None if data["t"] is None else str(data["t"]),
                token_expires=float(data["x"]),
                username=str(data["u"]),
                department=str(data["d"]),
                roles=tuple(str(r) for r in data["r"]),
            )
        except (binascii.Error, ValueError, KeyError, TypeError, KeyWrapError, orjson.JSONDecodeError):
            return None


def touched(session: Session, now: float) -> Session:
    return replace(session, last_seen=now)


def csrf_matches(session: Session, sent: str | None) -> bool:
    return sent is not None and secrets.compare_digest(session.csrf.encode(), sent.encode())
