"""``python -m services.gateway``: serve; ``python -m services.gateway keys rotate``: see cli.py."""

import sys

if len(sys.argv) > 1:
    from services.gateway.cli import main

    sys.exit(main(sys.argv[1:]))

from services.common.serve import serve
from services.gateway.app import create_app
from services.gateway.config import GatewaySettings

settings = GatewaySettings()
# The gateway alone decides whose X-Forwarded-For to believe (mtls.client_address): uvicorn's own
# rewrite of the peer address would let any local process pose as a trusted proxy.
serve(create_app(settings), settings, settings.port, proxy_headers=False)
