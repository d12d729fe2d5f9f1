"""The ``batching`` section: the method, its batch size, budget and options."""

from __future__ import annotations

from dataclasses import dataclass, field

from gnn_batching.config.values import coerce
from gnn_batching.errors import ConfigError

BUDGET_RULES = ("full", "paper", "fit-or-skip", "percentile")


@dataclass(frozen=True)
class BatchingConfig:
    """The ``batching`` config section."""

    method: str = "dynamic"
    batch_size: int = 32
    budget: str = "full"  # dynamic only: full | paper | fit-or-skip | percentile
    success_ratio: float = 0.99  # fit-or-skip
    percentile: float = 90.0  # percentile
    oversize: str = "error"  # error | skip: a graph larger than a fixed budget
    skip_overflow: bool = False  # fit-or-skip: drop (and count) groups that do not fit, TF-GNN style
    # hub (default, jraph's layout: all padding edges on one node) | spread (round-robin over the
    # padding nodes, TF-GNN's). On QM9/SchNet on a 2-core CPU the two were within run-to-run noise.
    pad_edges: str = "hub"
    prefetch: int | str = "auto"  # batches assembled ahead in a background thread (0 = off; auto: 2 on accelerators)
    buckets: int = 4  # buckets: padded shapes on the menu (compiled ahead); autobatch: per-graph buckets
    # packed only: graph slots per batch as a multiple of batch_size - 1 (nodes and edges bind first)
    graph_slack: float = 1.25
    # the study's training sequence (static-* and dynamic): one stream across passes, reshuffled
    # with Python's random per pass, every bs-th graph dropped by static batches (study/order.py)
    study_order: bool = False
    # the study's first batch: it initialises the model and is not trained on (init); train: batch
    # 0 is trained on, as everywhere else here; auto: init under study_order, train otherwise
    study_first_batch: str = "auto"
    # autobatch: ragged (the one-graph model re-interpreted on the disjoint union of
    # autobatch_base's batches), vmap (per-graph buckets under jax.vmap) or auto (ragged when the
    # model can be proven to transform, else vmap, with the reason logged and in the summary)
    autobatch_mode: str = "auto"
    autobatch_base: str = "packed"
    # options a method declares for itself (its class's ``options``: name -> default), e.g. a
    # user's method; unset ones take the declared default
    options: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        from gnn_batching.plugins import method_class

        cls = method_class(self.method)
        declared = dict(getattr(cls, "options", {}) or {})
        for k, v in self.options.items():
            if k not in declared:
                raise ConfigError(f"batching.options.{k}: method {self.method!r} declares no such option; its options: "
                                  f"{', '.join(declared) or 'none'}")
            d = declared[k]
            if d is not None and not isinstance(d, bool) and isinstance(d, (int, float)):
                coerce(v, type(d) if isinstance(d, float) else int, f"batching.options.{k}")
            elif isinstance(d, (bool, str)):
                coerce(v, type(d), f"batching.options.{k}")
        if int(self.batch_size) < 2:
            raise ConfigError(f"batching.batch_size must be >= 2 (it counts the padding graph), got {self.batch_size}")
        if self.budget not in BUDGET_RULES:
            raise ConfigError(f"batching.budget: unknown rule {self.budget!r}; choose one of {', '.join(BUDGET_RULES)}")
        if self.oversize not in ("error", "skip"):
            raise ConfigError(f"batching.oversize must be 'error' or 'skip', got {self.oversize!r}")
        if self.pad_edges not in ("hub", "spread"):
            raise ConfigError(f"batching.pad_edges must be 'hub' or 'spread', got {self.pad_edges!r}")
        if self.prefetch != "auto" and (isinstance(self.prefetch, bool) or not isinstance(self.prefetch, int)
                                        or self.prefetch < 0):
            raise ConfigError(f"batching.prefetch must be 'auto' or an integer >= 0, got {self.prefetch!r}")
        if not 0 < self.percentile <= 100:
            raise ConfigError(f"batching.percentile must be in (0, 100], got {self.percentile}")
        if not 0 < self.success_ratio <= 1:
            raise ConfigError(f"batching.success_ratio must be in (0, 1], got {self.success_ratio}")
        if not 1 <= int(self.buckets) <= 64:
            raise ConfigError(f"batching.buckets must be in [1, 64] (shapes compiled ahead), got {self.buckets}")
        if self.autobatch_mode not in ("auto", "ragged", "vmap"):
            raise ConfigError(f"batching.autobatch_mode: 'auto', 'ragged' or 'vmap', not {self.autobatch_mode!r}")
        if self.autobatch_base == "autobatch" or method_class(self.autobatch_base, "batching.autobatch_base"
                                                              ).layout != "disjoint-union":
            raise ConfigError(f"batching.autobatch_base: {self.autobatch_base!r} does not batch graphs as one "
                              "disjoint union; name one that does (packed, dynamic, buckets, static-*)")
        if self.study_first_batch not in ("auto", "init", "train"):
            raise ConfigError(f"batching.study_first_batch: 'auto', 'init' or 'train', not {self.study_first_batch!r}")
        if self.study_first_batch == "init" and not self.study_order:
            raise ConfigError("batching.study_first_batch: init is the study's stream's rule; it needs "
                              "batching.study_order: true")
        if not 1.0 <= float(self.graph_slack) <= 8.0:
            raise ConfigError(f"batching.graph_slack must be in [1, 8], got {self.graph_slack}")
