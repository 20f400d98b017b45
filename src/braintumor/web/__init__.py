"""The web application: upload MRI, watch progress, view, correct, measure, download.

``create_app(data_dir, ...)`` builds the FastAPI app; ``braintumor serve`` runs it with
uvicorn in one process. Nothing is fetched from the network at run time: the viewer
(NiiVue) is vendored under ``static/vendor``.
"""

from __future__ import annotations

from typing import Any


def create_app(*args: Any, **kwargs: Any) -> Any:
    """Build the app (see :func:`braintumor.web.app.create_app`)."""
    from braintumor.web.app import create_app as _create

    return _create(*args, **kwargs)


__all__ = ["create_app"]
