"""The config schema: every section of a run config, validated strictly, one module per section.

Sections: ``dataset`` (:class:`DatasetSpec`, ``dataset.py``), ``model`` (:class:`ModelConfig`,
``model.py``), ``batching`` (:class:`BatchingConfig`, ``batching.py``), ``train``
(:class:`TrainConfig`, ``train.py``), gathered in :class:`RunConfig` (``run.py``). Reading a file
and ``--set`` overrides is ``load.py``; what each key means is ``docs.py`` (:data:`FIELD_DOCS`).
An unknown key, a wrong type, an impossible value or a renamed key fails at load time, naming
the file and the dotted key (or the ``--set`` override that set it). Overrides are ``key=value``
strings with dotted keys (``batching.batch_size=64``); values are parsed as YAML (``true``,
``64``, ``[0.8, 0.1, 0.1]``, ``null``). Configs are frozen: facts derived from data live
elsewhere (``data.json``).

This is a leaf package (it imports nothing else of the package but its errors, and the plug-in
registries when a section names a model or method), so every layer can read its section here.
"""

from gnn_batching.config.batching import BUDGET_RULES, BatchingConfig
from gnn_batching.config.dataset import DatasetSpec, check_split
from gnn_batching.config.docs import FIELD_DOCS, HYPERPARAMETER_DOCS, config_reference
from gnn_batching.config.load import (
    RENAMED,
    apply_overrides,
    blame,
    check_override_key,
    config_changes,
    config_from_dict,
    load_config,
    parse_override,
    read_yaml,
    resolve_prefetch,
    set_dotted,
    with_modules,
)
from gnn_batching.config.model import ModelConfig
from gnn_batching.config.run import SECTIONS, RunConfig
from gnn_batching.config.train import TrainConfig

__all__ = [
    "BUDGET_RULES",
    "FIELD_DOCS",
    "HYPERPARAMETER_DOCS",
    "RENAMED",
    "SECTIONS",
    "BatchingConfig",
    "DatasetSpec",
    "ModelConfig",
    "RunConfig",
    "TrainConfig",
    "apply_overrides",
    "blame",
    "check_override_key",
    "check_split",
    "config_changes",
    "config_from_dict",
    "config_reference",
    "load_config",
    "parse_override",
    "read_yaml",
    "resolve_prefetch",
    "set_dotted",
    "with_modules",
]
