"""Autobatch, host side: per-graph shape buckets, a fixed slot count per bucket, and an agenda
that fills the slots (DyNet's on-the-fly operation batching, for GNNs under ``jax.jit``).

Under ``jit`` every graph runs the same program and only its shape differs, so a graph's
*signature* is its shape bucket. A step holds ``slots[b]`` graphs of each bucket ``b``, each
padded on its own to the bucket's ``(n_node, n_edge)`` (one real graph + one padding graph,
jraph's convention) and stacked, so the device runs ``jax.vmap`` of a per-graph function per
bucket. Slot counts are fixed (proportional to the buckets' shares of the training split, at
least one each), so a step is ONE program: one compile for training, one for evaluation.

Agenda (which queued graphs fill a step's slots): every bucket keeps a queue of its graphs in
the (per-epoch shuffled) stream order. A step takes each bucket's slots from its own queue
first, largest bucket first; slots left free (its queue ran dry) are given to graphs of SMALLER
buckets, always from the queue with the most graphs still waiting relative to its slots (the
most "behind"), so no bucket starves and a step stays a near-uniform sample of the epoch. Every
graph is placed exactly once per epoch; the epoch ends when every queue is empty.

NumPy only; the device side is :mod:`gnn_batching.train.slot_steps`.
"""

from __future__ import annotations

from collections.abc import Iterator

import jraph
import numpy as np

from gnn_batching.batching.assemble import Batch, GraphBatch, local_pairs
from gnn_batching.batching.menu import choose_menu, smallest_cover
from gnn_batching.batching.methods import BatchingMethod
from gnn_batching.batching.plan import EpochPlan
from gnn_batching.plugins import register_method


def slot_layout(n_node: np.ndarray, n_edge: np.ndarray, train_index: np.ndarray, per_step: int, k: int
                ) -> tuple[np.ndarray, np.ndarray]:
    """Per-graph buckets and slots per step.

    Args:
      n_node: node counts of every graph of the store, shape ``(G,)``.
      n_edge: edge counts, shape ``(G,)``.
      train_index: the training split (the size distribution the buckets follow).
      per_step: graphs per step to aim for (``batch_size - 1``).
      k: at most this many buckets.

    Returns:
      ``(buckets, slots)``: ``buckets`` is ``(m, 2)`` padded ``(n_node, n_edge)`` per graph
      (one padding node included), increasing in both, the largest holding every graph of the
      store; ``slots`` is ``(m,)`` graphs per step per bucket (>= 1 each).
    """
    tn, te = n_node[train_index], n_edge[train_index]
    top = (int(n_node.max()) + 1, int(n_edge.max()))
    buckets = choose_menu(tn, te, k, min_top=top)  # per graph: minimises E[n_node + n_edge] padded
    share = np.bincount(smallest_cover(buckets, tn + 1, te), minlength=len(buckets)) / max(len(tn), 1)
    slots = np.maximum(1, np.round(share * per_step)).astype(np.int64)
    return buckets, slots


