"""What every service's API schemas share: :class:`Strict`, the base of every request body."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator

# NUL cannot be stored in a PostgreSQL text column, and an unpaired surrogate is not text at all
# (it cannot be encoded as UTF-8): both would fail deep in a write, so they are refused up front.
UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def storable_text_problem(value: Any) -> str | None:
    """Why ``value`` (a str, or lists and dicts of them, keys included) cannot be stored, or None."""
    if isinstance(value, str):
        return "text may not contain NUL (U+0000) or unpaired surrogates" if UNSTORABLE.search(value) else None
    if isinstance(value, dict):
        return next(
            (why for k, v in value.items() if (why := storable_text_problem(k) or storable_text_problem(v))), None
        )
    if isinstance(value, list | tuple):
        return next((why for v in value if (why := storable_text_problem(v))), None)
    return None


class Strict(BaseModel):
    """A request body: unknown fields refused, strings stripped, nothing that cannot be stored."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    @model_validator(mode="before")
    @classmethod
    def text_is_storable(cls, data: Any) -> Any:
        if (why := storable_text_problem(data)) is not None:
            raise ValueError(why)
        return data
