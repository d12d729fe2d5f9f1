"""The graph store on the device, and padded batches gathered THERE from graph indices.

The host path assembles every padded array with NumPy (``batching/assemble.py``) and copies it to
the device each step (about 1 MB for a bs-128 QM9 batch). With a :class:`DeviceStore` the
store's arrays are copied to the device once; a step then sends only the store indices of its
graphs (``n_graph - 1`` int32, -1 for empty slots: half a kilobyte) and :meth:`DeviceStore.gather`,
jitted per padded shape, builds exactly the arrays the host path builds (bit for bit: the same
integers, the same float32 rows copied). Methods still plan every epoch on the host from size
arrays; only the materialisation moves.

How the gather works without a per-graph loop: row ``r`` of the padded node array belongs to
graph ``searchsorted(node_end, r, side="right")`` (the number of graphs that end at or before
it), so its source row in the store is that graph's offset plus ``r`` minus the graph's first
row; rows past the real nodes are padding. Edges likewise, with the sender and receiver shifted
by their graph's first node. Padding edges point at the first padding node (``hub``) or round-
robin over the padding nodes (``spread``), as on the host. Autobatch's slots layout
(:meth:`DeviceStore.iterate_slots`) gathers each bucket's slot stack the same way, one graph per
slot.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import jraph
import numpy as np

from gnn_batching.batching.assemble import Batch, GraphBatch


class DeviceStore:
    """A GraphStore's arrays on a device, with a jitted gather of padded batches.

    Args:
      store: the dataset's ``GraphStore``.
      targets: (G,) targets of every graph, physical units.
      pad_edges: where padding edges point (``hub`` or ``spread``), as ``batching.pad_edges``.
      device: where to place the arrays (default: JAX's default device).
    """

    def __init__(self, store, targets: np.ndarray, pad_edges: str = "hub", device=None):
        put = functools.partial(jax.device_put, device=device)
        self.pad_edges = pad_edges
        self.arrays = {
            "species": put(np.asarray(store.species, np.int32)),
            "edges": put(np.asarray(store.edges, np.float32).reshape(-1, 4)),
            "senders": put(np.asarray(store.senders, np.int32)),
            "receivers": put(np.asarray(store.receivers, np.int32)),
            "node_offsets": put(np.asarray(store.node_offsets, np.int32)),
            "edge_offsets": put(np.asarray(store.edge_offsets, np.int32)),
            "n_node": put(np.asarray(store.n_node, np.int32)),
            "n_edge": put(np.asarray(store.n_edge, np.int32)),
            "targets": put(np.asarray(targets, np.float32)),
        }
        self._gather = jax.jit(_gather, static_argnames=("n_node", "n_edge", "hub"))
        self._gather_slots = jax.jit(_gather_slots, static_argnames=("n_node", "n_edge"))

    @property
    def nbytes(self) -> int:
        """Device bytes the store occupies."""
        return int(sum(a.size * a.dtype.itemsize for a in self.arrays.values()))

    @staticmethod
    def slots(idx: np.ndarray, n_graph: int) -> np.ndarray:
        """What a step sends: the store indices of its real graphs, then -1, shape ``(n_graph - 1,)``."""
        out = np.full(n_graph - 1, -1, np.int32)
        out[: len(idx)] = idx
        return out

    def gather(self, slots, n_node: int, n_edge: int) -> GraphBatch:
        """The padded batch of the graphs in ``slots`` (see :meth:`slots`), padded to ``n_node`` nodes,
        ``n_edge`` edges and ``len(slots) + 1`` graphs: the host path's arrays, on the device."""
        return self._gather(self.arrays, jnp.asarray(slots, jnp.int32), n_node=int(n_node), n_edge=int(n_edge),
                            hub=self.pad_edges == "hub")


    def assembler(self, method):
        """The loader's assembler for ``method``'s layout: one ``GraphsTuple`` per step
        (:meth:`iterate`) or per-bucket slot stacks (:meth:`iterate_slots`)."""
        if method.layout == "slots":
            return functools.partial(self.iterate_slots, method)
        return self.iterate

    def iterate_slots(self, method, store, plan, targets=None, pad_edges: str | None = None):
        """The slots layout (autobatch) gathered on the device: per bucket, graph ``j`` alone in
        slot ``j`` padded to the bucket's shape (``batching/slots.py``'s ``assemble_slots``)."""
        def stack_of(members, n_slots: int, shape):
            slots = np.full(n_slots, -1, np.int32)
            slots[: len(members)] = members
            return self._gather_slots(self.arrays, jnp.asarray(slots), n_node=int(shape[0]), n_edge=int(shape[1]))

        return method.iterate_stacks(store, plan, stack_of)

    def iterate(self, store, plan, targets=None, pad_edges: str | None = None):
        """The batches of ``plan`` gathered on the device (the loader's assembler; ``targets`` and
        ``pad_edges`` are this store's own, fixed when it was built)."""
        for b in range(len(plan)):
            idx = plan.batch(b)
            n_node, n_edge, n_graph = (int(x) for x in plan.shapes[b])
            arrays = self.gather(self.slots(idx, n_graph), n_node, n_edge)
            yield Batch(arrays, len(idx), int(store.n_node[idx].sum()), int(store.n_edge[idx].sum()), idx)


def choose_placement(setting: str, store_bytes: int, n_devices: int, share: float,
                     backend: str | None = None, free_bytes: int | None = None) -> tuple[str, str]:
    """``(placement, why)`` for ``dataset.placement``: ``host`` or ``device``.

    ``device`` needs one device (data-parallel runs gather on the host); ``auto`` also needs an
    accelerator with free memory for the store within ``share`` of it (``free_bytes``: what the
    device reports; None: unknown).
    """
    if setting == "host":
        return "host", "dataset.placement: host"
    if n_devices > 1:
        return "host", "data-parallel runs gather on the host" + (
            " (dataset.placement: device asked)" if setting == "device" else "")
    if setting == "device":
        return "device", "dataset.placement: device"
    backend = backend or jax.default_backend()
    if backend == "cpu":
        return "host", "auto: on the CPU the host gather is the device's"
    if free_bytes is None:
        stats = jax.devices()[0].memory_stats() or {}
        limit, used = stats.get("bytes_limit"), stats.get("bytes_in_use", 0)
        free_bytes = None if limit is None else int(limit) - int(used)
    if free_bytes is None:
        return "host", "auto: the device reports no free memory figure"
    if store_bytes > share * free_bytes:
        return "host", (f"auto: the store ({store_bytes / 2**20:.0f} MiB) exceeds {share:.0%} of the device's free "
                        f"{free_bytes / 2**20:.0f} MiB")
    return "device", (f"auto: the store ({store_bytes / 2**20:.0f} MiB) fits {share:.0%} of the device's free "
                      f"{free_bytes / 2**20:.0f} MiB")


def store_bytes(store) -> int:
    """Bytes a :class:`DeviceStore` of ``store`` will take on the device (before building it)."""
    # int32 species; float32 (dx, dy, dz, d) + int32 sender + receiver per edge; int32 offsets, sizes, targets
    words = (len(store.species) + 6 * len(store.senders) + len(store.node_offsets) + len(store.edge_offsets)
             + 3 * len(store.n_node))
    return 4 * int(words)


def _gather(a: dict, slots: jax.Array, n_node: int, n_edge: int, hub: bool) -> GraphBatch:
    valid = slots >= 0
    g = jnp.where(valid, slots, 0)
    nn = jnp.where(valid, a["n_node"][g], 0)
    ne = jnp.where(valid, a["n_edge"][g], 0)
    node_end, edge_end = jnp.cumsum(nn), jnp.cumsum(ne)
    node_start, edge_start = node_end - nn, edge_end - ne
    tn, te, k = node_end[-1], edge_end[-1], valid.sum()
    last = slots.shape[0] - 1

    r = jnp.arange(n_node, dtype=jnp.int32)
    gr = jnp.minimum(jnp.searchsorted(node_end, r, side="right"), last)
    node_src = a["node_offsets"][g[gr]] + r - node_start[gr]
    nodes = jnp.where(r < tn, a["species"][jnp.where(r < tn, node_src, 0)], 0)

    e = jnp.arange(n_edge, dtype=jnp.int32)
    real = e < te
    ge = jnp.minimum(jnp.searchsorted(edge_end, e, side="right"), last)
    edge_src = jnp.where(real, a["edge_offsets"][g[ge]] + e - edge_start[ge], 0)
    edges = jnp.where(real[:, None], a["edges"][edge_src], 0.0)
    shift = node_start[ge]
    if hub:
        pad = jnp.broadcast_to(tn, e.shape)
    else:
        pad = tn + (e - te) % jnp.maximum(n_node - tn, 1)
    senders = jnp.where(real, a["senders"][edge_src] + shift, pad).astype(jnp.int32)
    receivers = jnp.where(real, a["receivers"][edge_src] + shift, pad).astype(jnp.int32)

    zero = jnp.zeros(1, jnp.int32)
    g_n = jnp.concatenate([nn, zero]).at[k].set(n_node - tn)
    g_e = jnp.concatenate([ne, zero]).at[k].set(n_edge - te)
    targets = jnp.concatenate([jnp.where(valid, a["targets"][g], 0.0), jnp.zeros(1, jnp.float32)])
    mask = jnp.concatenate([valid, jnp.zeros(1, bool)])
    graph = jraph.GraphsTuple(nodes=nodes.astype(jnp.int32), edges=edges.astype(jnp.float32), senders=senders,
                              receivers=receivers, n_node=g_n.astype(jnp.int32), n_edge=g_e.astype(jnp.int32),
                              globals=None)
    return GraphBatch(graph, targets.astype(jnp.float32), mask)


def _gather_slots(a: dict, slots: jax.Array, n_node: int, n_edge: int) -> GraphBatch:
    """One bucket's slot stack: graph ``slots[j]`` alone in slot ``j`` (-1: an empty slot)."""
    valid = slots >= 0
    g = jnp.where(valid, slots, 0)
    nn = jnp.where(valid, a["n_node"][g], 0)[:, None]
    ne = jnp.where(valid, a["n_edge"][g], 0)[:, None]
    r = jnp.arange(n_node, dtype=jnp.int32)[None, :]
    real_n = r < nn
    nodes = jnp.where(real_n, a["species"][jnp.where(real_n, a["node_offsets"][g][:, None] + r, 0)], 0)
    e = jnp.arange(n_edge, dtype=jnp.int32)[None, :]
    real_e = e < ne
    src = jnp.where(real_e, a["edge_offsets"][g][:, None] + e, 0)
    edges = jnp.where(real_e[..., None], a["edges"][src], 0.0)
    senders = jnp.where(real_e, a["senders"][src], nn).astype(jnp.int32)  # padding: the first padding node
    receivers = jnp.where(real_e, a["receivers"][src], nn).astype(jnp.int32)
    n0, e0 = nn[:, 0], ne[:, 0]
    g_n = jnp.stack([jnp.where(valid, n0, n_node), jnp.where(valid, n_node - n0, 0)], axis=1).astype(jnp.int32)
    g_e = jnp.stack([jnp.where(valid, e0, n_edge), jnp.where(valid, n_edge - e0, 0)], axis=1).astype(jnp.int32)
    targets = jnp.where(valid, a["targets"][g], 0.0).astype(jnp.float32)
    graph = jraph.GraphsTuple(nodes=nodes.astype(jnp.int32), edges=edges.astype(jnp.float32), senders=senders,
                              receivers=receivers, n_node=g_n, n_edge=g_e, globals=None)
    return GraphBatch(graph, targets, valid)
