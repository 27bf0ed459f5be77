from services.common.alembic_env import run
from services.registry.models import Base

run(Base.metadata)
