"""The config schema: every section of a run config, validated strictly, in one module.

Sections: ``dataset`` (:class:`DatasetSpec`), ``model`` (:class:`ModelConfig`), ``batching``
(:class:`BatchingConfig`), ``train`` (:class:`TrainConfig`), gathered in :class:`RunConfig`.
An unknown key, a wrong type, an impossible value or a renamed key fails at load time, naming
the file and the dotted key. Overrides are ``key=value`` strings with dotted keys
(``batching.batch_size=64``); values are parsed as YAML (``true``, ``64``, ``[0.8, 0.1, 0.1]``,
``null``). Configs are frozen: facts derived from data live elsewhere (``data.json``).

This is a leaf module (it imports nothing else of the package but its errors), so every layer
can read its section from here.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import re
import types
import typing
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import yaml

from gnn_batching.errors import ConfigError

BUDGET_RULES = ("full", "paper", "fit-or-skip", "percentile")
# old key -> new key, per section: an old key is refused with the new name
RENAMED = {
    "train": {"steps": "num_train_steps"},
    "model": {"steps": "message_passing_steps", "latent": "latent_size"},
}


@dataclass(frozen=True)
class DatasetSpec:
    """What to load and how to turn it into graphs (the ``dataset`` config section)."""

    name: str = "qm9"
    source: str | None = None
    limit: int | None = None
    target: str | None = None
    graph: str | None = None
    cutoff: float = 5.0
    k: int = 12
    split: tuple = (0.8, 0.1, 0.1)
    split_seed: int = 0
    split_scheme: str = "ours"  # ours (numpy, each split sorted) | study (scikit-learn's, in split order)
    placement: str = "auto"  # auto | host | device: where padded batches are gathered (train/device_store.py)
    device_share: float = 0.25  # auto: the store goes to the device if it needs at most this share of free memory
    skip_bad: bool = False
    targets_csv: str | None = None
    download: bool = False
    dft_type: str | None = None
    ef_range: tuple | None = None
    module: str | None = None
    options: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Check everything that can be checked without reading data (messages name the key)."""
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"dataset.limit must be >= 1 (or null for every graph), got {self.limit}")
        if self.split_seed < 0:
            raise ConfigError(f"dataset.split_seed must be >= 0, got {self.split_seed}")
        check_split(self.split)
        if self.placement not in ("auto", "host", "device"):
            raise ConfigError(f"dataset.placement must be 'auto', 'host' or 'device', got {self.placement!r}")
        if not 0 < float(self.device_share) <= 1:
            raise ConfigError(f"dataset.device_share must be in (0, 1], got {self.device_share}")
        if self.split_scheme not in ("ours", "study"):
            raise ConfigError(f"dataset.split_scheme must be 'ours' or 'study', got {self.split_scheme!r}")
        sizes = all(isinstance(x, int) for x in self.split) and any(x > 1 for x in self.split)
        if self.split_scheme == "study" and sizes:
            raise ConfigError(f"dataset.split: split_scheme 'study' takes fractions, got sizes {list(self.split)}")
        if self.ef_range is not None and (len(self.ef_range) != 2 or not all(_is_number(x) for x in self.ef_range)):
            raise ConfigError(f"dataset.ef_range must be [low, high] in eV/atom, got {list(self.ef_range)}")



def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and np.isfinite(x)


def check_split(split: Any) -> None:
    """``dataset.split``: three fractions summing to 1, or three sizes (test may be -1 = the rest).

    Fractions must give every split a share > 0; an empty validation or test split would
    report a meaningless error, so it is refused here rather than evaluated.
    """
    if not isinstance(split, (list, tuple)) or len(split) != 3:
        raise ConfigError(f"dataset.split must be [train, val, test] (3 numbers), got {split!r}")
    if not all(_is_number(x) for x in split):
        raise ConfigError(f"dataset.split must hold 3 numbers, got {list(split)!r}")
    if all(isinstance(x, int) for x in split) and any(x > 1 for x in split):
        a, b, c = split
        if a < 1 or b < 1 or (c < 1 and c != -1):
            raise ConfigError(f"dataset.split: sizes {list(split)} must be >= 1 (test may be -1 = the rest)")
        return
    if min(split) <= 0 or max(split) >= 1 or abs(sum(split) - 1.0) > 1e-6:
        raise ConfigError(f"dataset.split: fractions {list(split)} must each be in (0, 1) and sum to 1")


