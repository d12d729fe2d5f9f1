"""Everything that reproduces the study ("Training speedups via batching for geometric learning").

One home for its rules, each module on the floor of what it needs (``docs/architecture.md``):

* :mod:`~gnn_batching.study.published` (floor 0): its published per-run results and counters;
* :mod:`~gnn_batching.study.split` (floor 1): its train/validation/test split, in its order;
* :mod:`~gnn_batching.study.order` (floor 2): its stream of batches (``StudyOrder``), its first
  batch, the shapes and compile counts its static methods plan; its dynamic budget is the
  ``paper`` rule of :func:`gnn_batching.batching.budgets.budget_from_rule`, beside our rules;
* :mod:`~gnn_batching.study.step` (floor 3): its training step in its own formulation, timed
  beside ours by ``gnn-batching bench roofline --compare study``;
* :mod:`~gnn_batching.study.plan` (floor 3): ``gnn-batching study plan``, planned compile counts
  against its counters;
* :mod:`~gnn_batching.study.compare` and :mod:`~gnn_batching.study.figures` (floor 5): a sweep's
  numbers beside its published runs, and its figures drawn as it drew them.

Importing this package imports none of them.
"""
