"""``python -m gnn_batching.cli``: the ``gnn-batching`` command."""

import sys

from gnn_batching.cli import main

sys.exit(main())
