"""API documents: Swagger UI at ``/docs`` (no CDN) and the YAML path (docs/contract.md §1.2)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import swagger_ui
import yaml
from litestar import Controller, MediaType, Request, Response, get
from litestar.static_files import create_static_files_router

__all__ = ["DocsController", "swagger_static_router"]

SWAGGER_STATIC_DIR = Path(swagger_ui.__file__).parent / "static"

_SWAGGER_HTML = """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>c2s-api - API docs</title>
  <link rel="stylesheet" href="/docs/static/swagger-ui.css">
  <link rel="icon" type="image/png" href="/docs/static/favicon-32x32.png">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="/docs/static/swagger-ui-bundle.js"></script>
  <script src="/docs/static/swagger-ui-standalone-preset.js"></script>
  <script src="/docs/static/c2s-init.js"></script>
</body>
</html>
"""

# Kept in a separate file so a strict Content-Security-Policy (no inline scripts) can apply.
_SWAGGER_INIT = """window.onload = function () {
  window.ui = SwaggerUIBundle({
    url: "/schema/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
    layout: "StandaloneLayout",
    validatorUrl: null
  });
};
"""

_DOC_OPT = {"exclude_from_auth": True, "exclude_from_rate_limit": True, "skip_metrics": True}


class DocsController(Controller):
    """Human and machine readable API documents."""

    path = "/"
    include_in_schema = False
    opt = _DOC_OPT

    @get("/docs", media_type=MediaType.HTML, sync_to_thread=False)
    def swagger(self) -> str:
        return _SWAGGER_HTML

    @get("/docs/static/c2s-init.js", media_type="application/javascript", sync_to_thread=False)
    def swagger_init(self) -> str:
        return _SWAGGER_INIT

    @get("/api-docs/openapi.yml", media_type="text/yaml", sync_to_thread=False)
    def openapi_yaml(self, request: Request[Any, Any, Any]) -> Response[str]:
        schema = request.app.openapi_schema.to_schema()
        return Response(
            yaml.safe_dump(schema, sort_keys=False, allow_unicode=True), media_type="text/yaml"
        )


def swagger_static_router() -> Any:  # Any: Litestar's router type differs across 2.x
    """Serve the Swagger UI assets shipped by the installed ``swagger-ui-py`` package."""
    return create_static_files_router(
        path="/docs/static",
        directories=[SWAGGER_STATIC_DIR],
        include_in_schema=False,
        opt=_DOC_OPT,
        name="swagger-static",
    )
