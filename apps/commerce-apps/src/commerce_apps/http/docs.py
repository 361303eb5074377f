"""The OpenAPI 3.1 document, generated from the pydantic models, and Swagger UI served locally."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import swagger_ui_bundle
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, JsonSchemaValue, models_json_schema
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from commerce_apps.http.problems import PROBLEM_JSON

REF = "#/components/schemas/{model}"
Documented = type[BaseModel] | tuple[type[BaseModel]] | None
"""What a status answers with: a model, a list of one (see ``list_of``), or no body."""
Refs = Mapping[tuple[Any, JsonSchemaMode], JsonSchemaValue]  # keyed as models_json_schema keys


class ProblemDocument(BaseModel):
    """RFC 9457 problem details."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    errors: list[dict[str, str]] | None = None


@dataclass(frozen=True)
class Operation:
    """One documented endpoint: its request model, a model (or list of one) per status, and
    the headers a status may carry (OpenAPI header objects by name)."""

    method: str
    path: str
    summary: str
    responses: Mapping[int, Documented]
    request: type[BaseModel] | None = None
    parameters: Sequence[Mapping[str, Any]] = field(default_factory=tuple)
    headers: Mapping[int, Mapping[str, Any]] = field(default_factory=dict)


def _models(operations: Sequence[Operation]) -> list[tuple[type[BaseModel], JsonSchemaMode]]:
    """Each model once per mode: request bodies as validated, responses as serialized."""
    pairs: list[tuple[type[BaseModel], JsonSchemaMode]] = [(ProblemDocument, "serialization")]
    for op in operations:
        if op.request is not None:
            pairs.append((op.request, "validation"))
        for item in op.responses.values():
            model = item[0] if isinstance(item, tuple) else item
            if model is not None:
                pairs.append((model, "serialization"))
    return list(dict.fromkeys(pairs))


def _content(item: Documented, status: int, refs: Refs) -> Any:
    if status >= 400:
        return {PROBLEM_JSON: {"schema": refs[ProblemDocument, "serialization"]}}
    if item is None:
        return None
    if isinstance(item, tuple):
        schema = {"type": "array", "items": refs[item[0], "serialization"]}
    else:
        schema = refs[item, "serialization"]
    return {"application/json": {"schema": schema}}


def _path_parameters(path: str) -> list[dict[str, Any]]:
    """Each ``{name}`` of the path, declared as OpenAPI requires (every one here is an id)."""
    return [
        {
            "name": name,
            "in": "path",
            "required": True,
            "schema": {"type": "string", "format": "uuid"},
        }
        for name in re.findall(r"\{(\w+)\}", path)
    ]


def openapi_document(title: str, version: str, operations: Sequence[Operation]) -> dict[str, Any]:
    """Build the document from the models.

    A request body is described as it is validated (bounds, minimum price), a response as it
    is written: the serialization form alone would drop the request's constraints.
    """
    refs, definitions = models_json_schema(_models(operations), ref_template=REF, by_alias=True)
    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        entry: dict[str, Any] = {"summary": op.summary, "responses": {}}
        parameters = [*_path_parameters(op.path), *op.parameters]
        if parameters:
            entry["parameters"] = parameters
        if op.request is not None:
            entry["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": refs[op.request, "validation"]}},
            }
        # Every route reads a database: 503 when it is unavailable (problems.on_unavailable).
        for status, item in {**op.responses, 503: None}.items():
            response: dict[str, Any] = {"description": str(status)}
            content = _content(item, status, refs)
            if content is not None:
                response["content"] = content
            if status in op.headers:
                response["headers"] = dict(op.headers[status])
            entry["responses"][str(status)] = response
        paths.setdefault(op.path, {})[op.method.lower()] = entry
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {"schemas": definitions.get("$defs", {})},
    }


_SWAGGER_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<link rel="stylesheet" href="/docs/assets/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="/docs/assets/swagger-ui-bundle.js"></script>
<script src="/docs/assets/swagger-ui-standalone-preset.js"></script>
<script src="/docs/init.js"></script>
</body></html>"""

# validatorUrl: null, else Swagger UI sends the document to validator.swagger.io for a badge
# whenever it is served from a host other than localhost.
_SWAGGER_INIT = """window.onload = () => {
  window.ui = SwaggerUIBundle({url: "/openapi.json", dom_id: "#swagger-ui",
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
    layout: "StandaloneLayout"});
};"""


def docs_routes(title: str, version: str, operations: Sequence[Operation]) -> list[BaseRoute]:
    """``/openapi.json`` and ``/docs`` (Swagger UI from the swagger-ui-bundle package, no CDN)."""
    document = openapi_document(title, version, operations)

    async def openapi(request: Request) -> JSONResponse:
        return JSONResponse(document)

    async def docs(request: Request) -> HTMLResponse:
        return HTMLResponse(_SWAGGER_PAGE.format(title=title))

    async def init(request: Request) -> HTMLResponse:
        return HTMLResponse(_SWAGGER_INIT, media_type="application/javascript")

    return [
        Route("/openapi.json", openapi, methods=["GET"]),
        Route("/docs", docs, methods=["GET"]),
        Route("/docs/init.js", init, methods=["GET"]),
        Mount("/docs/assets", StaticFiles(directory=swagger_ui_bundle.swagger_ui_path)),
    ]


def list_of(model: type[BaseModel]) -> tuple[type[BaseModel]]:
    """Mark a response as a JSON array of ``model``."""
    return (model,)


__all__ = ["Operation", "ProblemDocument", "docs_routes", "list_of"]
