from pydantic import Field, SecretStr

from services.common.settings import CommonSettings


class ConsoleSettings(CommonSettings):
    port: int = Field(8005, validation_alias="TONGBAN_CONSOLE_PORT")
    # Seals the session cookie (a key derived from it, services.console.session): every replica of
    # the console opens the cookies of the others; the console does not start without it.
    key_encryption_key: SecretStr | None = Field(None, validation_alias="TONGBAN_KEY_ENCRYPTION_KEY")
    # A session not used for this long is over (空闲超时): the person logs in again.
    idle_timeout_s: int = Field(900, ge=30, le=8 * 3600, validation_alias="TONGBAN_CONSOLE_IDLE_TIMEOUT_S")
    # Calls to the platform's API (through the gateway, TONGBAN_GATEWAY_URL).
    api_timeout_s: float = Field(10.0, gt=0, le=120, validation_alias="TONGBAN_CONSOLE_API_TIMEOUT_S")
