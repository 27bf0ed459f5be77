from pydantic import Field, field_validator

from services.audit import notes
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
    # The witnesses (见证方) whose cosignatures of checkpoints are kept and served: their verifier
    # keys (<name>+<hex key hash>+<base64(0x04 ‖ Ed25519 key)>), a JSON list in the environment.
    witness_keys: list[str] = Field(default_factory=list, validation_alias="TONGBAN_AUDIT_WITNESS_KEYS")

    @field_validator("witness_keys")
    @classmethod
    def cosigner_keys(cls, keys: list[str]) -> list[str]:
        for key in keys:
            try:
                notes.parse_verifier_key(key, notes.COSIGNATURE_V1)
            except notes.BadNote as err:
                raise ValueError(f"witness key {key!r}: {err}") from err
        return keys

    @property
    def witnesses(self) -> list[notes.VerifierKey]:
        return [notes.parse_verifier_key(k, notes.COSIGNATURE_V1) for k in self.witness_keys]
