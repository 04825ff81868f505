"""The OpenAPI document, written from the route table (api/routing.py) and msgspec's JSON
schemas, and the /docs page: Swagger UI from the pinned `swagger-ui-bundle` package, served
by this service (no CDN: banks run air-gapped), with the Content-Security-Policy it needs."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable
from typing import Any

import msgspec
from swagger_ui_bundle import swagger_ui_path

from banking_es.api.ratelimit import RATE_LIMIT_RESPONSES
from banking_es.api.routing import Operation
from banking_es.api.schemas import Problem

_REF = "#/components/schemas/{name}"
_PROBLEM = {"application/problem+json": {"schema": {"$ref": _REF.format(name="Problem")}}}
_BEARER = {
    "type": "http",
    "scheme": "bearer",
    "description": "An access token from POST /auth/login (or /auth/refresh).",
}
#: Where the page loads Swagger UI's files from (`assets()`), on this origin.
ASSETS_PATH = "/docs/assets"
ASSETS_DIR = swagger_ui_path


def _tidy(schema: Any) -> Any:
    """msgspec's JSON Schema (2020-12) as OpenAPI 3.0 schemas, which the pinned Swagger UI
    (4.x) renders: `nullable` for an `anyOf` with null, `example` for `examples`; and money
    accepts a number or a string (`oneOf`), so msgspec's own Decimal type and format go."""
    if isinstance(schema, list):
        return [_tidy(value) for value in schema]
    if not isinstance(schema, dict):
        return schema
    schema = {key: _tidy(value) for key, value in schema.items()}
    if "oneOf" in schema and schema.get("format") == "decimal":
        schema.pop("type", None)
        schema.pop("format", None)
    options = schema.get("anyOf")
    if options is not None and {"type": "null"} in options:
        rest = [option for option in options if option != {"type": "null"}]
        del schema["anyOf"]
        if len(rest) > 1:
            schema["anyOf"] = rest
        elif "$ref" in rest[0]:
            schema["allOf"] = rest  # a $ref takes no siblings in OpenAPI 3.0
        else:
            schema = {**rest[0], **schema}
        schema["nullable"] = True
    examples = schema.pop("examples", None)
    if isinstance(examples, list) and examples and "example" not in schema:
        schema["example"] = examples[0]
    return schema


def _models(ops: Iterable[Operation]) -> list[Any]:
    found: list[Any] = [Problem]
    for op in ops:
        for model in (op.body, op.response, *(r.get("model") for r in op.responses.values())):
            if model is not None and model not in found:
                found.append(model)
    return found


def _problem(description: str) -> dict[str, Any]:
    return {"description": description, "content": _PROBLEM}


def _parameters(op: Operation) -> list[dict[str, Any]]:
    parameters = [
        {"name": name, "in": "path", "required": True, "schema": msgspec.json.schema(kind)}
        for name, kind in op.params.items()
    ]
    if op.query is not None:
        schema = msgspec.json.schema(op.query)
        query = schema.get("$defs", {}).get(op.query.__name__, schema)
        required = set(query.get("required", ()))
        for name, field in query["properties"].items():
            options = [o for o in field.pop("anyOf", ()) if o != {"type": "null"}]
            if options:  # an absent parameter is None: a query has no null to send
                field.update(options[0])
            parameters.append(
                {"name": name, "in": "query", "required": name in required, "schema": field}
            )
    return parameters


def _operation(op: Operation, refs: dict[Any, Any]) -> dict[str, Any]:
    answer: dict[str, Any] = {"description": "Successful Response"}
    if op.status != 204:
        schema = refs.get(op.response, {})
        answer["content"] = {op.media_type: {"schema": schema}}
    responses: dict[str, Any] = {str(op.status): answer}
    parameters = _parameters(op)
    if parameters or op.body is not None:
        responses["400"] = _problem("Invalid input (validation_error, invalid_json, ...)")
    for code in op.problems:
        responses.setdefault(str(code), _problem("Problem details"))
    if op.auth:
        responses.setdefault("401", _problem("unauthenticated"))
        responses.setdefault("403", _problem("forbidden (role)"))
    if op.rate_limited:
        for code, response in RATE_LIMIT_RESPONSES.items():
            responses[str(code)] = _problem(response["description"])
    for code, response in op.responses.items():
        described = {"description": response.get("description", "")}
        if response.get("model") is not None:
            described["content"] = {"application/json": {"schema": refs[response["model"]]}}
        if response.get("content"):  # other media types it may answer with (by Accept)
            described.setdefault("content", {}).update(response["content"])
        responses[str(code)] = described
    document: dict[str, Any] = {"tags": [op.tag], "summary": op.summary, "operationId": op.name}
    if op.description:
        document["description"] = op.description
    if parameters:
        document["parameters"] = parameters
    if op.body is not None:
        document["requestBody"] = {
            "required": op.body_required,
            "content": {"application/json": {"schema": refs[op.body]}},
        }
    document["responses"] = responses
    if op.auth:
        document["security"] = [{"HTTPBearer": []}]
    return document


def document(ops: list[Operation], title: str, version: str, description: str) -> dict[str, Any]:
    """The OpenAPI 3.0 document of `ops` (the version the pinned Swagger UI renders)."""
    models = _models(ops)
    refs, components = msgspec.json.schema_components(models, ref_template=_REF)
    by_model = dict(zip(models, refs, strict=True))
    paths: dict[str, dict[str, Any]] = {}
    for op in ops:
        paths.setdefault(op.path, {})[op.method.lower()] = _operation(op, by_model)
    result: dict[str, Any] = {
        "openapi": "3.0.3",
        "info": {"title": title, "version": version, "description": description},
        "paths": paths,
        "components": {"schemas": components, "securitySchemes": {"HTTPBearer": _BEARER}},
    }
    tidy: dict[str, Any] = _tidy(result)
    return tidy


#: Swagger UI's own defaults do the rest (the `apis` preset, `BaseLayout`): the bundle alone
#: serves them, without the standalone preset's script.
_INIT = """
const ui = SwaggerUIBundle({
    url: '/openapi.json',
    dom_id: '#swagger-ui',
    deepLinking: true,
    showExtensions: true,
    showCommonExtensions: true,
})"""


def docs_page(title: str) -> bytes:
    return f"""<!DOCTYPE html>
<html>
<head>
<link type="text/css" rel="stylesheet" href="{ASSETS_PATH}/swagger-ui.css">
<link rel="shortcut icon" href="{ASSETS_PATH}/favicon-32x32.png">
<title>{title} - Swagger UI</title>
</head>
<body>
<div id="swagger-ui">
</div>
<script src="{ASSETS_PATH}/swagger-ui-bundle.js"></script>
<script>{_INIT}</script>
</body>
</html>
""".encode()


def docs_policy() -> str:
    """What the /docs page needs, nothing more: its script and stylesheet from this origin,
    its inline bootstrap (by hash: no other inline script runs), inline styles and `data:`
    icons (Swagger UI sets both from its bundle), and fetches of /openapi.json."""
    digest = base64.b64encode(hashlib.sha256(_INIT.encode()).digest()).decode()
    return (
        f"default-src 'none'; script-src 'self' 'sha256-{digest}'; "
        "style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    )
