"""The ``model`` section: a registered model, its form and its hyperparameters."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from gnn_batching.config.values import coerce, plain
from gnn_batching.errors import ConfigError


@dataclass(frozen=True, init=False)
class ModelConfig:
    """The ``model`` section: a registered model's name, its form and its hyperparameters.

    Hyperparameters are the model's module fields (``model.<field>``); an unset one takes the
    module's default (the study's settings for the built-in models: width 64, 3 steps, 150 RBFs;
    PaiNN 256, 3, 20 and a 6.0 Angstrom cutoff). ``ModelConfig(name="schnet", latent_size=8)``.

    Attributes:
        name: a registered model (:func:`gnn_batching.plugins.model_names`).
        form: ``sparse`` (gather/scatter over the edge list) or ``dense`` (an n x n neighbourhood
            per graph; models registered with a dense form, ``batching.method: autobatch`` only).
        params: the hyperparameters set in the config (the others keep the module's defaults).
    """

    name: str = "schnet"
    form: str = "sparse"
    params: dict = field(default_factory=dict)

    def __init__(self, name: str = "schnet", form: str = "sparse", **params: Any) -> None:
        from gnn_batching.plugins import model_entry, model_field_types, model_hyperparameters

        object.__setattr__(self, "name", name)
        object.__setattr__(self, "form", form)
        entry = model_entry(name)
        if form not in ("sparse", "dense"):
            raise ConfigError(f"model.form must be 'sparse' or 'dense', got {form!r}")
        if form == "dense" and entry.dense is None:
            raise ConfigError(f"model.form: dense exists for {', '.join(_dense_names())} only (not {name!r})")
        defaults, types_ = model_hyperparameters(name), model_field_types(name)
        checked = {}
        for k, v in params.items():
            if v is None and k in LEGACY_MODEL_KEYS:
                continue  # a config saved when every built-in key was in the section (null: default)
            if k not in defaults:
                raise ConfigError(f"model.{k}: not a hyperparameter of {name!r} ({entry.cls.__qualname__}); its "
                                  f"hyperparameters: {', '.join(defaults) or 'none'}")
            if v is None:
                continue  # null: the module's default
            v = coerce(v, types_[k], f"model.{k}")
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k in POSITIVE_HYPERPARAMETERS and v < 1:
                raise ConfigError(f"model.{k} must be >= 1, got {v}")
            checked[k] = v
        missing = [k for k, d in defaults.items() if d is dataclasses.MISSING and k not in checked]
        if missing:
            raise ConfigError(f"model.{missing[0]}: {name!r} has no default for it; set it in the model section")
        object.__setattr__(self, "params", checked)

    def __getattr__(self, key: str) -> Any:
        # a hyperparameter as an attribute (``cfg.model.latent_size``): set, else the module default
        if key.startswith("_") or key in ("name", "form", "params"):
            raise AttributeError(key)
        hp = self.hyperparameters()
        if key in hp:
            return hp[key]
        raise AttributeError(f"model {self.name!r} has no hyperparameter {key!r}")

    def hyperparameters(self) -> dict:
        """The model's keyword arguments: the module's defaults, overridden by the set ones."""
        from gnn_batching.plugins import model_hyperparameters

        out = dict(model_hyperparameters(self.name))
        out.update(self.params)
        return out

    def to_dict(self) -> dict:
        """The section as written in a config file (hyperparameters flat beside ``name``)."""
        return {"name": self.name, "form": self.form, **plain(self.params)}


# keys every saved model section once had (null when unset), accepted as null for any model
LEGACY_MODEL_KEYS = ("latent_size", "message_passing_steps", "n_rbf", "cutoff")
# integer/real hyperparameters of the built-in models that count something (>= 1)
POSITIVE_HYPERPARAMETERS = ("latent_size", "message_passing_steps", "n_rbf")


def _dense_names() -> list[str]:
    """Registered models with a dense form."""
    from gnn_batching.plugins import model_entry, model_names

    return [n for n in model_names() if model_entry(n).dense is not None]
