from services.common.serve import serve
from services.registry.app import create_app
from services.registry.config import RegistrySettings

settings = RegistrySettings()
serve(create_app(settings), settings, settings.port)
