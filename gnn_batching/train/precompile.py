"""Ahead-of-time compilation of the steps for a method's menu of padded shapes.

A method that knows every padded shape it will produce (:meth:`BatchingMethod.compile_ahead`)
gets them compiled before the first timed step, with ``jit(step).lower(...).compile()`` on
abstract arrays (no data, no execution). JAX keeps the executable, so the step's first call
with that shape only fills the dispatch cache (no trace, no compile); the compile monitor sees
no compile event there and counts none in the timed window. The seconds spent here are an
up-front cost, recorded per shape in ``precompile.csv`` and added to the time-to-train.
"""

from __future__ import annotations

import jax
import jraph

from gnn_batching.batching.assemble import GraphBatch
from gnn_batching.train.instruments import CompileMonitor, shape_key


def abstract_batch(example: GraphBatch, shape: tuple[int, int, int], sharding=None) -> GraphBatch:
    """``example``'s structure and dtypes at padded ``shape = (n_node, n_edge, n_graph)``.

    Node arrays get ``n_node`` rows, edge arrays (features, senders, receivers) ``n_edge``,
    per-graph arrays (``n_node``, ``n_edge``, targets, mask) ``n_graph``; trailing dimensions
    are kept. Leaves are ``jax.ShapeDtypeStruct``: nothing is allocated. With a ``sharding``
    (data parallelism) the example's leaves carry a leading axis of this host's devices; the
    abstract batch's leading axis is every device of the mesh (all hosts), laid out with that
    sharding; ``shape`` is then one device's.
    """
    n, e, g = (int(x) for x in shape)
    lead = 0 if sharding is None else 1
    # the GLOBAL device axis: on several hosts the example holds only this host's devices
    devices = () if sharding is None else (int(sharding.mesh.size),)

    def like(x, rows: int):
        if x is None:
            return None
        return jax.ShapeDtypeStruct((*devices, rows, *x.shape[lead + 1:]), x.dtype, sharding=sharding)

    gr = example.graph
    graph = jraph.GraphsTuple(
        nodes=like(gr.nodes, n), edges=like(gr.edges, e), senders=like(gr.senders, e),
        receivers=like(gr.receivers, e), n_node=like(gr.n_node, g), n_edge=like(gr.n_edge, g),
        globals=like(gr.globals, g),
    )
    return GraphBatch(graph, like(example.targets, g), like(example.mask, g))


def precompile(monitor: CompileMonitor, label: str, step, state, example: GraphBatch,
               shapes: list[tuple[int, int, int]], sharding=None) -> list[dict]:
    """Compile ``step(state, batch)`` for every shape, attributing compile time to ``label``.

    Args:
      monitor: the run's compile monitor (counts and seconds go to ``label``).
      label: ``train`` or ``eval``.
      step: the jitted step.
      state: the train state (its shapes and dtypes are used, not its values).
      example: any batch of the run (structure and dtypes).
      shapes: padded ``(n_node, n_edge, n_graph)`` shapes (one device's).
      sharding: the batch sharding of a data-parallel run (:func:`abstract_batch`).

    Returns:
      One row per shape: label, n_node, n_edge, n_graph, ``compile_s`` (wall seconds) and
      ``restart`` (True for a shape compiled again after a restart: restart overhead, not
      time-to-train).
    """
    rows = []
    for shape in shapes:  # the real state: its placement is what later calls will have
        abstract = abstract_batch(example, shape, sharding)
        with monitor.ahead_of_time(label, step, key=shape_key(abstract, 0 if sharding is None else 1)) as info:
            step.lower(state, abstract).compile()
        rows.append({"label": label, "n_node": int(shape[0]), "n_edge": int(shape[1]), "n_graph": int(shape[2]),
                     "compile_s": info["wall_s"], "restart": bool(info["restart"])})
    return rows
