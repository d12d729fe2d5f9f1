"""Benchmarks, one module per thing measured (``gnn-batching bench ...``); each prints figures and
ratios against a baseline measured in the same run.

* :mod:`~gnn_batching.bench.assembly`  host batch assembly per method vs jraph (``bench batching``)
* :mod:`~gnn_batching.bench.graphs`    neighbour lists: vesin vs ASE (``bench graphs``)
* :mod:`~gnn_batching.bench.step`      the jitted train step per allocator, model, method (``bench step``)
"""
