"""A whole run config: ``name``, ``modules`` and the four sections."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from gnn_batching.config.batching import BatchingConfig
from gnn_batching.config.dataset import DatasetSpec
from gnn_batching.config.model import ModelConfig
from gnn_batching.config.train import TrainConfig
from gnn_batching.config.values import plain
from gnn_batching.errors import ConfigError


@dataclass(frozen=True)
class RunConfig:
    """One run: a dataset, a model, a batching method and training settings."""
    name: str = "run"
    modules: tuple = ()  # the user's files/modules imported first (they register datasets, models, methods)
    dataset: DatasetSpec = field(default_factory=DatasetSpec)
    model: ModelConfig = field(default_factory=ModelConfig)
    batching: BatchingConfig = field(default_factory=BatchingConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        if self.model.form == "dense" and self.batching.method != "autobatch":
            raise ConfigError("model.form: dense runs one graph at a time; it needs batching.method: autobatch "
                              f"(got {self.batching.method!r})")

    def to_dict(self) -> dict:
        """The configuration as plain data (YAML/JSON-ready)."""
        out = {"name": self.name}
        if self.modules:
            out["modules"] = list(self.modules)
        for sec in SECTIONS:
            value = getattr(self, sec)
            out[sec] = value.to_dict() if hasattr(value, "to_dict") else plain(dataclasses.asdict(value))
        return out


SECTIONS = {"dataset": DatasetSpec, "model": ModelConfig, "batching": BatchingConfig, "train": TrainConfig}
