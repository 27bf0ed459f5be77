from pydantic import Field

from services.common.settings import CommonSettings


class AuditSettings(CommonSettings):
    port: int = Field(8003, validation_alias="TONGBAN_AUDIT_PORT")
    # The log's name in its checkpoints (C2SP tlog-checkpoint origin: a schema-less URL, no spaces,
    # no "+"); also the name of the key that signs them, fixed when the key is made.
    log_origin: str = Field(
        "tongban.dev/audit", pattern=r"^[^\s+]+$", max_length=255, validation_alias="TONGBAN_AUDIT_LOG_ORIGIN"
    )
    # How often a checkpoint is signed (when records were added since the last one).
    checkpoint_interval_s: float = Field(60.0, gt=0, validation_alias="TONGBAN_AUDIT_CHECKPOINT_INTERVAL_S")
