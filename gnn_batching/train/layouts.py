"""How a step sees a batch, by the method's ``layout``: the steps to build and the graph a model
is initialised on. The run loop asks the method for its layout, never for its name.

* ``disjoint-union``: one padded ``GraphsTuple`` per step (:func:`~gnn_batching.train.steps.make_steps`).
* ``slots``: graphs padded one by one, stacked per shape bucket, the model vmapped per graph
  (:func:`~gnn_batching.train.autobatch.make_slot_steps`).
"""

from __future__ import annotations

from collections.abc import Callable

import jraph

from gnn_batching.train.autobatch import first_slot_graph, make_slot_steps
from gnn_batching.train.steps import make_steps

LAYOUTS: dict[str, tuple[Callable, Callable[[object], jraph.GraphsTuple]]] = {
    "disjoint-union": (make_steps, lambda arrays: arrays.graph),
    "slots": (make_slot_steps, first_slot_graph),
}


def steps_for(layout: str, model, stats):
    """``(train_step, eval_step)`` for a method's layout."""
    return LAYOUTS[layout][0](model, stats)


def init_graph(layout: str, arrays) -> jraph.GraphsTuple:
    """The graph whose shapes initialise the model, from a batch's device arrays."""
    return LAYOUTS[layout][1](arrays)
