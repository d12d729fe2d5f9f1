"""Reading a config: YAML files, ``--set`` overrides, validation into a :class:`RunConfig`, and
errors that name their true source (the file and key, or the override)."""

from __future__ import annotations

import copy
import dataclasses
import os
import re
import typing
from typing import Any

import yaml

from gnn_batching.config.docs import FIELD_DOCS
from gnn_batching.config.model import ModelConfig
from gnn_batching.config.run import SECTIONS, RunConfig
from gnn_batching.config.values import coerce
from gnn_batching.errors import ConfigError

# old key -> new key, per section: an old key is refused with the new name
RENAMED = {
    "train": {"steps": "num_train_steps"},
    "model": {"steps": "message_passing_steps", "latent": "latent_size"},
}


def _build(cls: type, data: dict, prefix: str) -> object:
    """One section from its mapping, every key checked (renamed, unknown, wrongly typed)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix}: expected a mapping of keys, got {data!r}")
    for k in data:
        if k in RENAMED.get(prefix, {}):
            raise ConfigError(f"{prefix}.{k} was renamed: use {prefix}.{RENAMED[prefix][k]} "
                              "(names now say what they count)")
    if cls is ModelConfig:  # its keys are the model's own fields, checked by ModelConfig
        data = dict(data)
        try:
            return ModelConfig(coerce(data.pop("name", "schnet"), str, "model.name"),
                               coerce(data.pop("form", "sparse"), str, "model.form"), **data)
        except ConfigError as exc:
            raise ConfigError(str(exc)) from None
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for k in data:
        if k not in names:
            raise ConfigError(f"{prefix}.{k}: unknown key; valid keys: {', '.join(sorted(names))}")
    kwargs = {k: coerce(v, hints[k], f"{prefix}.{k}") for k, v in data.items()}
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
            kwargs["name"] = coerce(data["name"], str, "name")
        if data.get("modules") is not None:
            mods = data["modules"]
            mods = [mods] if isinstance(mods, str) else mods
            mods = [coerce(m, str, "modules") for m in coerce(mods, tuple, "modules")]
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
