from services.common.serve import serve
from services.gateway.app import create_app
from services.gateway.config import GatewaySettings

settings = GatewaySettings()
serve(create_app(settings), settings, settings.port)
