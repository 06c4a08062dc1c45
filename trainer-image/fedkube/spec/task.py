"""The learning the job author chooses: the model, local training, and the strategy."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from fedkube.spec.base import IMPORT_PATH, _Model, cel


class ModelSpec(_Model):
    """Which model to train: a built-in one by name, or the user's own by import path."""

    model_config = cel(
        (
            "has(self.name) != has(self.importPath)",
            "give exactly one of name (a built-in model) or importPath",
            None,
        )
    )

    name: Literal["logistic_regression", "mlp", "cnn"] | None = Field(
        default=None, description="A built-in model."
    )
    import_path: Annotated[str, Field(pattern=IMPORT_PATH, max_length=256)] | None = Field(
        default=None,
        description="`package.module:factory` returning a torch.nn.Module; called as "
        "factory(num_features=..., num_classes=..., **params).",
    )
    hidden_sizes: list[Annotated[int, Field(ge=1, le=65536)]] = Field(
        default_factory=lambda: [32], max_length=16, description="Hidden layer widths (mlp)."
    )
    params: dict[str, int | float | str | bool] = Field(
        default_factory=dict, max_length=64, description="Keyword arguments for importPath."
    )

    @model_validator(mode="after")
    def _one_source(self) -> ModelSpec:
        if (self.name is None) == (self.import_path is None):
            raise ValueError("give exactly one of `name` (a built-in model) or `importPath`")
        return self


class FeatureSpec(_Model):
    """One input column as the consortium agreed it: every site's file must have it."""

    name: str = Field(min_length=1, max_length=256, description="The column's name in each file.")
    type: Literal["number", "integer"] = Field(
        default="number",
        description="number: any numeric value; integer: whole numbers only.",
    )


class TaskSpec(_Model):
    """What each site does with the global model in one round."""

    model: ModelSpec
    local_epochs: int = Field(
        default=1, ge=1, le=1000, description="Passes over its data each site makes a round."
    )
    batch_size: int = Field(default=32, ge=1, le=65536, description="Records per local step.")
    learning_rate: float = Field(
        default=0.01, gt=0, le=10, description="The sites' local optimiser's step size."
    )
    optimizer: Literal["sgd", "adam"] = Field(
        default="sgd", description="The sites' local optimiser: sgd or adam."
    )
    momentum: float = Field(default=0.0, ge=0, lt=1, description="SGD momentum.")
    seed: int = Field(
        default=0,
        ge=0,
        le=2**31 - 1,
        description="Seeds the first model, each site's shuffling and noise: a run repeats.",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto",
        description="Where each site trains: cuda (its pod's GPU; a site without one refuses "
        "the task), cpu, or auto (the GPU when there is one).",
    )
    mixed_precision: bool = Field(
        default=False,
        description="Train and score in bfloat16 autocast on a GPU (weights and updates stay "
        "float32); no effect on CPU.",
    )
    num_features: int | None = Field(
        default=None, ge=1, le=10_000_000, description="Input width; required with file data."
    )
    num_classes: int | None = Field(
        default=None, ge=2, le=100_000, description="Label count; required with file data."
    )
    features: list[FeatureSpec] | None = Field(
        default=None,
        max_length=100_000,
        description="The input columns, in order, with their types. Each site's file is "
        "checked against them before round one; without them the sites are checked against "
        "each other.",
    )
    labels: list[Annotated[str, Field(min_length=1, max_length=256)]] | None = Field(
        default=None,
        max_length=100_000,
        description="The label values, class 0 first. Without it the labels are the class "
        "numbers 0..numClasses-1, or (without secure aggregation) the sorted values the "
        "sites report.",
    )

    @model_validator(mode="after")
    def _columns_agree(self) -> TaskSpec:
        names = [f.name for f in self.features or []]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"task.features repeats {', '.join(repeated)}")
        if self.features is not None and self.num_features not in (None, len(self.features)):
            raise ValueError(
                f"task.numFeatures is {self.num_features} but task.features lists "
                f"{len(self.features)} columns; give one or make them agree"
            )
        labels = self.labels or []
        if len(set(labels)) != len(labels):
            raise ValueError("task.labels must not repeat a value")
        if self.labels is not None and self.num_classes not in (None, len(self.labels)):
            raise ValueError(
                f"task.numClasses is {self.num_classes} but task.labels lists "
                f"{len(self.labels)} values; give one or make them agree"
            )
        if self.labels is not None and len(self.labels) < 2:
            raise ValueError("task.labels needs at least two values")
        return self

    def input_width(self) -> int | None:
        return self.num_features or (len(self.features) if self.features else None)

    def class_count(self) -> int | None:
        return self.num_classes or (len(self.labels) if self.labels else None)

    train_function: Annotated[str, Field(pattern=IMPORT_PATH, max_length=256)] | None = Field(
        default=None,
        description="`package.module:train` replacing the built-in loop; called as "
        "train(model, features, labels, config) and returns a dict of metrics.",
    )


_SERVER_LR = (
    "fedavgm, scaffold (default 1.0), fedadam, fedyogi, fedadagrad (default 0.01): the "
    "server's step along the mean update."
)


class FedAvgSpec(_Model):
    """FedAvg: the sample-weighted mean of the sites' models."""

    name: Literal["fedavg"] = Field(default="fedavg", description="The strategy.")


class FedProxSpec(_Model):
    """FedProx: FedAvg plus a proximal term mu/2 ||w - w_global||^2 in each site's loss."""

    name: Literal["fedprox"] = Field(description="The strategy.")
    mu: float = Field(
        default=0.01, ge=0, le=100, description="fedprox: the proximal term's weight."
    )


class FedAvgMSpec(_Model):
    """FedAvgM: server momentum on the mean update."""

    name: Literal["fedavgm"] = Field(description="The strategy.")
    server_learning_rate: float = Field(default=1.0, gt=0, le=100, description=_SERVER_LR)
    momentum: float = Field(default=0.9, ge=0, lt=1, description="fedavgm: server momentum.")


class FedOptSpec(_Model):
    """FedAdam, FedYogi, FedAdagrad (Reddi et al. 2021): an adaptive server optimiser that
    treats the mean update as a pseudo-gradient."""

    name: Literal["fedadam", "fedyogi", "fedadagrad"] = Field(description="The strategy.")
    server_learning_rate: float = Field(default=0.01, gt=0, le=100, description=_SERVER_LR)
    beta1: float = Field(
        default=0.9, ge=0, lt=1, description="fedadam, fedyogi: the first moment's decay."
    )
    beta2: float = Field(
        default=0.99, ge=0, lt=1, description="fedadam, fedyogi: the second moment's decay."
    )
    tau: float = Field(default=1e-3, gt=0, le=10, description="Adaptivity: added to sqrt(v).")


class ScaffoldSpec(_Model):
    """SCAFFOLD (Karimireddy et al. 2020): control variates correct each site's drift."""

    name: Literal["scaffold"] = Field(description="The strategy.")
    server_learning_rate: float = Field(default=1.0, gt=0, le=100, description=_SERVER_LR)


StrategySpec = Annotated[
    FedAvgSpec | FedProxSpec | FedAvgMSpec | FedOptSpec | ScaffoldSpec,
    Field(discriminator="name"),
]
