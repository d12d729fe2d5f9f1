"""A small menu of padded shapes chosen from a size distribution (the ``buckets`` method).

Batches of ``batch_size - 1`` random training graphs have node and edge sums that spread
widely (QM9 fully connected at bs 32: edges from ~6k to ~13k). One shape for all of them wastes
the difference (``dynamic``, ``static-max``); one shape per batch compiles without end
(``static-exact``, ``static-64``). A menu of ``k`` shapes is the middle ground: each batch is
padded to the smallest menu shape that holds it, and every menu shape is compiled ahead of time.

The menu is chosen to minimise the expected padded work ``E[n_node + n_edge]`` of a random
batch, by dynamic programming over candidate shapes on a grid of joint quantiles:

* sample ``n_samples`` random batches of the training split; their sums ``(sn + 1, se)``
  (one padding node) are the points to cover;
* candidate ``j`` of ``grid`` is ``(quantile_j(sn) + 1, quantile_j(se))``; candidates grow in
  both dimensions, so a point's smallest covering candidate is one index (``needed``);
* choose ``k`` candidates, always including the largest (the sample maximum, guarded to hold
  the dataset's largest single graph), minimising the summed cost of each point's smallest
  chosen cover. ``O(k * grid^2)``.

Pure NumPy, no JAX: the menu is part of the plan, known before any batch is built.
"""

from __future__ import annotations

import numpy as np


def random_batch_sums(n_node: np.ndarray, n_edge: np.ndarray, per_batch: int, n_samples: int,
                      seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Node and edge sums of ``n_samples`` random batches of ``per_batch`` graphs.

    Args:
      n_node: node counts of the graphs to draw from, shape ``(N,)``.
      n_edge: edge counts, shape ``(N,)``.
      per_batch: graphs per batch (capped at ``N``).
      n_samples: batches to draw.
      seed: RNG seed.

    Returns:
      ``(node_sums, edge_sums)``, each of shape ``(n_samples,)``.
    """
    rng = np.random.default_rng(seed)
    n = len(n_node)
    k = min(per_batch, n)
    if n >= 50 * k:  # repeats within a batch are then rare enough not to matter, and it is O(S k)
        picks = rng.integers(0, n, size=(n_samples, k))
    else:  # small splits: k distinct graphs per batch (argpartition of uniform keys, O(S N))
        keys = rng.random((n_samples, n))
        picks = np.argpartition(keys, k - 1, axis=1)[:, :k] if k < n else np.tile(np.arange(n), (n_samples, 1))
    return n_node[picks].sum(axis=1), n_edge[picks].sum(axis=1)


def choose_menu(sum_n: np.ndarray, sum_e: np.ndarray, k: int, min_top: tuple[int, int] = (0, 0),
                grid: int = 64) -> np.ndarray:
    """The ``k`` padded shapes that minimise the mean padded ``n_node + n_edge`` of the samples.

    Args:
      sum_n: real node sums of sampled batches, shape ``(S,)``; one padding node is added.
      sum_e: real edge sums, shape ``(S,)``.
      k: menu size.
      min_top: the largest entry is at least this ``(n_node, n_edge)`` (e.g. the largest graph + 1).
      grid: candidate shapes (quantile levels) the menu is chosen from.

    Returns:
      ``(m, 2)`` int64 array of ``(n_node, n_edge)``, ``m <= k``, increasing in both columns;
      the last entry holds every sample.
    """
    sum_n = np.asarray(sum_n, np.int64)
    sum_e = np.asarray(sum_e, np.int64)
    q = np.linspace(0.0, 1.0, grid)
    cand_n = np.ceil(np.quantile(sum_n, q)).astype(np.int64) + 1
    cand_e = np.ceil(np.quantile(sum_e, q)).astype(np.int64)
    cand_n[-1] = max(cand_n[-1], int(min_top[0]))
    cand_e[-1] = max(cand_e[-1], int(min_top[1]))
    cand = np.unique(np.stack([np.maximum.accumulate(cand_n), np.maximum.accumulate(cand_e)], 1), axis=0)
    g = len(cand)
    # smallest candidate holding each sample: both coordinates must fit
    needed = np.maximum(np.searchsorted(cand[:, 0], sum_n + 1, side="left"),
                        np.searchsorted(cand[:, 1], sum_e, side="left"))
    count = np.bincount(needed, minlength=g).astype(np.float64)
    cum = np.concatenate([[0.0], np.cumsum(count)])  # cum[j+1] = samples needing <= j
    cost = (cand[:, 0] + cand[:, 1]).astype(np.float64)
    k = max(1, min(k, g))
    inf = np.inf
    # best[m, j]: least cost covering every sample that needs <= j with m+1 entries, the last being j
    best = np.full((k, g), inf)
    prev = np.full((k, g), -1, np.int64)
    best[0] = cost * cum[1:]
    for m in range(1, k):
        for j in range(m, g):
            # entry i < j covers up to i; entry j covers (i, j]
            tot = best[m - 1, :j] + cost[j] * (cum[j + 1] - cum[1 : j + 1])
            i = int(np.argmin(tot))
            best[m, j], prev[m, j] = tot[i], i
    m = int(np.argmin(best[:, g - 1]))  # fewer entries may already be optimal (ties: fewest)
    chosen = [g - 1]
    while m > 0:
        chosen.append(int(prev[m, chosen[-1]]))
        m -= 1
    return cand[np.asarray(chosen[::-1])]


def smallest_cover(menu: np.ndarray, padded_n: np.ndarray, sum_e: np.ndarray) -> np.ndarray:
    """Index of the smallest menu entry holding each batch (``len(menu)`` where none does).

    Args:
      menu: ``(m, 2)`` shapes increasing in both columns.
      padded_n: node counts to hold, padding node included, shape ``(B,)``.
      sum_e: edge counts to hold, shape ``(B,)``.
    """
    return np.maximum(np.searchsorted(menu[:, 0], padded_n, side="left"),
                      np.searchsorted(menu[:, 1], sum_e, side="left"))
