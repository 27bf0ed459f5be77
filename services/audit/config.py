from pydantic import Field

from services.common.settings import CommonSettings


class AuditSettings(CommonSettings):
    port: int = Field(8003, validation_alias="TONGBAN_AUDIT_PORT")
