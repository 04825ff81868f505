"""The OpenAPI document as the API really answers: 400 problems, never FastAPI's 422."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from banking_es.api.schemas import Problem

_PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}


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
        for path in schema.get("paths", {}).values():
            for operation in path.values():
                responses = operation.setdefault("responses", {})
                had_422_validation = responses.pop("422", None) is not None
                if operation.get("security"):
                    responses.setdefault("401", {"description": "unauthenticated"})
                    responses.setdefault("403", {"description": "forbidden (role)"})
                for code, response in list(responses.items()):
                    if code.startswith(("4", "5")):
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
