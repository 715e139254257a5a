"""A resumable-upload server: tus 1.0.0 and draft-ietf-httpbis-resumable-upload into a directory.

``create_app(DIR, **options)`` is a plain ASGI application (run it with uvicorn, or mount
it in Starlette or FastAPI); ``onward serve DIR`` runs it under uvicorn. The offset it
reports is always durable, finished uploads are promoted atomically with their metadata
beside them, and a completion hook runs for each. Details: docs/SERVER.md.
"""

from __future__ import annotations

from .app import UploadServer, create_app
from .options import AuthRequest, FinishedUpload, ServerOptions

__all__ = ["AuthRequest", "FinishedUpload", "ServerOptions", "UploadServer", "create_app"]
