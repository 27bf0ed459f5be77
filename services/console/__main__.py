"""``python -m services.console``: serve the console (behind the gateway, at /console)."""

from services.common.serve import serve
from services.console.app import create_app
from services.console.config import ConsoleSettings

settings = ConsoleSettings()
serve(create_app(settings), settings, settings.port)
