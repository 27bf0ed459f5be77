from services.common.alembic_env import run
from services.connector.models import Base

run(Base.metadata)
