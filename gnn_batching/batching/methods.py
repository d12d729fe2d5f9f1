"""Batching methods as pluggable strategies that PLAN an epoch from size arrays alone.

A plan says which graphs go in which batch and each batch's padded shape; the assembler
(``assemble.py``) then gathers the arrays. Planning is vectorised NumPy over per-graph
sizes, so a whole epoch's plan (and hence every shape that will be compiled, the fill, the
graphs per batch) is known before any batch is built.

Methods (``batch_size`` counts the padding graph, as in the study: a static batch holds
``batch_size - 1`` real graphs):

* ``static-pow2``  fixed count; nodes -> next power of two >= sum + 1, edges -> >= sum
* ``static-64``    fixed count; nodes -> next multiple of 64 >= sum + 1, edges -> >= sum
* ``static-max``   fixed count; padded to the dataset's tight worst case (one shape)
* ``static-exact`` fixed count; no rounding (a new shape almost every batch)
* ``dynamic``      greedy order-preserving next-fit into a budget (jraph ``dynamically_batch``
                   semantics), every batch padded to the budget (one shape)
* ``buckets``      up to ``batch_size - 1`` graphs (cut early only at the largest menu shape),
                   each batch padded to the smallest of ``batching.buckets`` menu shapes chosen
                   from the size distribution (``menu.py``); every menu shape compiled AHEAD of time
* ``packed``       two-dimensional balanced bin packing (``packing.py``) into one budget of
                   ``batch_size - 1`` mean-sized graphs' nodes and edges (one shape, compiled ahead)

Beyond the study, a method may name shapes to compile before the timed steps
(:meth:`BatchingMethod.compile_ahead`); the training loop compiles them without knowing why.

Every graph of the order is used exactly once per epoch, except graphs removed by an
explicit ``skip`` policy, which are returned in ``EpochPlan.skipped`` and counted.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, replace
from typing import Any, ClassVar

import numpy as np

from gnn_batching.batching.assemble import Batch, iterate_plan
from gnn_batching.batching.budgets import Budget, budget_from_rule, ceil_multiple, next64_strict, next_pow2
from gnn_batching.batching.menu import choose_menu, random_batch_sums, smallest_cover
from gnn_batching.batching.packing import pack_balanced
from gnn_batching.batching.plan import EpochPlan
from gnn_batching.config import BatchingConfig
from gnn_batching.errors import ConfigError, OversizeGraphError
from gnn_batching.plugins import register_method


class BatchingMethod:
    """Base strategy. Subclasses implement :meth:`plan`."""

    name: ClassVar[str] = ""
    # how a step sees a batch: "disjoint-union" (one padded GraphsTuple holding every graph) or
    # "slots" (graphs padded one by one and stacked per shape bucket); the training code maps
    # this to its steps, so the run loop never asks which method it runs
    layout: ClassVar[str] = "disjoint-union"
    # where the method comes from, for comparisons against the study: "study" (the study's
    # static-pow2, static-64 and dynamic), "beyond" (a method of ours or a user's that goes past
    # it) or "variant" (a reference point of the study's kind, e.g. static-max: neither)
    family: ClassVar[str] = "beyond"
    # options the method takes (``batching.options.<name>``): name -> default (the type of the
    # default is the type a config value must have)
    options: ClassVar[dict[str, Any]] = {}
    # (matplotlib colour, marker) in every figure; None: one derived from the name
    style: ClassVar[tuple[str, str] | None] = None

    def __init__(self, cfg: BatchingConfig, n_node: np.ndarray, n_edge: np.ndarray, train_index: np.ndarray,
                 ids: np.ndarray | None = None, seed: int = 0):
        self.cfg = cfg
        self.seed = seed
        self.bs = int(cfg.batch_size)
        self.n_node = np.asarray(n_node, dtype=np.int64)
        self.n_edge = np.asarray(n_edge, dtype=np.int64)
        self.train_index = np.asarray(train_index, dtype=np.int64)
        self.ids = ids

    def plan(self, order: np.ndarray) -> EpochPlan:
        """Plan one epoch.

        Args:
          order: store indices in the order the epoch visits them, shape ``(k,)``.

        Returns:
          The epoch's plan: batches as cut points into (a possibly reordered) ``order``, their
          padded shapes, and any graphs skipped by a documented policy.
        """
        raise NotImplementedError

    def plan_stream(self, window: np.ndarray, limit: int) -> tuple[EpochPlan, int]:
        """Plan a window of a stream that runs across passes (``batching.study_order``).

        Args:
          window: store indices from the start of a batch on, long enough that every batch
            starting before ``limit`` ends inside it.
          limit: only batches that START at a window position below ``limit`` are planned.

        Returns:
          ``(plan, used)``: those batches (graphs the method's stream semantics drop are in
          ``plan.skipped``) and the window position where the next batch starts.

        Raises:
          ConfigError: the method has no stream semantics of the study's (default).
        """
        raise ConfigError(f"batching.study_order: method {self.name!r} has no study batch sequence; "
                          f"use it with static-* or dynamic, or set study_order: false")

    # how a step computes the loss: "batched" (the model over the whole batch) or "ragged" (a
    # one-graph model re-interpreted on the batch: autobatch's ragged mode, gnn_batching/ragged.py)
    step_form: str = "batched"

    @property
    def steps_layout(self) -> str:
        """The steps a batch needs: the layout's, or ``ragged`` for a one-graph model on a union."""
        return "ragged" if self.step_form == "ragged" else self.layout

    def option(self, key: str) -> Any:
        """The value of a declared option: ``batching.options.<key>``, else its declared default."""
        if key not in self.options:
            raise KeyError(f"method {self.name!r} declares no option {key!r} (declared: {', '.join(self.options)})")
        return self.cfg.options.get(key, self.options[key])

    def summary_fields(self) -> dict[str, Any]:
        """The method's own columns in a run's summary and the comparison table (default: its
        declared options' values)."""
        return {f"option_{k}": self.option(k) for k in self.options}

    def describe(self) -> dict:
        """The method's settings as plain data, for the run's ``summary.json``."""
        return {"method": self.name, **{k: v for k, v in asdict(self.cfg).items() if k != "method"}}

    def fixed_shape(self) -> tuple[int, int, int] | None:
        """The single padded shape, for methods that have one."""
        return None

    def compile_ahead(self) -> list[tuple[int, int, int]]:
        """Padded ``(n_node, n_edge, n_graph)`` shapes to compile before the first timed step.

        Empty (the study's methods): each shape compiles when it first occurs, inside the timed
        run. A method that returns shapes promises that every batch it plans has one of them.
        """
        return []

    def common_shape(self, shapes: np.ndarray) -> tuple[int, int, int]:
        """One padded shape for batches that run together on several devices (one SPMD program).

        Args:
          shapes: ``(k, 3)`` planned ``(n_node, n_edge, n_graph)`` shapes of one step's batches.

        Returns:
          The elementwise maximum (a power of two, multiple of 64 or budget again for the
          study's methods, so no new kind of shape appears).
        """
        return tuple(int(x) for x in np.asarray(shapes).max(axis=0))

    def iterate(self, store, plan: EpochPlan, targets: np.ndarray, pad_edges: str = "hub") -> Iterator[Batch]:
        """Assemble the batches of ``plan`` (default: one disjoint-union batch per planned batch)."""
        return iterate_plan(store, plan, targets, pad_edges)

    def for_eval(self) -> BatchingMethod:
        """The layout that evaluates a split: it must never skip a graph, so every method is
        scored on every graph. This method itself unless a skip policy is active."""
        return self


