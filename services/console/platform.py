"""The platform's public API as the console calls it: through the gateway, with the logged-in
person's token. The console decides nothing itself — whatever the API refuses is refused."""

from __future__ import annotations

import base64
import binascii
import time
from typing import Any

import httpx
import orjson

from services.common.logs import request_id_var
from services.console.session import Session


class ApiProblem(Exception):
    """A problem+json answer of the API (RFC 9457), or the gateway not answering (``status`` 502).
    ``code`` is the last segment of the problem's ``type``: "invalid-credentials", …"""

    def __init__(self, status: int, code: str, title: str, detail: str, fields: dict[str, str] | None = None) -> None:
        super().__init__(f"{status} {code}: {detail}")
        self.status, self.code, self.title, self.detail = status, code, title, detail
        # A validation problem's errors by field (its "errors": [{"field", "message"}, …]).
        self.fields = fields or {}

    @classmethod
    def of(cls, answer: httpx.Response) -> ApiProblem:
        try:
            body = answer.json()
        except ValueError:
            body = {}
        if not isinstance(body, dict):
            body = {}
        code = str(body.get("type", "")).rstrip("/").rsplit("/", 1)[-1] or "unknown"
        errors = body.get("errors")
        fields = {
            str(e.get("field") or "").split(".", 1)[0]: str(e.get("message", ""))
            for e in (errors if isinstance(errors, list) else [])
            if isinstance(e, dict)
        }
        return cls(answer.status_code, code, str(body.get("title", "")), str(body.get("detail", "")), fields)


UNREACHABLE = "unreachable"


def claims_of(token: str) -> dict[str, Any]:
    """The claims of an access token the gateway has just issued to us, for display (who is logged
    in, which menus to show). Not verified here: it came straight from the gateway, and every API
    call verifies it again; nothing is allowed or refused on the strength of these claims."""
    try:
        payload = token.split(".")[1]
        claims = orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, binascii.Error, ValueError, orjson.JSONDecodeError):
        return {}
    return claims if isinstance(claims, dict) else {}


class Platform:
    """One HTTP client to the gateway, owned by the console's lifespan."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    async def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        # The page's request id goes with each call, so that the gateway's and the services' log
        # lines of a failed page carry the id the person sees on it.
        if (rid := request_id_var.get()) is not None:
            kwargs["headers"] = {**kwargs.get("headers", {}), "x-request-id": rid}
        try:
            return await self.client.request(method, path, **kwargs)
        except httpx.HTTPError as err:
            raise ApiProblem(502, UNREACHABLE, "The platform did not answer", str(err)) from err

    async def login(self, session: Session, username: str, password: str) -> Session:
        """A new session for the person (ApiProblem when the gateway refuses them)."""
        answer = await self._send("POST", "/v1/auth/login", json={"username": username, "password": password})
        if answer.status_code != 200:
            raise ApiProblem.of(answer)
        token = str(answer.json()["access_token"])
        claims = claims_of(token)
        now = time.time()
        return Session(
            language=session.language,
            last_seen=now,
            token=token,
            token_expires=now + float(answer.json().get("expires_in", 0)),
            username=str(claims.get("sub", username)),
            department=str(claims.get("dept", "")),
            roles=tuple(str(r) for r in claims.get("roles", [])),
        )

    def _headers(self, session: Session) -> dict[str, str]:
        return {"authorization": f"Bearer {session.token}", "accept": "application/json"}

    async def get(self, session: Session, path: str, params: dict[str, str] | None = None) -> Any:
        """The JSON of a GET on the API as the session's person."""
        answer = await self._send("GET", path, params=params or {}, headers=self._headers(session))
        if answer.status_code != 200:
            raise ApiProblem.of(answer)
        return answer.json()

    async def send(self, session: Session, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """The JSON answer (None when it has no body) of a POST, PUT, PATCH or DELETE as the person."""
        answer = await self._send(method, path, json=body, headers=self._headers(session))
        if answer.status_code >= 300:
            raise ApiProblem.of(answer)
        return answer.json() if answer.content else None

    async def fetch(
        self, session: Session, method: str, path: str, headers: dict[str, str] | None = None, **kwargs: Any
    ) -> httpx.Response:
        """The whole answer of a call as the person — a file to download, or a form with a file to
        upload (``files=``, ``params=``…; ``headers`` such as a file's ``content-type`` join the
        person's); a refusal is an ApiProblem as always."""
        headers = self._headers(session) | {"accept": "*/*"} | (headers or {})
        answer = await self._send(method, path, headers=headers, **kwargs)
        if answer.status_code >= 300:
            raise ApiProblem.of(answer)
        return answer

    async def open(self, session: Session, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """The answer of a call as the person with its body not yet read, to pass a large file on
        as it comes (``aiter_bytes``) instead of holding it whole; the caller closes it
        (``aclose``). A refusal is an ApiProblem, its body read and the answer closed."""
        headers = self._headers(session) | {"accept": "*/*"}
        request = self.client.build_request(method, path, headers=headers, **kwargs)
        try:
            answer = await self.client.send(request, stream=True)
        except httpx.HTTPError as err:
            raise ApiProblem(502, UNREACHABLE, "The platform did not answer", str(err)) from err
        if answer.status_code >= 300:
            try:
                await answer.aread()
            finally:
                await answer.aclose()
            raise ApiProblem.of(answer)
        return answer
