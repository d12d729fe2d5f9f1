"""Run configs: YAML files validated strictly into frozen dataclasses.

An unknown key, a wrong type or an impossible value fails at load time, naming the file and
the dotted key. Overrides are ``key=value`` strings with dotted keys (``batching.batch_size=64``);
values are parsed as YAML (``true``, ``64``, ``[0.8, 0.1, 0.1]``, ``null``).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any

import yaml

from gnn_batching.batching.methods import BatchingConfig
from gnn_batching.data.datasets import DatasetSpec
from gnn_batching.errors import ConfigError
from gnn_batching.models import ModelConfig


@dataclass(frozen=True)
class TrainConfig:
    """The ``train`` section."""

    steps: int = 1000
    seed: int = 0  # model init AND training data order; repeats must differ here
    lr: float = 1e-4
    decay_steps: int = 100_000  # staircase exponential decay, as in the study
    decay_rate: float = 0.96
    staircase: bool = True
    eval_every: int = 0  # 0: evaluate only at the end
    eval_splits: tuple = ("val", "test")
    warmup_steps: int = 1  # steps reported apart from the steady state (the first always is)
    # a folder for JAX's persistent compilation cache (off by default: a warm cache hides compile cost)
    compilation_cache: str | None = None

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ConfigError(f"train.steps must be >= 1, got {self.steps}")
        if self.seed < 0:
            raise ConfigError(f"train.seed must be >= 0, got {self.seed}")
        if self.lr <= 0:
            raise ConfigError(f"train.lr must be > 0, got {self.lr}")
        if self.eval_every < 0 or self.warmup_steps < 1:
            raise ConfigError("train.eval_every must be >= 0 and train.warmup_steps >= 1")
        if self.warmup_steps >= self.steps and self.steps > 1:
            raise ConfigError(f"train.warmup_steps ({self.warmup_steps}) must be < train.steps ({self.steps})")
        for s in self.eval_splits:
            if s not in ("val", "test"):
                raise ConfigError(f"train.eval_splits: unknown split {s!r} (val, test)")


@dataclass(frozen=True)
class RunConfig:
    name: str = "run"
    dataset: DatasetSpec = field(default_factory=DatasetSpec)
    model: ModelConfig = field(default_factory=ModelConfig)
    batching: BatchingConfig = field(default_factory=BatchingConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict:
        return _plain(dataclasses.asdict(self))


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
    parts = dotted.split(".")
    cur = d
    for p in parts[:-1]:
        nxt = cur.setdefault(p, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"--set {dotted}: {p} is not a section")
        cur = nxt
    cur[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. batching.batch_size=64")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def config_from_dict(data: dict, source: str = "<config>") -> RunConfig:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level")
    allowed = {"name", *SECTIONS}
    for k in data:
        if k not in allowed:
            raise ConfigError(f"{source}: {k}: unknown key; valid keys: {', '.join(sorted(allowed))}")
    try:
        kwargs: dict[str, Any] = {}
        if "name" in data:
            kwargs["name"] = _coerce(data["name"], str, "name")
        for sec, cls in SECTIONS.items():
            if sec in data and data[sec] is not None:
                kwargs[sec] = _build(cls, data[sec], sec)
        return RunConfig(**kwargs)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


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
    import copy

    data = copy.deepcopy(data)
    for o in overrides:
        k, v = parse_override(o)
        set_dotted(data, k, v)
    return data


def load_config(path: str, overrides: list[str] | None = None) -> RunConfig:
    """Read, override and validate a run config (nothing else happens before this succeeds)."""
    data = apply_overrides(read_yaml(path), overrides or [])
    return config_from_dict(data, path)
