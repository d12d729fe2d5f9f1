"""gnn_batching: which way of batching graphs trains fastest in JAX, and does it change learning?

The public API (imported lazily, so ``import gnn_batching`` does not start JAX)::

    import gnn_batching as gb

    cfg = gb.load_config("configs/smoke.yaml", ["batching.method=static-64"])
    state, summary = gb.train_and_evaluate(cfg, "results/runs/my-run")

    ds = gb.load_dataset(cfg.dataset)                       # graphs, splits, target statistics
    method, train, evals = gb.make_loaders(cfg.batching, ds.store, ds.targets(), ds.splits)
    for batch in train.epoch(0): ...                       # padded jraph GraphsTuple + targets + mask
    model = gb.make_model(cfg.model, ds.store.n_species)

    df = gb.collect("results/quickstart")                  # a sweep's tidy results table
    gb.plot_all("results/quickstart", df=df)               # its figures

Bring your own model and batching method (``@register_model``, ``@register_method``, loaded with
``--module FILE`` or a config's ``modules:``): :mod:`gnn_batching.plugins`.

Write the model for ONE graph and let same-shape graphs run under ``jax.vmap``:
:mod:`gnn_batching.autobatch`.
"""

__version__ = "0.1.0"

from gnn_batching.data.datasets import register_dataset
from gnn_batching.plugins import register_method, register_model

_LAZY = {
    "dynamically_batch": "gnn_batching.batching.jraph_compat",
    "load_config": "gnn_batching.config",
    "RunConfig": "gnn_batching.config",
    "DatasetSpec": "gnn_batching.config",
    "BatchingConfig": "gnn_batching.config",
    "load_dataset": "gnn_batching.data.datasets",
    "make_loaders": "gnn_batching.batching.loader",
    "make_model": "gnn_batching.models",
    "train_and_evaluate": "gnn_batching.train.run",
    "collect": "gnn_batching.sweep.results",
    "plot_all": "gnn_batching.sweep.figures",
}


def __getattr__(name: str):
    # lazy: importing the package must not import JAX/jraph/matplotlib
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(name)


__all__ = ["BatchingConfig", "DatasetSpec", "RunConfig", "__version__", "collect", "dynamically_batch", "load_config",
           "load_dataset", "make_loaders", "make_model", "plot_all", "register_dataset", "register_method",
           "register_model", "train_and_evaluate"]
