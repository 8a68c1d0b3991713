"""What both clients pass to redis-py: the default address and the options the parsing relies on."""

from __future__ import annotations

from typing import Any

DEFAULT_URL = "redis://127.0.0.1:2319"


def redis_options(kwargs: dict[str, Any]) -> dict[str, Any]:
    """redis-py keyword arguments for a Querator client. Payloads are bytes, so replies are never decoded
    by redis-py (`decode_responses=True` would turn binary payloads into errors); ids and names are
    decoded by the client itself."""
    if kwargs.get("decode_responses"):
        raise ValueError("decode_responses is not supported: payloads are bytes, the client decodes the rest")
    return {**kwargs, "decode_responses": False}
