"""A GET through a real aiohttp client, and a check that an answer matches the JSON schema its
route documents (types, required and known properties; enough to catch a doc that lies)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import aiohttp

from tests.service.api_server import Api

Query = Mapping[str, str] | Sequence[tuple[str, str]]

TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "object": (dict,),
    "array": (list,),
    "null": (type(None),),
}


async def get(
    api: Api, path: str, query: Query | None = None, *, auth: bool = True
) -> tuple[int, Any]:
    """GET *path* with *query*: (status, JSON answer)."""
    headers = api.headers if auth else {}
    async with (
        aiohttp.ClientSession() as session,
        session.get(api.url + path, params=query, headers=headers) as resp,
    ):
        assert resp.content_type == "application/json", await resp.text()
        return resp.status, await resp.json()


def schema_problems(value: Any, schema: Mapping[str, Any], where: str = "$") -> list[str]:
    """Where *value* does not fit *schema* (an empty list when it does)."""
    problems: list[str] = []
    if "enum" in schema and value not in schema["enum"]:
        problems.append(f"{where}: {value!r} not in {schema['enum']}")
    kinds = schema.get("type")
    if kinds is not None:
        names = [kinds] if isinstance(kinds, str) else list(kinds)
        ok = any(isinstance(value, TYPES[n]) for n in names)
        if isinstance(value, bool) and "boolean" not in names:
            ok = False
        if not ok:
            return [*problems, f"{where}: {type(value).__name__} is not {names}"]
    if isinstance(value, dict):
        props = schema.get("properties", {})
        problems += [
            f"{where}: missing {k!r}" for k in schema.get("required", []) if k not in value
        ]
        extra = schema.get("additionalProperties", not props)
        for key, item in value.items():
            if key in props:
                problems += schema_problems(item, props[key], f"{where}.{key}")
            elif isinstance(extra, dict):
                problems += schema_problems(item, extra, f"{where}.{key}")
            elif extra is False or (props and extra is not True):
                problems.append(f"{where}: {key!r} is not documented")
    if isinstance(value, list) and "items" in schema:
        for pos, item in enumerate(value):
            problems += schema_problems(item, schema["items"], f"{where}[{pos}]")
    return problems
