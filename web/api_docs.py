"""The API's documentation at /docs: Swagger UI 5 (which reads OpenAPI 3.1) from the assets the `fastapi-offline`
package ships, served by the observatory itself, so that it works on a machine without internet and under the
portal's own script policy."""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import APIRouter, Request

from web.render import render

API_DOCS_ASSETS = "/api-docs-assets"
swagger_ui_path = Path(fastapi_offline.__file__).parent / "static"
router = APIRouter(include_in_schema=False)
__all__ = ["API_DOCS_ASSETS", "router", "swagger_ui_path"]


@router.get("/docs")
def api_docs(request: Request):
    return render(request, "api_docs.html", {"assets": API_DOCS_ASSETS})
