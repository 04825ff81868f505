"""The OpenAPI document as the API really answers (400 problems, never FastAPI's 422), and
the Content-Security-Policy of the /docs page that shows it."""

from __future__ import annotations

import base64
import hashlib
import re
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi

from banking_es.api.schemas import Problem

_PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}


def _is_fastapi_validation(response: dict[str, Any] | None) -> bool:
    """FastAPI's own 422 (HTTPValidationError), not a business 422 a route declared."""
    if response is None:
        return False
    schemas = [c.get("schema", {}) for c in response.get("content", {}).values()]
    return any(str(s.get("$ref", "")).endswith("/HTTPValidationError") for s in schemas)


def install(app: FastAPI) -> None:
    def custom_openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.pop("HTTPValidationError", None)
        components.pop("ValidationError", None)
        components["Problem"] = Problem.model_json_schema(
            ref_template="#/components/schemas/{model}"
        )
        for defs_name, definition in components["Problem"].pop("$defs", {}).items():
            components.setdefault(defs_name, definition)
        for route, path in schema.get("paths", {}).items():
            for operation in path.values():
                responses = operation.setdefault("responses", {})
                had_422_validation = _is_fastapi_validation(responses.get("422"))
                if had_422_validation:
                    del responses["422"]  # we answer 400 validation_error instead
                if operation.get("security"):
                    responses.setdefault("401", {"description": "unauthenticated"})
                    responses.setdefault("403", {"description": "forbidden (role)"})
                for code, response in list(responses.items()):
                    # /health/ready's 503 is its own JSON body, not a problem
                    if code.startswith(("4", "5")) and not route.startswith("/health"):
                        response["content"] = {"application/problem+json": {"schema": _PROBLEM_REF}}
                        response.setdefault("description", "Problem details")
                if (
                    had_422_validation
                    or operation.get("parameters")
                    or operation.get("requestBody")
                ):
                    responses.setdefault(
                        "400",
                        {
                            "description": "Invalid input (validation_error, invalid_json, ...)",
                            "content": {"application/problem+json": {"schema": _PROBLEM_REF}},
                        },
                    )
        app.openapi_schema = schema
        return schema

    app.openapi = custom_openapi  # type: ignore[method-assign]


#: Swagger UI's bundle and stylesheet come from this CDN (until they are served locally).
DOCS_CDN = "https://cdn.jsdelivr.net"


def docs_policy(app: FastAPI) -> str:
    """What the /docs page needs, nothing more: its CDN script and stylesheet, its inline
    bootstrap (by hash: no other inline script runs), inline styles and `data:` icons (Swagger
    UI sets both from its bundle), its favicon, and fetches of /openapi.json on this origin."""
    page = get_swagger_ui_html(  # the page FastAPI serves at app.docs_url (no root_path)
        openapi_url=app.openapi_url or "",
        title=f"{app.title} - Swagger UI",
        oauth2_redirect_url=app.swagger_ui_oauth2_redirect_url,
        init_oauth=app.swagger_ui_init_oauth,
        swagger_ui_parameters=app.swagger_ui_parameters,
    ).body
    hashes = " ".join(
        f"'sha256-{base64.b64encode(hashlib.sha256(script).digest()).decode()}'"
        for script in re.findall(rb"<script>(.*?)</script>", bytes(page), re.S)
    )
    return (
        f"default-src 'none'; script-src {DOCS_CDN} {hashes}; "
        f"style-src {DOCS_CDN} 'unsafe-inline'; img-src 'self' data: https://fastapi.tiangolo.com; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    )
