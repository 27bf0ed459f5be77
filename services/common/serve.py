"""Run one service as its own process (distributed mode): ``python -m services.<name>``."""

import uvicorn
from fastapi import FastAPI

from services.common.logs import configure_logging
from services.common.settings import CommonSettings


def serve(app: FastAPI, settings: CommonSettings, port: int, *, proxy_headers: bool = True) -> None:
    """``proxy_headers=False``: the peer address is the connection's, whatever X-Forwarded-For
    says (uvicorn otherwise believes it from 127.0.0.1) — for the gateway, which decides itself
    which proxies to believe (TONGBAN_GATEWAY_TRUSTED_PROXIES)."""
    configure_logging(settings.log_level, settings.log_json)
    uvicorn.run(
        app,
        host=settings.host,
        port=port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_config=None,
        timeout_graceful_shutdown=10,
        proxy_headers=proxy_headers,
    )
