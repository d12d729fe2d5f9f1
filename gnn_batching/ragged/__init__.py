"""Ragged autobatch: a function written for ONE unpadded graph, run on a padded disjoint union
with each graph's own values and gradients, or refused.

The function ``fn(params, graph, *per_graph) -> scalar`` sees one graph: ``nodes`` (n, ...),
``edges`` (e, ...), ``senders``/``receivers`` (e,) local indices, ``n_node``/``n_edge`` (1,). It is
traced once with SYMBOLIC sizes (:mod:`~gnn_batching.ragged.levels`), so every value's level
(per node, per edge, per graph, parameter-only) and every size expression is exact, and the jaxpr
is re-interpreted on the union (:mod:`~gnn_batching.ragged.interp`): each primitive by a rule that
states what it means per graph (:mod:`~gnn_batching.ragged.rules`), nested programs, the user's
derivative rules and control flow with their own semantics (:mod:`~gnn_batching.ragged.calls`).
Anything else, and any error while tracing or interpreting, is refused with a
:class:`Refused` (a ``gnn_batching`` error naming the primitive and the user's source line), so
``batching.autobatch_mode: auto`` runs the model another way (vmap). A last line of defence
(:func:`~gnn_batching.ragged.check.check_batch`) compares the union program with each graph run
alone on a real batch before training.
"""

from gnn_batching.ragged.check import CheckResult, check_batch
from gnn_batching.ragged.levels import Refused
from gnn_batching.ragged.loss import masked_mean_loss, masked_sums, ragged_loss, trace
from gnn_batching.ragged.union import Union, as_union, from_batch, one_graph, union_of

__all__ = ["CheckResult", "Refused", "Union", "as_union", "check_batch", "from_batch", "masked_mean_loss",
           "masked_sums", "one_graph", "ragged_loss", "trace", "union_of"]
