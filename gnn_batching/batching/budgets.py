"""Padding policies and budgets: small pure functions over size arrays.

Vocabulary follows jraph: a padded batch has ``n_node`` nodes, ``n_edge`` edges and
``n_graph`` graphs, including ONE padding graph that owns every padding node and edge and
needs at least one padding node. Real capacity is therefore (n_node - 1, n_edge, n_graph - 1).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gnn_batching.config import BUDGET_RULES
from gnn_batching.errors import ConfigError


def next_pow2(v: np.ndarray | int) -> np.ndarray:
    """Smallest power of two >= max(v, 1)."""
    v = np.maximum(np.asarray(v, dtype=np.int64), 1)
    return (1 << np.ceil(np.log2(v)).astype(np.int64)).astype(np.int64)


def ceil_multiple(v: np.ndarray | int, m: int) -> np.ndarray:
    """Smallest multiple of ``m`` >= max(v, 1)."""
    v = np.maximum(np.asarray(v, dtype=np.int64), 1)
    return (-(-v // m) * m).astype(np.int64)


def next64_strict(v: float) -> int:
    """The study's rounding for dynamic budgets: ``64 * (1 + floor(v / 64))`` (strictly above v)."""
    return int(64 * (1 + np.floor(v / 64)))


@dataclass(frozen=True)
class Budget:
    """A fixed padded shape: every batch is padded to exactly this."""

    n_node: int
    n_edge: int
    n_graph: int

    def __post_init__(self) -> None:
        if self.n_graph < 2 or self.n_node < 1 or self.n_edge < 0:
            raise ConfigError(f"impossible budget {self}: need n_graph >= 2, n_node >= 1, n_edge >= 0")

    @property
    def capacity(self) -> tuple[int, int, int]:
        """Real capacity ``(nodes, edges, graphs)``: the budget minus what the padding graph needs."""
        return self.n_node - 1, self.n_edge, self.n_graph - 1

    def fits(self, n_node: np.ndarray, n_edge: np.ndarray) -> np.ndarray:
        """Whether each graph fits on its own, shape ``(k,)`` bool for ``(k,)`` size arrays."""
        return (n_node <= self.n_node - 1) & (n_edge <= self.n_edge)


def budget_from_rule(
    rule: str,
    batch_size: int,
    train_nodes: np.ndarray,
    train_edges: np.ndarray,
    all_nodes: np.ndarray,
    all_edges: np.ndarray,
    *,
    success_ratio: float = 0.99,
    percentile: float = 90.0,
    seed: int = 0,
    n_samples: int = 2000,
    first: bool = False,
) -> Budget:
    """The dynamic budget for ``batch_size`` (which counts the padding graph).

    * ``paper``: the study's rule from 1000 training graphs: ``next64(max(mean * bs, max))`` for
      nodes and edges. The study took the first 1000 graphs of its training split in split order
      (scikit-learn's shuffled order): with ``first`` (``batching.study_order``, with
      ``dataset.split_scheme: study``) so do we, ``train_nodes`` given in split order (full QM9:
      320 / 5,120 at bs 16, 2,368 / 40,704 at bs 128, as the study's code); otherwise 1000 drawn
      at random with ``seed`` (our splits are index-sorted: their first 1000 would be QM9's
      smallest molecules and halve the budget). A later larger graph is NOT covered (the oversize
      policy then decides).
    * ``full``: the same from the whole training split, max-guarded by the largest graph of the
      dataset, so every graph of every split fits.
    * ``fit-or-skip``: the smallest budget that a random batch of ``bs - 1`` training graphs fits
      with probability >= ``success_ratio`` (TF-GNN style; node budget includes the padding node).
    * ``percentile``: node/edge budgets at the given percentile of random ``bs - 1`` batch sums.
    """
    if rule not in BUDGET_RULES:
        raise ConfigError(f"batching.budget: unknown rule {rule!r}; choose one of {', '.join(BUDGET_RULES)}")
    if batch_size < 2:
        raise ConfigError(f"batching.batch_size must be >= 2 (it counts the padding graph), got {batch_size}")
    max_n = int(all_nodes.max())
    max_e = int(all_edges.max())
    if rule in ("paper", "full"):
        if rule == "full":
            sample = slice(None)
        elif first:
            sample = slice(0, 1000)
        else:
            sample = np.random.default_rng(seed).permutation(len(train_nodes))[:1000]
        n, e = train_nodes[sample], train_edges[sample]
        guard_n = int(n.max()) if rule == "paper" else max_n
        guard_e = int(e.max()) if rule == "paper" else max_e
        return Budget(
            next64_strict(max(float(n.mean()) * batch_size, guard_n)),
            next64_strict(max(float(e.mean()) * batch_size, guard_e)),
            batch_size,
        )
    rng = np.random.default_rng(seed)
    k = min(batch_size - 1, len(train_nodes))
    picks = np.stack([rng.choice(len(train_nodes), size=k, replace=False) for _ in range(n_samples)])
    node_sums = train_nodes[picks].sum(axis=1)
    edge_sums = train_edges[picks].sum(axis=1)
    if rule == "percentile":
        if not 0 < percentile <= 100:
            raise ConfigError(f"batching.percentile must be in (0, 100], got {percentile}")
        nn = int(np.ceil(np.percentile(node_sums, percentile))) + 1
        ne = int(np.ceil(np.percentile(edge_sums, percentile)))
    else:
        if not 0 < success_ratio <= 1:
            raise ConfigError(f"batching.success_ratio must be in (0, 1], got {success_ratio}")
        nn, ne = int(node_sums.max()) + 1, int(edge_sums.max())
        for q in np.linspace(success_ratio, 1.0, 101):
            cand_n = int(np.ceil(np.quantile(node_sums, q))) + 1
            cand_e = int(np.ceil(np.quantile(edge_sums, q)))
            if ((node_sums <= cand_n - 1) & (edge_sums <= cand_e)).mean() >= success_ratio:
                nn, ne = cand_n, cand_e
                break
    return Budget(max(nn, max_n + 1), max(ne, max_e), batch_size)
