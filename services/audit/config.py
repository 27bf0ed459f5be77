from pathlib import Path

from pydantic import Field, SecretStr, field_validator, model_validator

from services.audit import notes
from services.common.settings import CommonSettings


class AuditSettings(CommonSettings):
    port: int = Field(8003, validation_alias="TONGBAN_AUDIT_PORT")
    # The log's name in its checkpoints (C2SP tlog-checkpoint origin: a schema-less URL, no spaces,
    # no "+"); also the name of the key that signs them, fixed when the key is made.
    log_origin: str = Field(
        "tongban.dev/audit", pattern=r"^[^\s+]+$", max_length=255, validation_alias="TONGBAN_AUDIT_LOG_ORIGIN"
    )
    # Key-encryption key: seals the checkpoint key at rest (services.common.keywrap), as the
    # gateway's and the connector's keys are; the audit service does not start without it.
    key_encryption_key: SecretStr | None = Field(None, validation_alias="TONGBAN_KEY_ENCRYPTION_KEY")
    # How often a checkpoint is signed (when records were added since the last one).
    checkpoint_interval_s: float = Field(60.0, gt=0, validation_alias="TONGBAN_AUDIT_CHECKPOINT_INTERVAL_S")

    # Retention (保留期, services.audit.retention): the current month and this many months before
    # it are kept; older months are archived (signed, verified) into archive_dir, then dropped by
    # `python -m services.audit retention run`. The alert fires when months past it remain.
    retention_months: int = Field(60, ge=1, le=1200, validation_alias="TONGBAN_AUDIT_RETENTION_MONTHS")
    archive_dir: Path = Field(Path("audit-archive"), validation_alias="TONGBAN_AUDIT_ARCHIVE_DIR")

    # Completeness (完整性核对, services.audit.completeness): a window of the exchange's ledger is
    # checked this long after it ends (its queries' audit events may lag behind it), and the open
    # windows are checked this often.
    completeness_grace_s: float = Field(300.0, ge=0, validation_alias="TONGBAN_AUDIT_COMPLETENESS_GRACE_S")
    completeness_interval_s: float = Field(60.0, gt=0, validation_alias="TONGBAN_AUDIT_COMPLETENESS_INTERVAL_S")
    # Longer than the exchange.ledger topic's retention (30 days): no copy of a forgotten window can come.
    completeness_keep_days: float = Field(31.0, gt=0, validation_alias="TONGBAN_AUDIT_COMPLETENESS_KEEP_DAYS")

    # Anomaly rules (异常规则, services.audit.anomalies): how often they run, and their thresholds.
    anomaly_interval_s: float = Field(60.0, gt=0, validation_alias="TONGBAN_AUDIT_ANOMALY_INTERVAL_S")
    # Volume: a consumer's queries in one window above factor × its mean over the previous windows
    # (and at least volume_min, so that a quiet system's first busy hour is not an alert).
    volume_window_s: int = Field(3600, ge=60, le=86400, validation_alias="TONGBAN_AUDIT_VOLUME_WINDOW_S")
    volume_baseline_windows: int = Field(
        168, ge=1, le=24 * 90, validation_alias="TONGBAN_AUDIT_VOLUME_BASELINE_WINDOWS"
    )
    volume_factor: float = Field(5.0, gt=1, validation_alias="TONGBAN_AUDIT_VOLUME_FACTOR")
    volume_min: int = Field(100, ge=1, validation_alias="TONGBAN_AUDIT_VOLUME_MIN")
    # Working hours of a working day (工作日), in TONGBAN_TIMEZONE, on the platform's calendar
    # (services/common/calendar.py): weekends and public holidays are outside them, 调休 days not.
    work_start_hour: int = Field(8, ge=0, le=23, validation_alias="TONGBAN_AUDIT_WORK_START_HOUR")
    work_end_hour: int = Field(18, ge=1, le=24, validation_alias="TONGBAN_AUDIT_WORK_END_HOUR")
    off_hours_min: int = Field(1, ge=1, validation_alias="TONGBAN_AUDIT_OFF_HOURS_MIN")
    # Denials: one system refused this many times within one window.
    denials_window_s: int = Field(600, ge=60, le=86400, validation_alias="TONGBAN_AUDIT_DENIALS_WINDOW_S")
    denials_min: int = Field(10, ge=1, validation_alias="TONGBAN_AUDIT_DENIALS_MIN")
    # Subject spread: one subject read by this many consuming departments within one window.
    spread_window_s: int = Field(3600, ge=60, le=86400 * 7, validation_alias="TONGBAN_AUDIT_SPREAD_WINDOW_S")
    spread_consumers: int = Field(3, ge=2, validation_alias="TONGBAN_AUDIT_SPREAD_CONSUMERS")
    # Rare purpose: a purpose under this share of the consumer's queries in the previous
    # rare_history_days (which must hold at least rare_history_min queries to be a baseline).
    rare_share: float = Field(0.01, gt=0, lt=1, validation_alias="TONGBAN_AUDIT_RARE_SHARE")
    rare_history_days: int = Field(30, ge=1, le=366, validation_alias="TONGBAN_AUDIT_RARE_HISTORY_DAYS")
    rare_history_min: int = Field(100, ge=1, validation_alias="TONGBAN_AUDIT_RARE_HISTORY_MIN")

    @model_validator(mode="after")
    def working_day_is_a_day(self) -> "AuditSettings":
        if self.work_start_hour >= self.work_end_hour:
            raise ValueError("TONGBAN_AUDIT_WORK_START_HOUR must be before TONGBAN_AUDIT_WORK_END_HOUR")
        return self

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
