"""Autobatch: write the loss for ONE graph; same-shape graphs run together under ``jax.vmap``.

DyNet's on-the-fly operation batching (Neubig, Goldberg, Dyer 2017) for GNNs in JAX: under
``jax.jit`` every graph runs the same program and only its shape differs, so graphs are grouped
by shape bucket, each padded only up to its bucket, stacked, and the per-graph loss is vmapped
per bucket; all buckets of a step give ONE gradient and ONE optimizer update (mean over real
graphs). Slots per bucket are fixed, so a step is one compiled program.

Example::

    from gnn_batching import autobatch

    train = autobatch.loader(ds, batch_size=32, seed=0)     # per-graph buckets, fixed slots
    state = autobatch.init_state(model, optax.adam(1e-3), train, seed=0)
    step = autobatch.make_train_step(loss_one)               # loss_one(params, graph, target)
    for batch in train.epoch(0):
        state, metrics = step(state, batch.arrays)

Each ``graph`` given to ``loss_one`` is a jraph ``GraphsTuple`` of the real graph followed by
one padding graph (``n_node = [n_real, n_pad]``; real nodes and edges first, padding edges
between padding nodes), so ``jraph.get_node_padding_mask`` works and a per-graph output is
``[0]`` of a batched model's. Host side: :mod:`gnn_batching.batching.slots`; device side:
:mod:`gnn_batching.train.slot_steps`.
"""

from __future__ import annotations

import optax

from gnn_batching.batching.loader import Loader
from gnn_batching.batching.slots import Autobatch, agenda, slot_layout, stack_slots
from gnn_batching.config import BatchingConfig
from gnn_batching.train.slot_steps import first_slot_graph, make_loss_one, make_slot_steps, make_train_step, slots_loss
from gnn_batching.train.steps import TrainState
from gnn_batching.train.steps import init_state as _init_state


def loader(ds, batch_size: int = 32, buckets: int = 4, seed: int = 0, split: str = "train") -> Loader:
    """An autobatch loader over one split of a loaded dataset.

    Args:
      ds: a :class:`~gnn_batching.data.Dataset` (``gnn_batching.load_dataset``).
      batch_size: about ``batch_size - 1`` graphs per step, as for the other methods.
      buckets: at most this many per-graph shape buckets (chosen from the training split).
      seed: data order (the training split is shuffled per epoch by ``(seed, epoch)``).
      split: ``train`` (shuffled) or ``val``/``test`` (one ordered pass).

    Returns:
      A :class:`~gnn_batching.batching.Loader`; ``epoch(e)`` yields batches whose ``arrays`` are
      a tuple of per-bucket slot stacks (what :func:`make_train_step`'s step takes).
    """
    cfg = BatchingConfig(method="autobatch", batch_size=batch_size, buckets=buckets)
    method = Autobatch(cfg, ds.store.n_node, ds.store.n_edge, ds.splits.train, ids=ds.store.ids, seed=seed)
    return Loader(ds.store, ds.targets(), ds.splits.get(split), method, shuffle=split == "train", seed=seed)


def init_state(model, tx: optax.GradientTransformation, train: Loader, seed: int = 0) -> TrainState:
    """A Flax ``TrainState`` for ``model``, initialised on one slot's graph of ``train``'s first batch."""
    first = next(iter(train.epoch(0)))
    return _init_state(model, tx, first_slot_graph(first.arrays), seed)


__all__ = ["Autobatch", "agenda", "first_slot_graph", "init_state", "loader", "make_loss_one", "make_slot_steps",
           "make_train_step", "slot_layout", "slots_loss", "stack_slots"]
