"""OpenAI-compatible HTTP server over pybonsai.Engine (the `server` extra: Starlette + uvicorn).

    pybonsai serve -m bonsai-8b --parallel 4 --port 8000
    python -m pybonsai.server -m ./model.gguf --api-key SECRET
"""
from __future__ import annotations

__all__ = ["create_app", "ServerSettings", "main"]


def __getattr__(name: str):
    if name in ("create_app", "ServerSettings"):
        from . import app
        return getattr(app, name)
    if name == "main":
        from .serve import main
        return main
    raise AttributeError(f"module 'pybonsai.server' has no attribute {name!r}")