def agenda(order: np.ndarray, bucket_of: np.ndarray, slots: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fill each step's slots from per-bucket queues (see the module docstring).

    Args:
      order: store indices in stream order, shape ``(k,)``.
      bucket_of: smallest bucket holding each graph of ``order``, shape ``(k,)``.
      slots: slots per step per bucket, shape ``(m,)``.

    Returns:
      ``(order, bounds, groups)``: step ``s`` holds ``order[bounds[s]:bounds[s+1]]`` and
      ``groups`` gives the bucket whose slot each graph fills (>= its own bucket).
    """
    m = len(slots)
    queues = [order[bucket_of == b] for b in range(m)]
    heads = np.zeros(m, np.int64)
    sizes = np.array([len(q) for q in queues], np.int64)
    out, grp, bounds = [], [], [0]
    while (heads < sizes).any():
        for b in range(m - 1, -1, -1):
            free = int(slots[b])
            take = min(free, int(sizes[b] - heads[b]))
            out.append(queues[b][heads[b] : heads[b] + take])
            grp.append(np.full(take, b, np.int64))
            heads[b] += take
            free -= take
            while free > 0:  # lend the free slots to smaller buckets, most-behind queue first
                left = (sizes[:b] - heads[:b]) / slots[:b]
                if not b or left.max() <= 0:
                    break
                c = int(np.argmax(left))
                take = min(free, int(sizes[c] - heads[c]))
                out.append(queues[c][heads[c] : heads[c] + take])
                grp.append(np.full(take, b, np.int64))
                heads[c] += take
                free -= take
        bounds.append(sum(len(x) for x in out))
    if not out:
        return order[:0], np.zeros(1, np.int64), np.zeros(0, np.int64)
    return np.concatenate(out), np.asarray(bounds, np.int64), np.concatenate(grp)


def stack_slots(graphs: list[Batch], n_slots: int, empty: Batch) -> GraphBatch:
    """Stack per-graph batches (each of shape ``(n, e, 2)``: one real graph and its padding
    graph) into one bucket's arrays with a leading slot axis; missing slots get ``empty`` (a
    batch of the same shape holding no graph).

    Returns:
      ``GraphBatch`` whose graph leaves have shape ``(n_slots, ...)`` (``n_node``/``n_edge``
      ``(n_slots, 2)``), ``targets`` ``(n_slots,)`` and ``mask`` ``(n_slots,)`` (False: empty slot).
    """
    parts = [g.arrays for g in graphs] + [empty.arrays] * (n_slots - len(graphs))

    def stack(get):
        return np.stack([get(a) for a in parts])

    graph = parts[0].graph._replace(
        nodes=stack(lambda a: a.graph.nodes), edges=stack(lambda a: a.graph.edges),
        senders=stack(lambda a: a.graph.senders), receivers=stack(lambda a: a.graph.receivers),
        n_node=stack(lambda a: a.graph.n_node), n_edge=stack(lambda a: a.graph.n_edge), globals=None,
    )
    return GraphBatch(graph, stack(lambda a: a.targets[0]), stack(lambda a: a.mask[0]))


def assemble_slots(store, idx: np.ndarray, n_slots: int, shape: tuple[int, int], targets: np.ndarray) -> GraphBatch:
    """One bucket's slot stack straight from the store: graph ``idx[j]`` alone in slot ``j``,
    padded to ``shape = (n_node, n_edge)``; slots after ``len(idx)`` hold no graph.

    The same arrays as :func:`stack_slots` of per-graph :func:`assemble` batches (``hub``
    padding; tested equal), built with one vectorised gather per array instead of one
    ``assemble`` per graph (which cost more than the device step on a GPU).

    Returns:
      ``GraphBatch`` with leaves ``(n_slots, ...)``: nodes ``(S, n)``, edges ``(S, e, 4)``,
      senders/receivers ``(S, e)``, ``n_node``/``n_edge`` ``(S, 2)`` (the real graph, then its
      padding graph; an empty slot is ``[n, 0]`` / ``[e, 0]``), targets and mask ``(S,)``.
    """
    nn_pad, ne_pad = (int(x) for x in shape)
    idx = np.asarray(idx, dtype=np.int64)
    k = len(idx)
    nn = store.n_node[idx].astype(np.int64)
    ne = store.n_edge[idx].astype(np.int64)
    if k > n_slots or (k and (int(nn.max()) > nn_pad - 1 or int(ne.max()) > ne_pad)):
        raise RuntimeError(f"{k} graphs (largest {nn.max(initial=0)} nodes, {ne.max(initial=0)} edges) do not fit "
                           f"{n_slots} slots of shape {shape}")
    slot = np.arange(k, dtype=np.int64)

    def local(counts: np.ndarray) -> np.ndarray:  # 0..c-1 for every graph, concatenated
        total = int(counts.sum())
        return np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)

    r_node, r_edge = local(nn), local(ne)
    nodes = np.zeros((n_slots, nn_pad), np.int32)
    nodes.reshape(-1)[np.repeat(slot * nn_pad, nn) + r_node] = store.species[np.repeat(store.node_offsets[idx], nn)
                                                                             + r_node]
    edge_src = np.repeat(store.edge_offsets[idx], ne) + r_edge
    edge_dst = np.repeat(slot * ne_pad, ne) + r_edge
    edges = np.zeros((n_slots, ne_pad, 4), np.float32)
    edges.view(np.complex128).reshape(-1)[edge_dst] = store.edge_records[edge_src]
    # padding edges point at the slot's first padding node (its real node count; 0 when empty)
    hub = np.zeros(n_slots, np.int32)
    hub[:k] = nn
    senders = np.repeat(hub[:, None], ne_pad, axis=1)
    receivers = senders.copy()
    senders.reshape(-1)[edge_dst], receivers.reshape(-1)[edge_dst] = local_pairs(store, edge_src)
    g_n = np.zeros((n_slots, 2), np.int32)
    g_e = np.zeros((n_slots, 2), np.int32)
    g_n[:, 0] = nn_pad  # an empty slot: one padding graph holding everything
    g_e[:, 0] = ne_pad
    g_n[:k, 0], g_n[:k, 1] = nn, nn_pad - nn
    g_e[:k, 0], g_e[:k, 1] = ne, ne_pad - ne
    t = np.zeros(n_slots, np.float32)
    t[:k] = targets[idx]
    mask = np.zeros(n_slots, bool)
    mask[:k] = True
    graph = jraph.GraphsTuple(nodes=nodes, edges=edges, senders=senders, receivers=receivers, n_node=g_n, n_edge=g_e,
                              globals=None)
    return GraphBatch(graph, t, mask)


@register_method("autobatch")
class Autobatch(BatchingMethod):
    """Per-graph shape buckets with fixed slots per step: the model runs on ONE graph under ``jax.vmap``.

    ``batching.buckets`` caps the number of per-graph buckets (chosen like the ``buckets``
    menu, per graph: minimising the expected padded ``n_node + n_edge``); slots per bucket
    follow the training split's shares of ``batch_size - 1`` graphs. One compiled train step
    and one eval step, whatever the data. A batch is a tuple of per-bucket ``GraphBatch``es with
    a leading slot axis (:func:`stack_slots`).
    """
    style = ("tab:olive", "*")

    layout = "slots"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.buckets, self.slots = slot_layout(self.n_node, self.n_edge, self.train_index, self.bs - 1,
                                               int(self.cfg.buckets))

    def bucket_of(self, idx: np.ndarray) -> np.ndarray:
        """Smallest bucket holding each graph ``idx``."""
        return smallest_cover(self.buckets, self.n_node[idx] + 1, self.n_edge[idx])

    def fixed_shape(self) -> tuple[int, int, int]:
        """Nodes, edges and graph slots of a step summed over every slot, padding included (the
        same for every step: one program)."""
        return (int((self.slots * self.buckets[:, 0]).sum()), int((self.slots * self.buckets[:, 1]).sum()),
                int(self.slots.sum()))

    def describe(self) -> dict:
        """Settings plus the buckets, their slots and the compile bound."""
        return {**super().describe(), "slot_buckets": self.buckets.tolist(), "slots": self.slots.tolist(),
                "compiled_variants_bound": {"train": 1, "eval": 1}}

    def plan(self, order: np.ndarray) -> EpochPlan:
        """The agenda over ``order``; every step has the same (summed) padded shape."""
        order = np.asarray(order, dtype=np.int64)
        out, bounds, groups = agenda(order, self.bucket_of(order), self.slots)
        shapes = np.tile(np.array(self.fixed_shape(), np.int64), (len(bounds) - 1, 1))
        return EpochPlan(out, bounds, shapes, groups=groups)

    def iterate(self, store, plan: EpochPlan, targets: np.ndarray, pad_edges: str = "hub") -> Iterator[Batch]:
        """One ``Batch`` per step; its ``arrays`` are a tuple of per-bucket slot stacks."""
        return self.iterate_stacks(store, plan, lambda members, n_slots, shape: assemble_slots(
            store, members, n_slots, shape, targets))

    def iterate_stacks(self, store, plan: EpochPlan, stack_of) -> Iterator[Batch]:
        """The steps of ``plan`` with each bucket's slot stack from ``stack_of(members, n_slots,
        (n_node, n_edge))`` (the host's :func:`assemble_slots`, or a gather on the device)."""
        for s in range(len(plan)):
            idx = plan.batch(s)
            grp = plan.groups[plan.bounds[s] : plan.bounds[s + 1]]
            stacks, ordered = [], []
            for b, (nn, ne) in enumerate(self.buckets.tolist()):
                members = idx[grp == b]
                ordered.append(members)
                stacks.append(stack_of(members, int(self.slots[b]), (nn, ne)))
            # index: bucket by bucket, slot by slot (the real slots of each bucket come first)
            yield Batch(tuple(stacks), len(idx), int(store.n_node[idx].sum()), int(store.n_edge[idx].sum()),
                        np.concatenate(ordered), padded=plan.shapes[s].tolist())