@dataclass(frozen=True)
class BatchingConfig:
    """The ``batching`` config section."""

    method: str = "dynamic"
    batch_size: int = 32
    budget: str = "full"  # dynamic only: full | paper | fit-or-skip | percentile
    success_ratio: float = 0.99  # fit-or-skip
    percentile: float = 90.0  # percentile
    oversize: str = "error"  # error | skip: a graph larger than a fixed budget
    skip_overflow: bool = False  # fit-or-skip: drop (and count) groups that do not fit, TF-GNN style
    # hub (default, jraph's layout: all padding edges on one node) | spread (round-robin over the
    # padding nodes, TF-GNN's). On QM9/SchNet on a 2-core CPU the two were within run-to-run noise.
    pad_edges: str = "hub"
    prefetch: int | str = "auto"  # batches assembled ahead in a background thread (0 = off; auto: 2 on accelerators)
    buckets: int = 4  # buckets: padded shapes on the menu (compiled ahead); autobatch: per-graph buckets
    # packed only: graph slots per batch as a multiple of batch_size - 1 (nodes and edges bind first)
    graph_slack: float = 1.25
    # the study's training sequence (static-* and dynamic): one stream across passes, reshuffled
    # with Python's random per pass, every bs-th graph dropped by static batches (batching/study.py)
    study_order: bool = False
    # the study's first batch: it initialises the model and is not trained on (init); train: batch
    # 0 is trained on, as everywhere else here; auto: init under study_order, train otherwise
    study_first_batch: str = "auto"
    # autobatch: ragged (the one-graph model re-interpreted on the disjoint union of
    # autobatch_base's batches), vmap (per-graph buckets under jax.vmap) or auto (ragged when the
    # model can be proven to transform, else vmap, with the reason logged and in the summary)
    autobatch_mode: str = "auto"
    autobatch_base: str = "packed"
    # options a method declares for itself (its class's ``options``: name -> default), e.g. a
    # user's method; unset ones take the declared default
    options: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        from gnn_batching.plugins import method_class

        cls = method_class(self.method)
        declared = dict(getattr(cls, "options", {}) or {})
        for k, v in self.options.items():
            if k not in declared:
                raise ConfigError(f"batching.options.{k}: method {self.method!r} declares no such option; its options: "
                                  f"{', '.join(declared) or 'none'}")
            d = declared[k]
            if d is not None and not isinstance(d, bool) and isinstance(d, (int, float)):
                _coerce(v, type(d) if isinstance(d, float) else int, f"batching.options.{k}")
            elif isinstance(d, (bool, str)):
                _coerce(v, type(d), f"batching.options.{k}")
        if int(self.batch_size) < 2:
            raise ConfigError(f"batching.batch_size must be >= 2 (it counts the padding graph), got {self.batch_size}")
        if self.budget not in BUDGET_RULES:
            raise ConfigError(f"batching.budget: unknown rule {self.budget!r}; choose one of {', '.join(BUDGET_RULES)}")
        if self.oversize not in ("error", "skip"):
            raise ConfigError(f"batching.oversize must be 'error' or 'skip', got {self.oversize!r}")
        if self.pad_edges not in ("hub", "spread"):
            raise ConfigError(f"batching.pad_edges must be 'hub' or 'spread', got {self.pad_edges!r}")
        if self.prefetch != "auto" and (isinstance(self.prefetch, bool) or not isinstance(self.prefetch, int)
                                        or self.prefetch < 0):
            raise ConfigError(f"batching.prefetch must be 'auto' or an integer >= 0, got {self.prefetch!r}")
        if not 0 < self.percentile <= 100:
            raise ConfigError(f"batching.percentile must be in (0, 100], got {self.percentile}")
        if not 0 < self.success_ratio <= 1:
            raise ConfigError(f"batching.success_ratio must be in (0, 1], got {self.success_ratio}")
        if not 1 <= int(self.buckets) <= 64:
            raise ConfigError(f"batching.buckets must be in [1, 64] (shapes compiled ahead), got {self.buckets}")
        if self.autobatch_mode not in ("auto", "ragged", "vmap"):
            raise ConfigError(f"batching.autobatch_mode: 'auto', 'ragged' or 'vmap', not {self.autobatch_mode!r}")
        if self.autobatch_base == "autobatch" or method_class(self.autobatch_base, "batching.autobatch_base"
                                                              ).layout != "disjoint-union":
            raise ConfigError(f"batching.autobatch_base: {self.autobatch_base!r} does not batch graphs as one "
                              "disjoint union; name one that does (packed, dynamic, buckets, static-*)")
        if self.study_first_batch not in ("auto", "init", "train"):
            raise ConfigError(f"batching.study_first_batch: 'auto', 'init' or 'train', not {self.study_first_batch!r}")
        if self.study_first_batch == "init" and not self.study_order:
            raise ConfigError("batching.study_first_batch: init is the study's stream's rule; it needs "
                              "batching.study_order: true")
        if not 1.0 <= float(self.graph_slack) <= 8.0:
            raise ConfigError(f"batching.graph_slack must be in [1, 8], got {self.graph_slack}")


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
            v = _coerce(v, types_[k], f"model.{k}")
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
        return {"name": self.name, "form": self.form, **_plain(self.params)}


