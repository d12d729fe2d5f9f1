"""How a step sees a batch, by the method's ``layout``: the steps to build and the graph a model
is initialised on. The run loop asks the method for its layout, never for its name.

* ``disjoint-union``: one padded ``GraphsTuple`` per step (:func:`~gnn_batching.train.steps.make_sums`).
* ``ragged``: one ``GraphsTuple`` per step, the model applied to ONE graph and re-interpreted on
  the union (autobatch's ragged mode, :func:`~gnn_batching.train.ragged_steps.make_ragged_sums`).
* ``slots``: graphs padded one by one, stacked per shape bucket, the model vmapped per graph
  (:func:`~gnn_batching.train.slot_steps.make_slot_sums`).

Both are built from per-batch sums over real graphs, so the same layout runs on one device
(:func:`~gnn_batching.train.steps.steps_from_sums`) or data-parallel over a mesh
(:func:`~gnn_batching.train.parallel.make_parallel_steps`).
"""

from __future__ import annotations

from collections.abc import Callable

import jraph
from jax.sharding import Mesh

from gnn_batching.train.parallel import make_parallel_steps
from gnn_batching.train.ragged_steps import make_ragged_sums
from gnn_batching.train.slot_steps import first_slot_graph, make_slot_sums
from gnn_batching.train.steps import make_sums, steps_from_sums

LAYOUTS: dict[str, tuple[Callable, Callable[[object], jraph.GraphsTuple]]] = {
    "disjoint-union": (make_sums, lambda arrays: arrays.graph),
    "slots": (make_slot_sums, first_slot_graph),
    "ragged": (make_ragged_sums, lambda arrays: arrays.graph),
}


def steps_for(layout: str, model, stats, mesh: Mesh | None = None):
    """``(train_step, eval_step)`` for a method's layout, on one device or over ``mesh``."""
    sums = LAYOUTS[layout][0](model, stats)
    return make_parallel_steps(*sums, mesh) if mesh is not None else steps_from_sums(*sums)


def init_graph(layout: str, arrays) -> jraph.GraphsTuple:
    """The graph whose shapes initialise the model, from one device's batch arrays."""
    return LAYOUTS[layout][1](arrays)
