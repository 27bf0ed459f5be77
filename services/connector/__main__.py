import sys

from services.common.serve import serve
from services.connector.app import create_app
from services.connector.backend_config import BackendConfigError
from services.connector.config import ConnectorSettings

settings = ConnectorSettings()
try:
    app = create_app(settings)
except BackendConfigError as err:
    # The file, the key and the reason, and no start (exit status 2, as for a usage error).
    print(f"connector: backend configuration: {err}", file=sys.stderr)
    sys.exit(2)
serve(app, settings, settings.port)
