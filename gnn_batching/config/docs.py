"""What every config key means (:data:`FIELD_DOCS`), and the config reference generated from it."""

from __future__ import annotations

import dataclasses

import yaml

from gnn_batching.config.batching import BatchingConfig
from gnn_batching.config.dataset import DatasetSpec
from gnn_batching.config.model import ModelConfig
from gnn_batching.config.run import RunConfig
from gnn_batching.config.train import TrainConfig

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
             "Every key of a run config, generated from the schema (`gnn_batching/config/`) by "
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
             "study's settings). A user's model's fields are its class's (a misspelt `model.<field>` is refused, "
             "naming the fields the model has).", "", "| model | key | default | meaning |", "|---|---|---|---|"]
    for name in model_names():
        if not model_entry(name).cls.__module__.startswith("gnn_batching."):
            continue
        for k, d in model_hyperparameters(name).items():
            lines.append(f"| `{name}` | `model.{k}` | `{d}` | {HYPERPARAMETER_DOCS.get(k, '')} |")
    return lines + [""]
