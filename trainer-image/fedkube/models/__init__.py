"""Models (torch): built-ins and the user's own through an import path."""

from fedkube.models.registry import (
    build_model,
    import_object,
    initial_params,
    load_params,
    model_params,
)

__all__ = ["build_model", "import_object", "initial_params", "load_params", "model_params"]
