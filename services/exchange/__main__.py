import sys

if sys.argv[1:2] == ["verify"]:
    from services.exchange.verify import main

    sys.exit(main(sys.argv[2:]))

from services.common.serve import serve
from services.exchange.app import create_app
from services.exchange.config import ExchangeSettings

settings = ExchangeSettings()
serve(create_app(settings), settings, settings.port)
