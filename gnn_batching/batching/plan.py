"""An epoch's plan: which graphs go in which batch, and each batch's padded shape.

Methods (``methods.py``) produce plans from size arrays alone; the assembler (``assemble.py``)
turns a plan into arrays. A leaf module, so both can read it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class EpochPlan:
    """``order[bounds[b]:bounds[b+1]]`` are the store indices of batch ``b``, padded to ``shapes[b]``."""

    order: np.ndarray
    bounds: np.ndarray
    shapes: np.ndarray  # (B, 3): n_node, n_edge, n_graph
    skipped: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    # per position of ``order``: the slot group (shape bucket) a graph is placed in, for layouts
    # that pad graphs one by one (``autobatch``); None for one disjoint-union batch per step
    groups: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.shapes.shape[0])

    def batch(self, b: int) -> np.ndarray:
        """Store indices of batch ``b``, shape ``(real graphs of b,)``."""
        return self.order[self.bounds[b] : self.bounds[b + 1]]

    def tail(self, b: int) -> EpochPlan:
        """The plan from batch ``b`` on (where a resumed run picks up within an epoch)."""
        lo = int(self.bounds[b])
        groups = self.groups[lo:] if self.groups is not None else None
        return EpochPlan(self.order[lo:], self.bounds[b:] - lo, self.shapes[b:], self.skipped, groups)

    def real_sizes(self, n_node: np.ndarray, n_edge: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Real nodes, edges and graphs of each batch, each shape ``(B,)``."""
        cn = np.concatenate([[0], np.cumsum(n_node[self.order])])
        ce = np.concatenate([[0], np.cumsum(n_edge[self.order])])
        lo, hi = self.bounds[:-1], self.bounds[1:]
        return cn[hi] - cn[lo], ce[hi] - ce[lo], hi - lo

    def stats(self, n_node: np.ndarray, n_edge: np.ndarray) -> dict:
        """Per-epoch statistics: batches, graphs, distinct shapes, fill (real / padded)."""
        if len(self) == 0:
            return {"batches": 0, "graphs": 0, "skipped": len(self.skipped), "distinct_shapes": 0}
        real_n, real_e, real_g = self.real_sizes(n_node, n_edge)
        pn, pe, pg = self.shapes[:, 0], self.shapes[:, 1], self.shapes[:, 2]
        node_fill = real_n / pn
        edge_fill = np.where(pe > 0, real_e / np.maximum(pe, 1), 1.0)
        graph_fill = real_g / pg
        return {
            "batches": len(self),
            "graphs": int(real_g.sum()),
            "skipped": len(self.skipped),
            "distinct_shapes": len({tuple(s) for s in self.shapes.tolist()}),
            "real_graphs_per_batch_mean": float(real_g.mean()),
            "node_fill": float(real_n.sum() / pn.sum()),
            "edge_fill": float(real_e.sum() / max(pe.sum(), 1)),
            "graph_fill": float(real_g.sum() / pg.sum()),
            "node_fill_min": float(node_fill.min()),
            "edge_fill_min": float(edge_fill.min()),
            "graph_fill_min": float(graph_fill.min()),
        }