# keys every saved model section once had (null when unset), accepted as null for any model
LEGACY_MODEL_KEYS = ("latent_size", "message_passing_steps", "n_rbf", "cutoff")
# integer/real hyperparameters of the built-in models that count something (>= 1)
POSITIVE_HYPERPARAMETERS = ("latent_size", "message_passing_steps", "n_rbf")


def _dense_names() -> list[str]:
    from gnn_batching.plugins import model_entry, model_names

    return [n for n in model_names() if model_entry(n).dense is not None]


@dataclass(frozen=True)
class TrainConfig:
    """The ``train`` section."""

    num_train_steps: int = 1000
    seed: int = 0  # model init AND training data order; repeats must differ here
    lr: float = 1e-4
    decay_steps: int = 100_000  # staircase exponential decay, as in the study
    decay_rate: float = 0.96
    staircase: bool = True
    eval_every: int = 0  # 0: evaluate only at the end
    eval_splits: tuple = ("val", "test")
    warmup_steps: int = 1  # steps reported apart from the steady state (the first always is)
    device_probe_batches: int = 8  # steady steps timed again, device step alone, after training (0: off)
    steps_per_call: int | str = "auto"  # training steps per dispatch (a lax.scan); auto: 8 on accelerators, 1 on CPU
    # a folder for JAX's persistent compilation cache (off by default: a warm cache hides compile cost)
    compilation_cache: str | None = None
    # data parallelism: 1, a number of local devices, or "all"; each device gets its own padded
    # batch from the batcher and the gradients are combined (weighted by real graphs)
    devices: int | str = 1
    # checkpoints (orbax) under the run directory, so a killed run resumes (`run --resume`): every
    # N steps and every M minutes, whichever comes first (0 turns a rule off); the last K are kept.
    # The defaults save nothing in a run shorter than 30 minutes and 10,000 steps (the quick start)
    checkpoint_every: int = 10_000
    checkpoint_minutes: float = 30.0
    checkpoint_keep: int = 2
    # TensorBoard event files (loss, step time, evaluation metrics) in <run>/tensorboard
    tensorboard: bool = False

    def __post_init__(self) -> None:
        if self.checkpoint_every < 0 or self.checkpoint_minutes < 0 or self.checkpoint_keep < 1:
            raise ConfigError("train.checkpoint_every and train.checkpoint_minutes must be >= 0 (0: off), "
                              f"train.checkpoint_keep >= 1; got {self.checkpoint_every}, {self.checkpoint_minutes}, "
                              f"{self.checkpoint_keep}")
        if (isinstance(self.devices, str) and self.devices != "all") or (isinstance(self.devices, int)
                                                                         and self.devices < 1):
            raise ConfigError(f"train.devices must be a number >= 1 or 'all', got {self.devices!r}")
        if self.num_train_steps < 1:
            raise ConfigError(f"train.num_train_steps must be >= 1, got {self.num_train_steps}")
        if self.seed < 0:
            raise ConfigError(f"train.seed must be >= 0, got {self.seed}")
        if self.lr <= 0:
            raise ConfigError(f"train.lr must be > 0, got {self.lr}")
        if self.steps_per_call != "auto" and (isinstance(self.steps_per_call, bool)
                                              or not isinstance(self.steps_per_call, int) or self.steps_per_call < 1):
            raise ConfigError(f"train.steps_per_call must be 'auto' or an integer >= 1, got {self.steps_per_call!r}")
        if self.device_probe_batches < 0:
            raise ConfigError(f"train.device_probe_batches must be >= 0, got {self.device_probe_batches}")
        if self.eval_every < 0 or self.warmup_steps < 1:
            raise ConfigError("train.eval_every must be >= 0 and train.warmup_steps >= 1")
        if self.warmup_steps >= self.num_train_steps and self.num_train_steps > 1:
            raise ConfigError(f"train.warmup_steps ({self.warmup_steps}) must be < train.num_train_steps "
                              f"({self.num_train_steps})")
        for s in self.eval_splits:
            if s not in ("val", "test"):
                raise ConfigError(f"train.eval_splits: unknown split {s!r} (val, test)")


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
            out[sec] = value.to_dict() if hasattr(value, "to_dict") else _plain(dataclasses.asdict(value))
        return out


