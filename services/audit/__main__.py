from services.audit.app import create_app
from services.audit.config import AuditSettings
from services.common.serve import serve

settings = AuditSettings()
serve(create_app(settings), settings, settings.port)
