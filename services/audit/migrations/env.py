from services.audit.models import Base
from services.common.alembic_env import run

run(Base.metadata)