class StaticMethod(BatchingMethod):
    """A fixed number (``batch_size - 1``) of real graphs per batch; the last batch may hold fewer."""

    def shapes_for(self, sum_n: np.ndarray, sum_e: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Padded node and edge counts for batches whose real sums are ``sum_n``, ``sum_e``."""
        raise NotImplementedError

    def plan(self, order: np.ndarray) -> EpochPlan:
        """Cut ``order`` into groups of ``batch_size - 1`` graphs and pad each with :meth:`shapes_for`."""
        order = np.asarray(order, dtype=np.int64)
        per = self.bs - 1
        bounds = np.append(np.arange(0, len(order), per), len(order)).astype(np.int64)
        if len(order) == 0:
            return EpochPlan(order, np.zeros(1, np.int64), np.zeros((0, 3), np.int64))
        starts = bounds[:-1]
        sum_n = np.add.reduceat(self.n_node[order], starts)
        sum_e = np.add.reduceat(self.n_edge[order], starts)
        nn, ne = self.shapes_for(sum_n, sum_e)
        shapes = np.stack([nn, ne, np.full_like(nn, self.bs)], axis=1).astype(np.int64)
        return EpochPlan(order, bounds, shapes)

    def plan_stream(self, window: np.ndarray, limit: int) -> tuple[EpochPlan, int]:
        """The study's static batcher: each batch takes ``batch_size - 1`` graphs of the stream
        and DROPS the next one (its generator yields the full batch instead of keeping the graph
        that arrived), so batch ``k`` starts at ``k * batch_size``; dropped graphs are skipped."""
        k = -(-max(int(limit), 0) // self.bs)
        if k * self.bs > len(window):
            raise ConfigError(f"batching.study_order: a stream window of {len(window)} graphs cannot hold "
                              f"{k} batches of {self.bs}; the training split is smaller than a batch")
        take = np.asarray(window[: k * self.bs], dtype=np.int64).reshape(k, self.bs)
        plan = self.plan(take[:, :-1].ravel())
        return replace(plan, skipped=take[:, -1].copy()), k * self.bs


@register_method("static-pow2")
class StaticPow2(StaticMethod):
    """The study's static batching with nodes and edges rounded up to powers of two."""
    style = ("tab:blue", "s")
    family = "study"

    def shapes_for(self, sum_n, sum_e):
        """Next power of two >= sum + 1 nodes (the padding node) and >= sum edges."""
        return next_pow2(sum_n + 1), next_pow2(sum_e)


@register_method("static-64")
class Static64(StaticMethod):
    """The study's static batching with nodes and edges rounded up to multiples of 64."""
    style = ("tab:orange", "^")
    family = "study"

    def shapes_for(self, sum_n, sum_e):
        """Next multiple of 64 >= sum + 1 nodes and >= sum edges."""
        return ceil_multiple(sum_n + 1, 64), ceil_multiple(sum_e, 64)


@register_method("static-exact")
class StaticExact(StaticMethod):
    """Static batching without rounding: a new compiled shape for almost every batch."""
    style = ("tab:purple", "x")
    family = "variant"

    def shapes_for(self, sum_n, sum_e):
        """Exactly the real sums (+1 padding node)."""
        return sum_n + 1, sum_e


@register_method("static-constant")
class StaticConstant(StaticMethod):
    """The study's static-constant batching (in its code, not its paper's results): every batch
    padded to ONE shape, ``next64(max_nodes * bs) + 1`` nodes and ``next64(max_edges * bs)``
    edges, where ``max_*`` is the largest graph (``next64`` strictly above, as the study's
    ``64 * (1 + floor(v / 64))``). One compilation, much padding. The study took the maxima over
    its training data; here the largest graph of the whole dataset, so no evaluated batch can
    overflow the shape (on QM9 both are 29 atoms / 812 edges)."""
    style = ("tab:cyan", "d")

    family = "study"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._nn = next64_strict(float(self.n_node.max()) * self.bs) + 1
        self._ne = next64_strict(float(self.n_edge.max()) * self.bs)

    def shapes_for(self, sum_n, sum_e):
        """Every batch gets the constant shape."""
        return np.full_like(sum_n, self._nn), np.full_like(sum_e, self._ne)

    def fixed_shape(self):
        """The one padded shape ``(n_node, n_edge, n_graph)``."""
        return self._nn, self._ne, self.bs


@register_method("static-max")
class StaticMax(StaticMethod):
    """Tight worst case over the WHOLE dataset: the ``bs - 1`` largest node counts (+1) and
    the ``bs - 1`` largest edge counts, so any batch of any split fits one shape."""
    style = ("tab:red", "D")

    family = "variant"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        k = min(self.bs - 1, len(self.n_node))
        self._nn = int(np.sort(self.n_node)[::-1][:k].sum()) + 1
        self._ne = int(np.sort(self.n_edge)[::-1][:k].sum())

    def shapes_for(self, sum_n, sum_e):
        """Every batch gets the dataset-wide worst case."""
        return np.full_like(sum_n, self._nn), np.full_like(sum_e, self._ne)

    def fixed_shape(self):
        """The one padded shape ``(n_node, n_edge, n_graph)``."""
        return self._nn, self._ne, self.bs


@register_method("dynamic")
class Dynamic(BatchingMethod):
    """Greedy next-fit packing in stream order into one budget (jraph ``dynamically_batch``)."""
    style = ("tab:green", "o")

    family = "study"

    def __init__(self, *args, budget: Budget | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        tn, te = self.n_node[self.train_index], self.n_edge[self.train_index]
        self.budget = budget or budget_from_rule(
            self.cfg.budget, self.bs, tn, te, self.n_node, self.n_edge,
            success_ratio=self.cfg.success_ratio, percentile=self.cfg.percentile, seed=self.seed,
            first=self.cfg.study_order,
        )
        too_big = ~self.budget.fits(self.n_node, self.n_edge)
        self.oversize = np.flatnonzero(too_big)
        if len(self.oversize) and self.cfg.oversize == "error":
            i = int(self.oversize[0])
            name = self.ids[i] if self.ids is not None else f"index {i}"
            cap = self.budget.capacity
            raise OversizeGraphError(
                f"graph {name} ({self.n_node[i]} nodes, {self.n_edge[i]} edges) does not fit the "
                f"{self.cfg.budget!r} budget (capacity {cap[0]} nodes, {cap[1]} edges); "
                f"{len(self.oversize)} graph(s) too big. Use budget 'full' or oversize 'skip' (counted)."
            )

    def fixed_shape(self):
        """The budget, which every batch is padded to."""
        return self.budget.n_node, self.budget.n_edge, self.budget.n_graph

    def _skips_overflow(self) -> bool:
        return self.cfg.budget == "fit-or-skip" and self.cfg.skip_overflow

    def for_eval(self) -> Dynamic:
        """Same budget, but overflowing groups are split instead of dropped, and the budget grows
        (one extra compiled shape at most) to hold graphs that ``oversize: skip`` leaves out."""
        if not len(self.oversize) and not self._skips_overflow():
            return self
        b = self.budget
        budget = Budget(max(b.n_node, int(self.n_node.max()) + 1), max(b.n_edge, int(self.n_edge.max())), b.n_graph)
        cfg = replace(self.cfg, oversize="error", skip_overflow=False)
        return Dynamic(cfg, self.n_node, self.n_edge, self.train_index, ids=self.ids, budget=budget, seed=self.seed)

    def summary_fields(self) -> dict[str, Any]:
        """The budget rule."""
        return {"budget": self.cfg.budget}

    def describe(self) -> dict:
        """Settings plus the resolved budget and the number of graphs it cannot hold."""
        d = super().describe()
        d.update({"budget_n_node": self.budget.n_node, "budget_n_edge": self.budget.n_edge,
                  "budget_n_graph": self.budget.n_graph, "oversize_graphs": len(self.oversize)})
        return d

    def plan(self, order: np.ndarray) -> EpochPlan:
        """Greedy next-fit in stream order; oversize graphs (and, with ``skip_overflow``, overflowing
        groups) are moved to ``skipped``.
        """
        order = np.asarray(order, dtype=np.int64)
        skipped = np.zeros(0, np.int64)
        if len(self.oversize):
            bad = np.isin(order, self.oversize)
            skipped, order = order[bad], order[~bad]
        cap_n, cap_e, cap_g = self.budget.capacity
        if self._skips_overflow():
            order, dropped = self._fixed_groups_or_skip(order)
            skipped = np.concatenate([skipped, dropped])
            bounds = np.append(np.arange(0, len(order), cap_g), len(order)).astype(np.int64)
        else:
            bounds = greedy_bounds(self.n_node[order], self.n_edge[order], cap_n, cap_e, cap_g)
        b = len(bounds) - 1
        shapes = np.tile(np.array(self.fixed_shape(), dtype=np.int64), (b, 1))
        return EpochPlan(order, bounds, shapes, skipped)

    def plan_stream(self, window: np.ndarray, limit: int) -> tuple[EpochPlan, int]:
        """jraph's ``dynamically_batch`` over a stream: next-fit across pass boundaries, the graph
        that overflows a batch opens the next one (nothing dropped but oversize graphs under
        ``oversize: skip``)."""
        if self._skips_overflow():
            raise ConfigError("batching.study_order: budget 'fit-or-skip' with skip_overflow is not the study's "
                              "dynamic batching; drop one of them")
        window = np.asarray(window, dtype=np.int64)
        plan = self.plan(window)
        pos = np.flatnonzero(~np.isin(window, self.oversize)) if len(self.oversize) else np.arange(len(window))
        starts = pos[plan.bounds[:-1]]
        k = int(np.searchsorted(starts, limit))
        if k >= len(starts):
            raise ConfigError(f"batching.study_order: a stream window of {len(window)} graphs ends inside a "
                              f"batch; the training split is smaller than a batch")
        used = int(starts[k])
        cut = int(plan.bounds[k])
        head = window[:used]
        skipped = head[np.isin(head, self.oversize)] if len(self.oversize) else np.zeros(0, np.int64)
        return EpochPlan(plan.order[:cut], plan.bounds[: k + 1], plan.shapes[:k], skipped), used

    def _fixed_groups_or_skip(self, order):
        cap_n, cap_e, cap_g = self.budget.capacity
        starts = np.arange(0, len(order), cap_g)
        if len(order) == 0:
            return order, np.zeros(0, np.int64)
        sn = np.add.reduceat(self.n_node[order], starts)
        se = np.add.reduceat(self.n_edge[order], starts)
        ok = (sn <= cap_n) & (se <= cap_e)
        group = np.repeat(np.arange(len(starts)), np.diff(np.append(starts, len(order))))
        keep = ok[group]
        return order[keep], order[~keep]


def greedy_bounds(nodes: np.ndarray, edges: np.ndarray, cap_n: int, cap_e: int, cap_g: int) -> np.ndarray:
    """Cut points of greedy next-fit packing (each element must fit on its own).

    Batch ``b`` holds elements ``[bounds[b], bounds[b+1])``: from its start, as many elements as
    keep the node sum <= cap_n, the edge sum <= cap_e and the count <= cap_g. Found with two
    binary searches per batch over the cumulative sums (no per-graph Python loop).
    """
    n = len(nodes)
    cn = np.concatenate([[0], np.cumsum(nodes, dtype=np.int64)])
    ce = np.concatenate([[0], np.cumsum(edges, dtype=np.int64)])
    bounds = [0]
    s = 0
    ss = np.searchsorted
    while s < n:
        end = min(s + cap_g, n,
                  int(ss(cn, cn[s] + cap_n, side="right")) - 1,
                  int(ss(ce, ce[s] + cap_e, side="right")) - 1)
        if end <= s:  # pragma: no cover - oversize graphs are removed before planning
            raise OversizeGraphError(f"element {s} of the stream does not fit the budget")
        bounds.append(end)
        s = end
    return np.asarray(bounds, dtype=np.int64)


@register_method("buckets")
class Buckets(BatchingMethod):
    """Up to ``batch_size - 1`` graphs per batch, padded to the smallest of a few menu shapes.

    The menu (``batching.buckets`` shapes) minimises the expected padded ``n_node + n_edge`` of a
    random batch of ``batch_size - 1`` training graphs (:func:`~gnn_batching.batching.menu.choose_menu`,
    from 4,000 seeded samples); its largest shape holds the sampled maximum and the dataset's
    largest graph. A batch that would exceed the largest shape is cut before the graph that
    overflows (rare: about 1 in the number of samples), so no graph is ever skipped. Every menu
    shape is compiled ahead of time, so no step compiles while timed.
    """
    style = ("tab:brown", "v")

    n_samples = 4000

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        per = self.bs - 1
        sn, se = random_batch_sums(self.n_node[self.train_index], self.n_edge[self.train_index], per,
                                   self.n_samples, self.seed)
        top = (int(self.n_node.max()) + 1, int(self.n_edge.max()))
        self.menu = choose_menu(sn, se, int(self.cfg.buckets), min_top=top)

    def compile_ahead(self) -> list[tuple[int, int, int]]:
        """Every menu shape."""
        return [(int(n), int(e), self.bs) for n, e in self.menu]

    def common_shape(self, shapes: np.ndarray) -> tuple[int, int, int]:
        """The smallest menu shape holding every batch of the step (never a shape off the menu)."""
        top = np.asarray(shapes).max(axis=0)
        n, e = self.menu[int(smallest_cover(self.menu, top[:1], top[1:2])[0])]
        return int(n), int(e), self.bs

    def summary_fields(self) -> dict[str, Any]:
        """The number of menu shapes."""
        return {"buckets": int(self.cfg.buckets)}

    def describe(self) -> dict:
        """Settings plus the menu of ``(n_node, n_edge, n_graph)`` shapes."""
        return {**super().describe(), "menu": [list(s) for s in self.compile_ahead()]}

    def plan(self, order: np.ndarray) -> EpochPlan:
        """Next-fit into (largest menu shape, ``batch_size - 1`` graphs), then the smallest cover."""
        order = np.asarray(order, dtype=np.int64)
        top_n, top_e = (int(x) for x in self.menu[-1])
        bounds = greedy_bounds(self.n_node[order], self.n_edge[order], top_n - 1, top_e, self.bs - 1)
        if len(order) == 0:
            return EpochPlan(order, bounds, np.zeros((0, 3), np.int64))
        starts = bounds[:-1]
        sum_n = np.add.reduceat(self.n_node[order], starts)
        sum_e = np.add.reduceat(self.n_edge[order], starts)
        pick = self.menu[smallest_cover(self.menu, sum_n + 1, sum_e)]
        shapes = np.column_stack([pick, np.full(len(pick), self.bs)]).astype(np.int64)
        return EpochPlan(order, bounds, shapes)


@register_method("packed")
class Packed(BatchingMethod):
    """Balanced two-dimensional bin packing into one budget (:func:`~gnn_batching.batching.packing.pack_balanced`).

    The budget holds the nodes and edges of ``batch_size - 1`` mean-sized training graphs (at
    least the dataset's largest graph) and ``graph_slack * (batch_size - 1)`` graph slots, so a
    batch averages about ``batch_size - 1`` graphs like the static methods. The epoch order
    (shuffled per epoch by the loader) decides which graphs meet; every graph is packed exactly
    once. One shape, compiled ahead of time.
    """
    style = ("tab:pink", "P")


    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        per = self.bs - 1
        tn, te = self.n_node[self.train_index], self.n_edge[self.train_index]
        cap_n = max(int(np.ceil(per * tn.mean())), int(self.n_node.max())) if len(tn) else int(self.n_node.max())
        cap_e = max(int(np.ceil(per * te.mean())), int(self.n_edge.max())) if len(te) else int(self.n_edge.max())
        cap_g = max(1, int(np.ceil(per * float(self.cfg.graph_slack))))
        self.budget = Budget(cap_n + 1, cap_e, cap_g + 1)

    def fixed_shape(self) -> tuple[int, int, int]:
        """The budget, which every batch is padded to."""
        return self.budget.n_node, self.budget.n_edge, self.budget.n_graph

    def compile_ahead(self) -> list[tuple[int, int, int]]:
        """The one budget shape."""
        return [self.fixed_shape()]

    def describe(self) -> dict:
        """Settings plus the budget."""
        return {**super().describe(), "budget_n_node": self.budget.n_node, "budget_n_edge": self.budget.n_edge,
                "budget_n_graph": self.budget.n_graph}

    def plan(self, order: np.ndarray) -> EpochPlan:
        """Pack ``order`` (already shuffled for training) into balanced batches."""
        order = np.asarray(order, dtype=np.int64)
        cap_n, cap_e, cap_g = self.budget.capacity
        perm, bounds = pack_balanced(self.n_node[order], self.n_edge[order], cap_n, cap_e, cap_g)
        shapes = np.tile(np.array(self.fixed_shape(), dtype=np.int64), (len(bounds) - 1, 1))
        return EpochPlan(order[perm], bounds, shapes)