SECTIONS = {"dataset": DatasetSpec, "model": ModelConfig, "batching": BatchingConfig, "train": TrainConfig}


def _plain(x):
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; ints are accepted for floats, lists for tuples."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{key}: invalid value {value!r}")
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    if tp is tuple or origin is tuple:
        if isinstance(value, (list, tuple)):
            return tuple(value)
        raise ConfigError(f"{key}: expected a list, got {value!r}")
    if tp is dict or origin is dict:
        if isinstance(value, dict):
            return value
        raise ConfigError(f"{key}: expected a mapping, got {value!r}")
    return value


def _build(cls, data: dict, prefix: str):
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix}: expected a mapping of keys, got {data!r}")
    for k in data:
        if k in RENAMED.get(prefix, {}):
            raise ConfigError(f"{prefix}.{k} was renamed: use {prefix}.{RENAMED[prefix][k]} "
                              "(names now say what they count)")
    if cls is ModelConfig:  # its keys are the model's own fields, checked by ModelConfig
        data = dict(data)
        try:
            return ModelConfig(_coerce(data.pop("name", "schnet"), str, "model.name"),
                               _coerce(data.pop("form", "sparse"), str, "model.form"), **data)
        except ConfigError as exc:
            raise ConfigError(str(exc)) from None
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for k in data:
        if k not in names:
            raise ConfigError(f"{prefix}.{k}: unknown key; valid keys: {', '.join(sorted(names))}")
    kwargs = {k: _coerce(v, hints[k], f"{prefix}.{k}") for k, v in data.items()}
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        raise ConfigError(str(exc)) from None


