from services.common.serve import serve
from services.connector.app import create_app
from services.connector.config import ConnectorSettings

settings = ConnectorSettings()
serve(create_app(settings), settings, settings.port)
