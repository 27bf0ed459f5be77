"""What the registry asks of the gateway, which owns identity: which department a system belongs to.
The HTTP client is created and closed by the lifespan (:func:`services.registry.app.create_app`)."""

from __future__ import annotations

from urllib.parse import quote

import httpx

from services.common.logs import context_headers
from services.registry.problems import RegistryProblem


class SystemDirectory:
    """Looks up consuming systems (业务系统) at the gateway, with the caller's own token, so the
    gateway's object-level rule (a data admin sees only their department's systems) applies."""

    def __init__(self, gateway_url: str, client: httpx.AsyncClient) -> None:
        self._gateway_url = gateway_url
        self._client = client

    async def department_of(self, client_id: str, authorization: str) -> str | None:
        """The credit code of the department owning ``client_id``; None if it is not visible."""
        try:
            response = await self._client.get(
                f"{self._gateway_url}/v1/systems/{quote(client_id, safe='')}",
                headers={"authorization": authorization, **context_headers()},
            )
        except httpx.HTTPError as err:
            raise RegistryProblem.GATEWAY_UNAVAILABLE.problem(f"The gateway did not answer: {err}") from err
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise RegistryProblem.GATEWAY_UNAVAILABLE.problem(f"The gateway answered {response.status_code}.")
        dept: str = response.json()["dept"]
        return dept
