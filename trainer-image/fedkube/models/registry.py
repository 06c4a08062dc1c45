"""Building the job's model: a built-in one by name, or the user's own by import path."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from fedkube.errors import ModelError
from fedkube.models.builtin import SmallCNN, logistic_regression, mlp
from fedkube.models.plugins import NO_PLUGINS, PluginPolicy
from fedkube.spec.task import TaskSpec
from fedkube.wire.tensors import Params


def import_object(path: str, field: str, plugins: PluginPolicy) -> Any:
    """Import ``package.module:name`` if the site allows it; ModelError naming the manifest
    field on failure."""
    plugins.check(path, field)
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # an import can fail with anything the module raises
        raise ModelError(
            f"{field}: cannot import module {module_name!r} ({type(e).__name__}: {e}); "
            "install it in the trainer image or put it on PYTHONPATH"
        ) from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ModelError(f"{field}: module {module_name!r} has no attribute {attr!r}") from None


def build_model(
    task: TaskSpec, num_features: int, num_classes: int, plugins: PluginPolicy = NO_PLUGINS
) -> nn.Module:
    """The same seed gives the same initial weights in the aggregator and every trainer."""
    torch.manual_seed(task.seed)
    spec = task.model
    if spec.name == "logistic_regression":
        return logistic_regression(num_features, num_classes)
    if spec.name == "mlp":
        return mlp(num_features, num_classes, spec.hidden_sizes)
    if spec.name == "cnn":
        return SmallCNN(num_features, num_classes)
    assert spec.import_path is not None
    factory: Callable[..., Any] = import_object(
        spec.import_path, "spec.task.model.importPath", plugins
    )
    try:
        model = factory(num_features=num_features, num_classes=num_classes, **spec.params)
    except Exception as e:
        raise ModelError(
            f"spec.task.model.importPath: {spec.import_path} raised {type(e).__name__}: {e}"
        ) from None
    if not isinstance(model, nn.Module):
        raise ModelError(
            f"spec.task.model.importPath: {spec.import_path} returned {type(model).__name__}, "
            "not a torch.nn.Module"
        )
    return model


def model_params(model: nn.Module) -> Params:
    """The floating-point state that is federated (weights and float buffers), as numpy views.

    Integer buffers (such as BatchNorm's batch counter) stay local to each site.
    """
    return {
        name: t.detach().cpu().numpy()
        for name, t in model.state_dict().items()
        if t.is_floating_point()
    }


def load_params(model: nn.Module, params: Params) -> None:
    state = model.state_dict()
    with torch.no_grad():
        for name, value in params.items():
            state[name].copy_(torch.from_numpy(np.ascontiguousarray(value)))


def initial_params(
    task: TaskSpec, num_features: int, num_classes: int, plugins: PluginPolicy = NO_PLUGINS
) -> Params:
    # The arrays share the model's storage and keep it alive: no second copy is made.
    return model_params(build_model(task, num_features, num_classes, plugins))
