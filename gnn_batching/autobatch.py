"""Autobatch: write the loss for ONE graph; the suite batches it.

Two execution modes, chosen by ``mode`` (the loader's and the step's must match):

* ``ragged`` (default): the function is written for one UNPADDED graph in plain JAX
  (``h[g.senders]``, ``jax.ops.segment_sum(..., num_segments=h.shape[0])``, ``jnp.mean(h, axis=0)``,
  ``h.shape[0]``) and compiled INTO the hand-batched program: traced abstractly, re-interpreted on
  the padded disjoint union of a disjoint-union method's batches (``base``, ``packed`` by default),
  reductions over a graph's nodes as segment reductions by graph id
  (:mod:`gnn_batching.ragged`). What cannot be proven to mean the same on the union is refused
  (:class:`~gnn_batching.ragged.Refused`, naming the primitive and your source line) when the step
  is first traced, before any update; the step's first call also checks the union program on its
  batch against the smallest and largest graphs run alone (values and gradients), as a run does.
* ``vmap``: DyNet's on-the-fly batching (Neubig, Goldberg, Dyer 2017): graphs grouped by shape
  bucket, each padded only up to its bucket and stacked in fixed slots, the loss vmapped per
  bucket. The function sees the graph PADDED to its bucket: a ``GraphsTuple`` of the real graph
  followed by one padding graph (``n_node = [n_real, n_pad]``; real nodes and edges first), so it
  must mask (``jnp.arange(h.shape[0]) < g.n_node[0]``), as a batched jraph model does. It runs any
  function, including what ragged mode refuses (sorting along the nodes, n x n pairs).

In both modes all graphs of a step give ONE gradient and ONE optimizer update (the mean over
real graphs) and a step is one compiled program per batch shape.

Example (ragged)::

    from gnn_batching import autobatch

    train = autobatch.loader(ds, batch_size=32, seed=0)      # packed disjoint-union batches
    state = autobatch.init_state(model, optax.adam(1e-3), train, seed=0)
    step = autobatch.make_train_step(loss_one, train)         # loss_one(params, graph, target)
    for batch in train.epoch(0):
        state, metrics = step(state, batch.arrays)
"""

from __future__ import annotations

from collections.abc import Callable

import jraph
import numpy as np
import optax

from gnn_batching.batching.loader import Loader
from gnn_batching.batching.registry import make_method
from gnn_batching.batching.slots import Autobatch, agenda, slot_layout, stack_slots
from gnn_batching.config import BatchingConfig
from gnn_batching.errors import ConfigError
from gnn_batching.train.slot_steps import first_slot_graph, make_loss_one, make_slot_steps, slots_loss
from gnn_batching.train.slot_steps import make_train_step as _vmap_train_step
from gnn_batching.train.steps import TrainState, steps_from_sums
from gnn_batching.train.steps import init_state as _init_state

MODES = ("ragged", "vmap")


def _check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ConfigError(f"autobatch mode: 'ragged' or 'vmap', not {mode!r}")
    return mode


def loader(ds, batch_size: int = 32, buckets: int = 4, seed: int = 0, split: str = "train", mode: str = "ragged",
           base: str = "packed") -> Loader:
    """An autobatch loader over one split of a loaded dataset.

    Args:
      ds: a :class:`~gnn_batching.data.Dataset` (``gnn_batching.load_dataset``).
      batch_size: about ``batch_size - 1`` graphs per step, as for the other methods.
      buckets: ``vmap`` mode: at most this many per-graph shape buckets (from the training split).
      seed: data order (the training split is shuffled per epoch by ``(seed, epoch)``).
      split: ``train`` (shuffled) or ``val``/``test`` (one ordered pass).
      mode: ``ragged`` (disjoint-union batches of ``base``) or ``vmap`` (per-graph slots).
      base: ``ragged`` mode: the disjoint-union method whose batches it runs on.

    Returns:
      A :class:`~gnn_batching.batching.Loader`; ``epoch(e)`` yields batches whose ``arrays`` are
      what :func:`make_train_step`'s step takes (a padded union, or a tuple of per-bucket slot
      stacks in ``vmap`` mode).
    """
    cfg = BatchingConfig(method="autobatch", batch_size=batch_size, buckets=buckets, autobatch_mode=_check_mode(mode),
                         autobatch_base=base)
    method = make_method(cfg, ds.store, ds.splits.train, seed=seed)  # vmap: Autobatch; ragged: base's batches
    return Loader(ds.store, ds.targets(), ds.splits.get(split), method, shuffle=split == "train", seed=seed)


