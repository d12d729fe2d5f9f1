"""AFLOW: an AFLUX client (paged, retried, resumable) and a loader for AFLOW exports.

Three containers are understood (see ``shared/reference/data-notes.md``):
(1) a JSON list of entries with typed values (AFLUX today); (2) the legacy JSON object
keyed ``"1 of N"``... whose values are strings; (3) a pandas CSV export whose list columns
are Python-literal strings. Each entry becomes a periodic structure; an entry that fails a
check is reported by its auid and never half-used.
"""

from __future__ import annotations

import ast
import glob
import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from gnn_batching.data.structures import StructureSet, from_atoms_list
from gnn_batching.errors import BadEntryError, DataError

AFLUX_URL = "https://aflow.org/API/aflux/v1.0/"
MATCHBOOK = (
    "auid,aurl,compound,species(*),composition(*),geometry(*),positions_fractional(*),"
    "enthalpy_formation_atom(*),Egap(*),Egap_type,dft_type,ldau_type,natoms,catalog"
)
TARGET_UNITS = {"enthalpy_formation_atom": "eV/atom", "Egap": "eV"}
DEFAULT_TARGET = "enthalpy_formation_atom"


# ---------------------------------------------------------------- client


@dataclass
class AfluxClient:
    """Pages through AFLUX results; finished pages are kept on disk so a download resumes.

    ``base_url`` is configurable so the client can be tested against a loopback server.
    """

    base_url: str = AFLUX_URL
    matchbook: str = MATCHBOOK
    page_size: int = 1000
    retries: int = 4
    backoff_s: float = 1.0
    timeout_s: float = 120.0
    sleep: Callable[[float], None] = time.sleep

    def page_url(self, page: int) -> str:
        return f"{self.base_url}?{self.matchbook},$paging({page},{self.page_size}),format(json)"

    def fetch_page(self, page: int) -> list:
        """One page as a list of entries; retried with exponential back-off."""
        url = self.page_url(page)
        last = ""
        for attempt in range(self.retries + 1):
            try:
                with urllib.request.urlopen(url, timeout=self.timeout_s) as resp:
                    body = resp.read()
                data = json.loads(body.decode("utf-8"))
                if isinstance(data, dict) and not _is_legacy(data):
                    # An error object is an answer, not a transient failure: do not retry.
                    msg = data.get("error") or data.get("message") or json.dumps(data)[:200]
                    raise DataError(f"AFLUX page {page} ({url}): server error: {msg}")
                return parse_container(data, f"AFLUX page {page}")
            except DataError:
                raise
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError, ValueError) as exc:
                last = f"{type(exc).__name__}: {exc}"
                if attempt < self.retries:
                    self.sleep(self.backoff_s * 2**attempt)
        raise DataError(f"AFLUX page {page} ({url}): failed after {self.retries + 1} tries ({last})")

    def download(self, out_dir: str, max_pages: int | None = None, progress=None) -> list[dict]:
        """Fetch pages 1, 2, ... until an empty page; resume from pages already on disk.

        Returns the entries, deduplicated by ``auid`` (first occurrence kept).
        """
        os.makedirs(out_dir, exist_ok=True)
        page = 1
        while max_pages is None or page <= max_pages:
            path = os.path.join(out_dir, f"page_{page:05d}.json")
            if os.path.exists(path):
                with open(path, encoding="utf-8") as fh:
                    entries = json.load(fh)
            else:
                entries = self.fetch_page(page)
                tmp = path + ".tmp"
                with open(tmp, "w", encoding="utf-8") as fh:
                    json.dump(entries, fh)
                os.replace(tmp, path)
            if progress:
                progress(page, len(entries))
            if not entries:
                break
            page += 1
        return read_pages(out_dir)


def read_pages(out_dir: str) -> list[dict]:
    entries: list[dict] = []
    for path in sorted(glob.glob(os.path.join(out_dir, "page_*.json"))):
        with open(path, encoding="utf-8") as fh:
            entries.extend(json.load(fh))
    return dedupe(entries)


def dedupe(entries: Iterable[dict]) -> list[dict]:
    seen: set[str] = set()
    out = []
    for e in entries:
        key = str(e.get("auid", id(e)))
        if key not in seen:
            seen.add(key)
            out.append(e)
    return out


# ---------------------------------------------------------------- containers


def _is_legacy(obj: dict) -> bool:
    return bool(obj) and all(" of " in str(k) for k in obj)


def parse_container(data, where: str) -> list[dict]:
    """Entries of a JSON list or a legacy ``"i of N"`` object."""
    if isinstance(data, list):
        for i, e in enumerate(data):
            if not isinstance(e, dict):
                raise DataError(f"{where}: entry {i} is not an object")
        return data
    if isinstance(data, dict):
        if _is_legacy(data):
            keys = sorted(data, key=lambda k: int(str(k).split(" of ")[0]))
            return [data[k] for k in keys]
        msg = data.get("error") or json.dumps(data)[:200]
        raise DataError(f"{where}: not a list of entries (error object: {msg})")
    raise DataError(f"{where}: expected a JSON list of entries, got {type(data).__name__}")


def load_export(path: str) -> list[dict]:
    """Entries from a JSON file, a CSV export or a directory of downloaded pages."""
    if os.path.isdir(path):
        return read_pages(path)
    if not os.path.exists(path):
        raise DataError(f"{path}: no such file")
    if path.endswith(".csv"):
        import pandas as pd

        try:
            df = pd.read_csv(path)
        except (OSError, ValueError) as exc:
            raise DataError(f"{path}: cannot read CSV ({exc})") from None
        return dedupe(df.to_dict("records"))
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read JSON ({exc})") from None
    return dedupe(parse_container(data, path))


