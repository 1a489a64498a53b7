"""Isotope's HTTP API (FastAPI): the guide's endpoints, the chat API, health, readiness, metrics.

``create_app(settings=None)`` builds the application; ``isotope serve`` runs it with uvicorn.
"""

from app.api.app import create_app

__all__ = ["create_app"]