def set_dotted(d: dict, dotted: str, value: Any) -> None:
    """Set ``d[a][b][c] = value`` for ``dotted = "a.b.c"``, creating sub-mappings."""
    parts = dotted.split(".")
    cur = d
    for p in parts[:-1]:
        nxt = cur.setdefault(p, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"--set {dotted}: {p} is not a section")
        cur = nxt
    cur[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """Parse a ``--set KEY=VALUE`` override; the value is read as YAML (``64`` -> int).

    Raises:
      ConfigError: if there is no ``=`` or the value is not valid YAML.
    """
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. batching.batch_size=64")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def config_from_dict(data: dict, source: str = "<config>") -> RunConfig:
    """Validate plain data into a :class:`RunConfig`.

    Args:
      data: the mapping read from a config file (sections ``dataset``, ``model``,
        ``batching``, ``train`` and ``name``).
      source: where it came from, named in error messages.

    Raises:
      ConfigError: naming the key for unknown, renamed or invalid entries.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level")
    allowed = {"name", "modules", *SECTIONS}
    for k in data:
        if k not in allowed:
            raise ConfigError(f"{source}: {k}: unknown key; valid keys: {', '.join(sorted(allowed))}")
    try:
        kwargs: dict[str, Any] = {}
        if "name" in data:
            kwargs["name"] = _coerce(data["name"], str, "name")
        if data.get("modules") is not None:
            mods = data["modules"]
            mods = [mods] if isinstance(mods, str) else mods
            mods = [_coerce(m, str, "modules") for m in _coerce(mods, tuple, "modules")]
            kwargs["modules"] = tuple(_beside(m, source) for m in mods)
            from gnn_batching.plugins import load_modules

            load_modules(kwargs["modules"])  # before the sections: they may name the user's model or method
        for sec, cls in SECTIONS.items():
            if sec in data and data[sec] is not None:
                kwargs[sec] = _build(cls, data[sec], sec)
        return RunConfig(**kwargs)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def _beside(module: str, source: str) -> str:
    """A module file named relative to the config file that names it (not found from the current
    folder) as an absolute path, so the run's saved config finds it from anywhere."""
    if not module.endswith(".py") or os.path.exists(module):
        return module
    there = os.path.join(os.path.dirname(os.path.abspath(source)), module)
    return os.path.abspath(there) if os.path.exists(there) else module


def _diff(a: dict, b: dict, prefix: str = "") -> list[tuple[str, str]]:
    """``(dotted key, "key: old -> new")`` for every leaf that differs."""
    out = []
    for k in sorted(set(a) | set(b)):
        key = f"{prefix}{k}"
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out.extend(_diff(va, vb, key + "."))
        elif va != vb:
            out.append((key, f"{key}: {va!r} -> {vb!r}"))
    return out


def config_changes(saved: dict, new: dict, source: str = "<saved config>", ignore: tuple[str, ...] = ()
                   ) -> list[str]:
    """What differs between a run's saved ``config.yaml`` and a new config (both plain data).

    The saved config is first completed with the schema's defaults: a key added to the schema
    after the run, at the behaviour the run had, is not a change of settings. A saved config
    that no longer validates (a renamed key) is compared as is, so the difference is named.

    Args:
      saved: the config a run was started with (as read from its ``config.yaml``).
      new: the config to compare it with.
      source: the saved config's file, named in validation errors.
      ignore: dotted keys whose changes do not count.

    Returns:
      ``"dotted.key: old -> new"`` for every differing setting (empty when none differs).
    """
    try:
        saved = config_from_dict(copy.deepcopy(saved), source).to_dict()
    except ConfigError:
        pass
    return [line for key, line in _diff(saved, new) if key not in ignore]


def read_yaml(path: str) -> dict:
    """A YAML file's contents; every way it can be unreadable is a ConfigError naming the file."""
    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, not a config file") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not a UTF-8 text file ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    return data


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """A copy of ``data`` with ``--set KEY=VALUE`` overrides applied in order."""
    data = copy.deepcopy(data)
    for o in overrides:
        k, v = parse_override(o)
        set_dotted(data, k, v)
    return data


def load_config(path: str, overrides: list[str] | None = None, modules: list[str] | tuple = ()) -> RunConfig:
    """Read, override and validate a run config (nothing else happens before this succeeds).

    Args:
        path: a YAML run config, e.g. ``configs/smoke.yaml``.
        overrides: dotted ``key=value`` strings (values parsed as YAML).
        modules: the user's modules or ``.py`` files to import first (``--module``), added to the
            config's ``modules``.

    Returns:
        A frozen :class:`RunConfig`.

    Raises:
        ConfigError: unreadable file, unknown or renamed key, wrong type or impossible value,
            with the file and the dotted key named.
    """
    data = read_yaml(path)
    if isinstance(data, dict) and {"grid", "base", "output_dir"} & set(data):
        keys = ", ".join(sorted({"grid", "base", "output_dir"} & set(data)))
        raise ConfigError(f"{path}: this is a sweep file (it has {keys}), not a run config; run it with "
                          f"`gnn-batching sweep {path}`")
    for o in overrides or []:
        check_override_key(parse_override(o)[0])
    data = apply_overrides(data, overrides or [])
    try:
        return config_from_dict(with_modules(data, modules), path)
    except ConfigError as exc:
        raise ConfigError(blame(str(exc), path, overrides or [])) from None


def blame(message: str, source: str, overrides: list | dict, label: str = "--set") -> str:
    """Name the true source of a validation error: the override that set the key it is about.

    ``message`` came from validating ``source`` (a config file) with ``overrides`` applied
    (``config_from_dict``'s ``"<source>: <key> ..."``). When the error is about a key an override
    set (the key appears in the message; the last such override wins), the message names that
    override instead of the file: ``--set batching.batch_size=-4: batching.batch_size must be
    >= 2, got -4``. Otherwise it is returned as it is (the file and the key).

    Args:
      message: the error message, starting with ``source: ``.
      source: the config file (or label) the message names.
      overrides: ``KEY=VALUE`` texts (``--set``), a mapping of dotted keys to values (a sweep
        file's ``set:``), or ``(dotted key, name)`` pairs.
      label: how an override is named: ``--set`` (``--set KEY=VALUE``), or e.g. ``f"{path}: set"``
        for a file's ``set:`` mapping (``<path>: set.KEY``).
    """
    inner = message[len(source) + 2:] if message.startswith(f"{source}: ") else message
    if isinstance(overrides, dict):
        given = [(str(k), f"{label}.{k}") for k in overrides]
    else:
        given = [o if isinstance(o, tuple) else (parse_override(o)[0], f"{label} {o}") for o in overrides]
    for key, name in reversed(given):
        if re.search(rf"(?<![\w.]){re.escape(key)}(?![\w])", inner):
            return f"{name}: {inner}"
    return message


def with_modules(data: dict, modules: list[str] | tuple) -> dict:
    """``data`` with ``modules`` (``--module``) appended to its top-level ``modules`` (once each)."""
    if not modules or not isinstance(data, dict):
        return data
    have = data.get("modules") or []
    have = [have] if isinstance(have, str) else list(have)
    return {**data, "modules": have + [m for m in modules if m not in have]}


def resolve_prefetch(setting: int | str, backend: str) -> int:
    """``batching.prefetch`` as a number of batches: ``auto`` is 2 on an accelerator (``backend``
    not ``cpu``: the host prepares the next batch while the device runs) and 0 on the CPU."""
    if setting == "auto":
        return 0 if backend == "cpu" else 2
    return int(setting)


def check_override_key(key: str) -> None:
    """A ``--set`` key must name a config key (``dataset.options.*`` is free-form).

    Raises:
      ConfigError: naming ``--set``, the key, and the valid keys of its section (or the new name
        of a renamed key).
    """
    section, _, name = key.partition(".")
    if key in FIELD_DOCS or (section in ("dataset", "batching") and name.startswith("options.")):
        return
    if section == "model" and name and "." not in name:
        return  # a model's hyperparameters are its module's fields, checked when the section is built
    if name in RENAMED.get(section, {}):
        raise ConfigError(f"--set {key}: renamed; use {section}.{RENAMED[section][name]}")
    if section in SECTIONS:
        valid = sorted(k.partition(".")[2] for k in FIELD_DOCS if k.startswith(section + "."))
        raise ConfigError(f"--set {key}: unknown key in {section}; valid keys: {', '.join(valid)}")
    raise ConfigError(f"--set {key}: unknown key; sections are {', '.join(SECTIONS)} (and name), e.g. "
                      "batching.batch_size=64")


# What the built-in models' hyperparameters mean (their defaults come from the module classes)
HYPERPARAMETER_DOCS: dict[str, str] = {
    "latent_size": "Width of the hidden features.",
    "message_passing_steps": "Message-passing layers (interaction blocks).",
    "n_rbf": "Radial basis functions of the edge distance.",
    "cutoff": "Cosine cutoff radius in Angstrom.",
}


# One line per config key: what it means. The config reference (docs/config.md, written by
# scripts/config_reference.py) is generated from the schema and this table; a test fails when a
# field has no description here, or a description names no field.
FIELD_DOCS: dict[str, str] = {
    "name": "Run name: the default run folder is `results/runs/<name>-<time>`.",
    "dataset.name": "Dataset: `qm9`, `aflow`, `aflow-synthetic`, `file:<path or glob>` (any ASE-readable file), or a "
                    "name registered with `@register_dataset` in a `dataset.module`.",
    "dataset.source": "Where a dataset's raw files are (AFLOW export, a structure file); null: the dataset's default.",
    "dataset.limit": "Use a seeded random subset of this many graphs (null: every graph).",
    "dataset.target": "Regression target (a property name of the source); null: the dataset's default target.",
    "dataset.graph": "Graph builder: `fully-connected`, `radius` or `knn` (periodic images for crystals); null: the "
                     "dataset's default.",
    "dataset.cutoff": "Radius graphs: neighbour cutoff in Angstrom.",
    "dataset.k": "kNN graphs: neighbours per atom.",
    "dataset.split": "Train/validation/test as fractions summing to 1, or as sizes (test may be -1: the rest).",
    "dataset.split_seed": "Seed of the split (independent of `train.seed`, so repeats share one split).",
    "dataset.split_scheme": "`ours` (NumPy, seeded by `split_seed`, each split sorted) or `study` (scikit-learn's "
                            "`train_test_split` as the study called it, `random_state` = `split_seed`, the training "
                            "split in split order).",
    "dataset.placement": "Where padded batches are built: `host` (NumPy, copied to the device each step), `device` "
                         "(the store copied to the device once, each step sends only its graph indices and the "
                         "batch is gathered there, bit-identical) or `auto` (device on an accelerator when the "
                         "store fits `device_share` of its free memory; host on the CPU). The summary says which "
                         "and why.",
    "dataset.device_share": "`placement: auto`: the largest share of the device's free memory the store may take.",
    "dataset.skip_bad": "Skip (and count) unreadable entries instead of stopping at the first one.",
    "dataset.targets_csv": "`file:` datasets: a CSV of targets, rows in structure order or matched by an "
                           "`index` column.",
    "dataset.download": "AFLOW: download the entries (AFLUX) instead of reading an export (`dataset.source`).",
    "dataset.dft_type": "AFLOW: keep only entries of this DFT type (e.g. `PAW_PBE`); null: every entry.",
    "dataset.ef_range": "AFLOW: keep formation energies in [low, high] eV/atom; null: every entry.",
    "dataset.module": "A Python module (or .py file) imported first, e.g. one that registers a dataset.",
    "dataset.options": "Keyword options passed to a registered dataset's loader.",
    "modules": "The user's Python files (`my_plugins.py`) or importable modules, imported before anything else: "
               "they register datasets, models and batching methods (`@register_dataset`, `@register_model`, "
               "`@register_method`). `--module` on the command line adds to it.",
    "model.name": "Model: `schnet`, `mpeu`, `painn` or a model registered with `@register_model`. Every other key "
                  "of the section is one of the model's hyperparameters (its module fields, below).",
    "model.form": "Autobatch's per-graph model: `sparse` (segment sums over edges) or `dense` (n x n pairs; models "
                  "registered with a dense form).",
    "batching.method": "Batching method: `static-pow2`, `static-64`, `static-constant`, `static-max`, "
                       "`static-exact`, `dynamic`, `buckets`, `packed` or `autobatch` (see the methods page).",
    "batching.batch_size": "Graphs per batch INCLUDING the padding graph (static batches hold batch_size - 1 real "
                           "graphs); per device in a data-parallel run.",
    "batching.budget": "Dynamic batching's node/edge budget rule: `full`, `paper`, `fit-or-skip` or `percentile`.",
    "batching.success_ratio": "`fit-or-skip` budgets: share of random batches that must fit.",
    "batching.percentile": "`percentile` budgets: percentile of random batch sizes the budget holds.",
    "batching.oversize": "A graph larger than a fixed budget: `error` (stop, naming it) or `skip` (counted).",
    "batching.skip_overflow": "`fit-or-skip`: drop (and count) groups that do not fit, as TF-GNN does.",
    "batching.pad_edges": "Where padding edges point: `hub` (one padding node, jraph's layout) or `spread`.",
    "batching.prefetch": "Batches assembled (and copied to the device) ahead in a background thread; 0: off (the "
                         "serial figure); `auto`: 2 on an accelerator, 0 on the CPU (where the thread competes "
                         "with XLA for the cores). The summary records what ran (`prefetch`).",
    "batching.buckets": "`buckets`: padded shapes on the menu (compiled ahead); `autobatch`: per-graph size buckets.",
    "batching.graph_slack": "`packed`: graph slots per batch as a multiple of batch_size - 1.",
    "batching.autobatch_mode": "`autobatch` only: `ragged` (the one-graph model re-interpreted on the disjoint union "
                               "of `autobatch_base`'s batches: segment reductions by graph id, each graph's own "
                               "positions and derivative rules), `vmap` (per-graph shape buckets under `jax.vmap`) "
                               "or `auto` (ragged when the model is proven to transform AND matches each graph run "
                               "alone on a real batch, else vmap; the summary says which and why).",
    "batching.autobatch_base": "`autobatch` in ragged mode: the disjoint-union method whose batches it runs on.",
    "batching.options": "Options the method declares for itself (its class's `options`, e.g. a user's method); "
                        "unset ones take the declared default.",
    "batching.study_order": "The study's training sequence (static-* and dynamic): the training split in its order, "
                            "then Python's `random.shuffle` (seed 42 + `train.seed`) before every further pass, "
                            "batches across passes, static batches drop the graph that completes them (counted). "
                            "Evaluation is unchanged (every graph). Pair it with `dataset.split_scheme: study`; "
                            "there `budget: paper` takes the first 1,000 training graphs in split order, as the "
                            "study's code (random 1,000 otherwise).",
    "batching.study_first_batch": "`init`: the stream's first batch initialises the model and is not trained on "
                                  "(the study's reader batch 0; its graphs are counted as skipped); `train`: it is "
                                  "trained on; `auto`: init under `study_order`, else train.",
    "train.num_train_steps": "Training steps (one optimizer update each).",
    "train.seed": "Model initialisation AND training data order; repeats must differ here.",
    "train.lr": "Initial learning rate (Adam).",
    "train.decay_steps": "Steps per exponential learning-rate decay, as in the study.",
    "train.decay_rate": "Learning-rate factor per `decay_steps`.",
    "train.staircase": "Decay in steps (true, the study's) or continuously.",
    "train.eval_every": "Evaluate every N steps (and after the last); 0: only after the last.",
    "train.eval_splits": "Splits evaluated (every graph of each, never skipped).",
    "train.warmup_steps": "First steps reported apart from the steady state (at least 1).",
    "train.steps_per_call": "Training steps per dispatch: K consecutive batches of one padded shape run as one "
                            "jitted `lax.scan` (fewer launches on an accelerator); calls never pass an evaluation, "
                            "a checkpoint or the last step, and each step keeps its row (the call's time divided "
                            "evenly). `auto`: 8 on an accelerator, 1 on the CPU; data-parallel runs: 1.",
    "train.device_probe_batches": "After training, the last N steady steps' train step is timed again ALONE (arrays "
                                  "on the device, compiled): `device_step_ms` and `host_overhead_fraction` in the "
                                  "summary; 0: off.",
    "train.compilation_cache": "A folder for JAX's persistent compilation cache; null: off (a warm cache hides compile "
                               "cost).",
    "train.devices": "Data parallelism: 1, a number of local devices, or `all`.",
    "train.checkpoint_every": "Save a checkpoint every N steps (0: never by steps).",
    "train.checkpoint_minutes": "Save a checkpoint every M minutes (0: never by time).",
    "train.checkpoint_keep": "Checkpoints kept (the newest).",
    "train.tensorboard": "Write TensorBoard event files to `<run>/tensorboard`.",
}


def config_reference() -> str:
    """The config reference as Markdown: every key of every section, its type, default and
    meaning (:data:`FIELD_DOCS`), generated from the schema."""
    sections = [("", RunConfig, "Top level"), ("dataset", DatasetSpec, "`dataset`: what to load, how to build graphs"),
                ("model", ModelConfig, "`model`: the network"), ("batching", BatchingConfig, "`batching`: how graphs "
                 "become padded batches"), ("train", TrainConfig, "`train`: the run")]
    lines = ["# Config reference", "",
             "Every key of a run config, generated from the schema (`gnn_batching/config.py`) by "
             "`python scripts/config_reference.py`; a test keeps it current. Set any key in a YAML file or with "
             "`--set section.key=value` (values are YAML). A sweep file adds `output_dir`, `base` (a run config) "
             "and `grid` (dotted keys to lists of values).", ""]
    for prefix, cls, title in sections:
        lines += [f"## {title}", "", "| key | type | default | meaning |", "|---|---|---|---|"]
        for f in dataclasses.fields(cls):
            key = f"{prefix}.{f.name}" if prefix else f.name
            if key not in FIELD_DOCS:
                continue  # a section (documented by its own table)
            if f.default is not dataclasses.MISSING:
                default = f.default
            else:
                default = f.default_factory()  # type: ignore[misc]
            shown = yaml.safe_dump(list(default) if isinstance(default, tuple) else default,
                                   default_flow_style=True).strip().removesuffix("...").strip()
            typ = str(f.type).replace("|", "or")
            lines.append(f"| `{key}` | {typ} | `{shown}` | {FIELD_DOCS[key]} |")
        lines.append("")
        if prefix == "model":
            lines += _hyperparameter_tables()
    return "\n".join(lines)


def _hyperparameter_tables() -> list[str]:
    """Each built-in model's hyperparameters (``model.<field>``) with their module defaults."""
    from gnn_batching.plugins import model_entry, model_hyperparameters, model_names

    lines = ["### Each model's hyperparameters", "",
             "`model.<field>` sets a field of the model's module; unset fields keep the module's default (the "
             "study's settings). A user's model lists its own with `gnn-batching advise --help`'s `--module` or in "
             "its class.", "", "| model | key | default | meaning |", "|---|---|---|---|"]
    for name in model_names():
        if not model_entry(name).cls.__module__.startswith("gnn_batching."):
            continue
        for k, d in model_hyperparameters(name).items():
            lines.append(f"| `{name}` | `model.{k}` | `{d}` | {HYPERPARAMETER_DOCS.get(k, '')} |")
    return lines + [""]
