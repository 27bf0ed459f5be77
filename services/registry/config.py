from pydantic import Field

from services.common.settings import CommonSettings


class RegistrySettings(CommonSettings):
    port: int = Field(8001, validation_alias="TONGBAN_REGISTRY_PORT")
