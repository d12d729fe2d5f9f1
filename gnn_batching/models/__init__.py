"""Models: name -> Flax module mapping a padded GraphsTuple to (n_graph,) predictions."""

from __future__ import annotations

from dataclasses import dataclass

from gnn_batching.errors import ConfigError
from gnn_batching.models.mpnn import MPEU, SchNet
from gnn_batching.models.painn import PaiNN

MODELS = {"mpeu": MPEU, "schnet": SchNet, "painn": PaiNN}
# the study's settings; PaiNN's width/RBF/cutoff differ from the message-passing pair
DEFAULTS = {
    "mpeu": {"latent": 64, "steps": 3, "n_rbf": 150},
    "schnet": {"latent": 64, "steps": 3, "n_rbf": 150},
    "painn": {"latent": 256, "steps": 3, "n_rbf": 20, "cutoff": 6.0},
}


@dataclass(frozen=True)
class ModelConfig:
    """The ``model`` config section. ``None`` fields take the model's study default."""

    name: str = "schnet"
    latent: int | None = None
    steps: int | None = None
    n_rbf: int | None = None
    cutoff: float | None = None

    def __post_init__(self) -> None:
        if self.name not in MODELS:
            raise ConfigError(f"model.name: unknown model {self.name!r}; choose one of {', '.join(MODELS)}")
        if self.cutoff is not None and self.name != "painn":
            raise ConfigError("model.cutoff applies to painn only")
        for key in ("latent", "steps", "n_rbf"):
            v = getattr(self, key)
            if v is not None and v < 1:
                raise ConfigError(f"model.{key} must be >= 1, got {v}")


def make_model(cfg: ModelConfig, n_species: int):
    kwargs = dict(DEFAULTS[cfg.name])
    for key in ("latent", "steps", "n_rbf", "cutoff"):
        if getattr(cfg, key) is not None:
            kwargs[key] = getattr(cfg, key)
    return MODELS[cfg.name](n_species=n_species, **kwargs)


__all__ = ["MODELS", "MPEU", "ModelConfig", "PaiNN", "SchNet", "make_model"]