def _mode_of(train: Loader) -> str:
    return "ragged" if train.method.step_form == "ragged" else "vmap"


def first_graph(graph: jraph.GraphsTuple) -> jraph.GraphsTuple:
    """The first graph of a padded disjoint-union batch, unpadded (host arrays): what a one-graph
    model is initialised on in ragged mode."""
    n, e = int(np.asarray(graph.n_node)[0]), int(np.asarray(graph.n_edge)[0])
    return jraph.GraphsTuple(nodes=graph.nodes[:n], edges=graph.edges[:e], senders=graph.senders[:e],
                             receivers=graph.receivers[:e], n_node=np.array([n], np.int32),
                             n_edge=np.array([e], np.int32), globals=None)


def init_state(model, tx: optax.GradientTransformation, train: Loader, seed: int = 0) -> TrainState:
    """A Flax ``TrainState`` for ``model``, initialised on one graph of ``train``'s first batch
    (unpadded in ragged mode, padded to its bucket in vmap mode)."""
    first = next(iter(train.epoch(0)))
    graph = first_graph(first.arrays.graph) if _mode_of(train) == "ragged" else first_slot_graph(first.arrays)
    return _init_state(model, tx, graph, seed)


def ragged_sums(loss_one: Callable) -> Callable:
    """``loss_sums(params, batch) -> (sum over real graphs, real graphs)`` of a one-graph loss on
    a padded disjoint-union batch (the form :func:`~gnn_batching.train.steps.steps_from_sums` takes)."""
    from gnn_batching.ragged import masked_sums

    sums = masked_sums(loss_one)

    def loss_sums(params, batch):
        if isinstance(batch, tuple) and not hasattr(batch, "graph"):
            raise ConfigError("autobatch: a vmap-mode batch (per-bucket slots) given to a ragged step; "
                              "make the loader and the step with the same mode")
        return sums(params, batch.graph, batch.targets, batch.mask)

    return loss_sums


def make_train_step(loss_one: Callable, train: Loader | None = None, mode: str | None = None):
    """A jitted ``step(state, batch) -> (state, {"loss"})`` from a per-graph loss.

    Args:
      loss_one: ``loss_one(params, graph, target) -> scalar`` for ONE graph (see the module's
        modes for what ``graph`` is).
      train: the loader whose batches the step takes: its mode is the step's.
      mode: without ``train``: ``ragged`` or ``vmap`` (default ``vmap``, this function's
        behaviour before ragged mode existed).

    Returns:
      The step: mean of ``loss_one`` over every real graph of the batch, one gradient, one update.

    Raises:
      Refused: (at the step's first call, before any update) ragged mode, and ``loss_one`` uses
        something without a rule on the union (the primitive and your source line), or, on that
        first batch, the union program's values or gradients differ from its smallest and largest
        graphs run alone (:func:`~gnn_batching.ragged.check_batch`, the check a run makes).
    """
    mode = _check_mode(mode or (_mode_of(train) if train is not None else "vmap"))
    if mode == "vmap":
        return _vmap_train_step(loss_one)
    sums = ragged_sums(loss_one)
    return _CheckedStep(steps_from_sums(sums, _no_eval)[0], loss_one)


class _CheckedStep:
    """A ragged train step that, on its first call, checks the union program against the batch's
    graphs run alone (values and gradients at the call's parameters), then calls the jitted step.
    Every other attribute (``lower``, ...) is the jitted step's."""

    def __init__(self, step, loss_one: Callable):
        self._step, self._loss_one, self.checked = step, loss_one, None

    def __call__(self, state, batch):
        if self.checked is None:
            from gnn_batching.ragged import check_batch

            if hasattr(batch, "graph"):  # a vmap-mode batch is refused by the step itself, by name
                self.checked = check_batch(self._loss_one, state.params, batch.graph, batch.mask,
                                           per_graph=(np.asarray(batch.targets),))
        return self._step(state, batch)

    def __getattr__(self, name: str):
        return getattr(self._step, name)


def _no_eval(params, batch):  # pragma: no cover - the public train step has no evaluation
    raise NotImplementedError


__all__ = ["MODES", "Autobatch", "agenda", "first_graph", "first_slot_graph", "init_state", "loader",
           "make_loss_one", "make_slot_steps", "make_train_step", "ragged_sums", "slot_layout", "slots_loss",
           "stack_slots"]
