"""``canon serve``: an HTTP API and web view over a zoo.

:func:`create_app` builds the FastAPI application; ``canon serve`` runs it
with uvicorn. The service adds no mathematics: it calls the zoo API, answers
from the zoo's caches, and runs uncached work as jobs kept in the zoo's index.
"""

from canon.service._app import create_app as create_app

__all__ = ["create_app"]
