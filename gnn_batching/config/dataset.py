"""The ``dataset`` section: what to load and how to turn it into graphs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gnn_batching.config.values import is_number
from gnn_batching.errors import ConfigError


@dataclass(frozen=True)
class DatasetSpec:
    """What to load and how to turn it into graphs (the ``dataset`` config section)."""

    name: str = "qm9"
    source: str | None = None
    limit: int | None = None
    target: str | None = None
    graph: str | None = None
    cutoff: float = 5.0
    k: int = 12
    split: tuple = (0.8, 0.1, 0.1)
    split_seed: int = 0
    split_scheme: str = "ours"  # ours (numpy, each split sorted) | study (scikit-learn's, in split order)
    placement: str = "auto"  # auto | host | device: where padded batches are gathered (train/device_store.py)
    device_share: float = 0.25  # auto: the store goes to the device if it needs at most this share of free memory
    skip_bad: bool = False
    targets_csv: str | None = None
    download: bool = False
    dft_type: str | None = None
    ef_range: tuple | None = None
    module: str | None = None
    options: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Check everything that can be checked without reading data (messages name the key)."""
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"dataset.limit must be >= 1 (or null for every graph), got {self.limit}")
        if self.split_seed < 0:
            raise ConfigError(f"dataset.split_seed must be >= 0, got {self.split_seed}")
        check_split(self.split)
        if self.placement not in ("auto", "host", "device"):
            raise ConfigError(f"dataset.placement must be 'auto', 'host' or 'device', got {self.placement!r}")
        if not 0 < float(self.device_share) <= 1:
            raise ConfigError(f"dataset.device_share must be in (0, 1], got {self.device_share}")
        if self.split_scheme not in ("ours", "study"):
            raise ConfigError(f"dataset.split_scheme must be 'ours' or 'study', got {self.split_scheme!r}")
        sizes = all(isinstance(x, int) for x in self.split) and any(x > 1 for x in self.split)
        if self.split_scheme == "study" and sizes:
            raise ConfigError(f"dataset.split: split_scheme 'study' takes fractions, got sizes {list(self.split)}")
        if self.ef_range is not None and (len(self.ef_range) != 2 or not all(is_number(x) for x in self.ef_range)):
            raise ConfigError(f"dataset.ef_range must be [low, high] in eV/atom, got {list(self.ef_range)}")


def check_split(split: Any) -> None:
    """``dataset.split``: three fractions summing to 1, or three sizes (test may be -1 = the rest).

    Fractions must give every split a share > 0; an empty validation or test split would
    report a meaningless error, so it is refused here rather than evaluated.
    """
    if not isinstance(split, (list, tuple)) or len(split) != 3:
        raise ConfigError(f"dataset.split must be [train, val, test] (3 numbers), got {split!r}")
    if not all(is_number(x) for x in split):
        raise ConfigError(f"dataset.split must hold 3 numbers, got {list(split)!r}")
    if all(isinstance(x, int) for x in split) and any(x > 1 for x in split):
        a, b, c = split
        if a < 1 or b < 1 or (c < 1 and c != -1):
            raise ConfigError(f"dataset.split: sizes {list(split)} must be >= 1 (test may be -1 = the rest)")
        return
    if min(split) <= 0 or max(split) >= 1 or abs(sum(split) - 1.0) > 1e-6:
        raise ConfigError(f"dataset.split: fractions {list(split)} must each be in (0, 1) and sum to 1")
