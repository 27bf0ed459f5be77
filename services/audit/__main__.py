"""``python -m services.audit``: serve; ``python -m services.audit dead-letters replay …``: see cli.py."""

import sys

if len(sys.argv) > 1:
    from services.audit.cli import main

    sys.exit(main(sys.argv[1:]))

from services.audit.app import create_app
from services.audit.config import AuditSettings
from services.common.serve import serve

settings = AuditSettings()
serve(create_app(settings), settings, settings.port)