# ---------------------------------------------------------------- entries


def _as_list(value, conv=float, sep=","):
    """Typed list, legacy 'a,b,c' / 'x,y,z;x,y,z' string, or CSV literal '[...]' string."""
    if isinstance(value, float) and np.isnan(value):
        raise ValueError("missing")
    if isinstance(value, str):
        v = value.strip()
        if v.startswith("["):
            value = ast.literal_eval(v)
        elif ";" in v:
            return [[conv(x) for x in row.split(",")] for row in v.split(";") if row.strip()]
        else:
            return [conv(x) for x in v.split(sep) if x.strip()]
    if isinstance(value, (list, tuple)):
        return [_as_list(x, conv) if isinstance(x, (list, tuple)) else conv(x) for x in value]
    return [conv(value)]


def entry_to_structure(entry: dict):
    """(ase.Atoms, {target: value}) for one entry; DataError names the auid on failure."""
    from ase import Atoms
    from ase.data import atomic_numbers

    auid = str(entry.get("auid", "<no auid>"))
    try:
        species = [str(s).strip() for s in _as_list(entry["species"], conv=str)]
        comp = [int(round(c)) for c in _as_list(entry["composition"])]
        geom = _as_list(entry["geometry"])
        frac = np.array(_as_list(entry["positions_fractional"]), dtype=np.float64).reshape(-1, 3)
    except KeyError as exc:
        raise DataError(f"AFLOW entry {auid}: missing field {exc.args[0]!r}") from None
    except (ValueError, SyntaxError, TypeError) as exc:
        raise DataError(f"AFLOW entry {auid}: malformed field ({exc})") from None
    for s in species:
        if s not in atomic_numbers:
            raise DataError(f"AFLOW entry {auid}: unknown element {s!r}")
    if len(species) != len(comp):
        raise DataError(f"AFLOW entry {auid}: {len(species)} species but {len(comp)} composition counts")
    n = sum(comp)
    natoms = entry.get("natoms")
    if n != len(frac) or (natoms is not None and not _isnan(natoms) and int(natoms) != n):
        raise DataError(
            f"AFLOW entry {auid}: atom counts disagree (composition {n}, positions {len(frac)}, natoms {natoms})"
        )
    if len(geom) != 6:
        raise DataError(f"AFLOW entry {auid}: geometry needs 6 cell parameters, got {len(geom)}")
    if not (np.isfinite(frac).all() and np.isfinite(geom).all()):
        raise DataError(f"AFLOW entry {auid}: NaN or infinite geometry or positions")
    symbols = [s for s, c in zip(species, comp) for _ in range(c)]
    try:
        with np.errstate(invalid="ignore", divide="ignore"):
            atoms = Atoms(symbols=symbols, cell=geom, pbc=True)
    except (ValueError, AssertionError) as exc:
        raise DataError(f"AFLOW entry {auid}: impossible cell {geom} ({exc})") from None
    if abs(atoms.cell.volume) < 1e-6 or not np.isfinite(atoms.cell.volume):
        raise DataError(f"AFLOW entry {auid}: zero-volume cell {geom}")
    atoms.set_scaled_positions(frac)
    atoms.wrap()
    targets = {}
    for key in TARGET_UNITS:
        v = entry.get(key)
        try:
            targets[key] = float(_as_list(v)[0]) if v is not None else float("nan")
        except (ValueError, TypeError, IndexError):
            targets[key] = float("nan")
    return atoms, targets


def _isnan(v) -> bool:
    return isinstance(v, float) and np.isnan(v)


def passes_filters(entry: dict, dft_type: str | None, ef_range: tuple[float, float] | None) -> bool:
    if dft_type:
        try:
            types = [str(t) for t in _as_list(entry.get("dft_type", []), conv=str)]
        except (ValueError, SyntaxError):
            types = []
        if dft_type not in types:
            return False
    if ef_range is not None:
        try:
            ef = float(_as_list(entry.get("enthalpy_formation_atom"))[0])
        except (ValueError, TypeError, IndexError, SyntaxError):
            return True  # a missing target is reported by the target check, not filtered away
        if not (ef_range[0] < ef < ef_range[1]):
            return False
    return True


def structures_from_entries(
    entries: list[dict],
    target: str = DEFAULT_TARGET,
    skip_bad: bool = False,
    dft_type: str | None = None,
    ef_range: tuple[float, float] | None = None,
    name: str = "aflow",
) -> StructureSet:
    if target not in TARGET_UNITS:
        raise DataError(f"AFLOW target {target!r} unknown; choose one of {sorted(TARGET_UNITS)}")
    atoms_list, ids, tvals, bad = [], [], {k: [] for k in TARGET_UNITS}, []
    for e in entries:
        if not passes_filters(e, dft_type, ef_range):
            continue
        auid = str(e.get("auid", f"<entry {len(ids) + len(bad)}>"))
        try:
            atoms, t = entry_to_structure(e)
            if not np.isfinite(t[target]):
                raise DataError(f"AFLOW entry {auid}: missing target {target!r}")
        except DataError as exc:
            if not skip_bad:
                raise BadEntryError(str(exc)) from None
            bad.append(str(exc))
            continue
        atoms_list.append(atoms)
        ids.append(auid)
        for k in TARGET_UNITS:
            tvals[k].append(t[k])
    if not atoms_list:
        raise DataError(f"{name}: no usable AFLOW entries ({len(bad)} bad, {len(entries)} read)")
    return from_atoms_list(
        name, atoms_list, {k: np.array(v) for k, v in tvals.items()}, TARGET_UNITS, ids, target, skipped=bad
    )
