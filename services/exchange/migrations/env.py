from services.common.alembic_env import run
from services.exchange.models import Base

run(Base.metadata)
