"""AFLOW: the three export containers, entry validation, filters, and the AFLUX client against a
real HTTP server on loopback (several pages, an empty last page, an error object, a truncated
body, slow and failing responses, resume from disk)."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

import numpy as np
import pytest

from gnn_batching.data import DatasetSpec, load_dataset
from gnn_batching.data.aflow import (
    AfluxClient,
    entry_to_structure,
    load_export,
    parse_container,
    structures_from_entries,
)
from gnn_batching.errors import BadEntryError, DataError


def nacl(auid="aflow:0000000000000001", ef=-1.5, **over):
    e = {"auid": auid, "compound": "Cl1Na1", "species": ["Cl", "Na"], "composition": [1, 1], "natoms": 2,
         "geometry": [3.99, 3.99, 3.99, 60.0, 60.0, 60.0],
         "positions_fractional": [[0.5, 0.5, 0.5], [0.0, 0.0, 0.0]],
         "enthalpy_formation_atom": ef, "Egap": 5.0, "dft_type": ["PAW_PBE"], "catalog": "ICSD"}
    e.update(over)
    return e


def test_typed_entry_builds_periodic_structure():
    atoms, t = entry_to_structure(nacl())
    assert atoms.get_chemical_symbols() == ["Cl", "Na"] and atoms.pbc.all()
    assert atoms.cell.volume == pytest.approx(44.916, abs=1e-3)
    assert t["enthalpy_formation_atom"] == -1.5 and t["Egap"] == 5.0


def test_legacy_object_and_csv_export(tmp_path):
    legacy = {
        "2 of 2": {"auid": "aflow:b", "species": "Cl,Na", "composition": "1,1", "natoms": "2",
                   "geometry": "3.99,3.99,3.99,60,60,60", "positions_fractional": "0.5,0.5,0.5;1.02,0,0",
                   "enthalpy_formation_atom": "-1.2", "dft_type": "PAW_PBE"},
        "1 of 2": {"auid": "aflow:a", "species": "Si", "composition": "2", "natoms": "2",
                   "geometry": "3.8669,3.8669,3.8669,60,60,60", "positions_fractional": "0,0,0;0.25,0.25,0.25",
                   "enthalpy_formation_atom": "0.0", "dft_type": "PAW_PBE"},
    }
    entries = parse_container(legacy, "legacy.json")
    assert [e["auid"] for e in entries] == ["aflow:a", "aflow:b"]
    s = structures_from_entries(entries)
    assert len(s) == 2 and s.targets["enthalpy_formation_atom"].tolist() == [0.0, -1.2]
    # positions slightly outside [0, 1) are wrapped
    frac = s.positions[2:4] @ np.linalg.inv(s.cells[1])
    assert ((frac > -1e-9) & (frac < 1)).all()
    csv = tmp_path / "export.csv"
    csv.write_text(
        "auid,species,composition,natoms,geometry,positions_fractional,enthalpy_formation_atom,Egap,dft_type\n"
        'aflow:c,"[\'Cl\', \'Na\']","[1, 1]",2,"[3.99, 3.99, 3.99, 60.0, 60.0, 60.0]",'
        '"[[0.5, 0.5, 0.5], [0.0, 0.0, 0.0]]",-1.1,4.0,"[\'PAW_PBE\']"\n'
        'aflow:c,"[\'Cl\', \'Na\']","[1, 1]",2,"[3.99, 3.99, 3.99, 60.0, 60.0, 60.0]",'
        '"[[0.5, 0.5, 0.5], [0.0, 0.0, 0.0]]",-1.1,4.0,"[\'PAW_PBE\']"\n'
    )
    entries = load_export(str(csv))
    assert len(entries) == 1  # deduplicated by auid
    assert structures_from_entries(entries, target="Egap").targets["Egap"].tolist() == [4.0]


@pytest.mark.parametrize(
    "over, message",
    [
        ({"composition": [1, 2]}, "atom counts disagree"),
        ({"natoms": 3}, "atom counts disagree"),
        ({"species": ["Cl", "Qq"]}, "unknown element 'Qq'"),
        ({"geometry": [3.99, 3.99, 3.99, 0.0, 0.0, 0.0]}, "cell"),
        ({"positions_fractional": [[np.nan, 0, 0], [0, 0, 0]]}, "NaN or infinite"),
        ({"geometry": "1,2"}, "6 cell parameters"),
    ],
)
def test_bad_entries_named_by_auid(over, message):
    with pytest.raises(DataError, match=f"aflow:0000000000000001.*{message}"):
        structures_from_entries([nacl(**over)])


def test_missing_target_skip_and_filters():
    entries = [nacl("aflow:1"), nacl("aflow:2", ef=None), nacl("aflow:3", ef=100.0),
               nacl("aflow:4", dft_type=["US"])]
    with pytest.raises(BadEntryError, match="aflow:2: missing target"):
        structures_from_entries(entries)
    s = structures_from_entries(entries, skip_bad=True)
    assert s.ids.tolist() == ["aflow:1", "aflow:3", "aflow:4"] and len(s.skipped) == 1
    f = structures_from_entries(entries, skip_bad=True, dft_type="PAW_PBE", ef_range=(-10, 70))
    assert f.ids.tolist() == ["aflow:1"]


# ------------------------------------------------------------------ loopback AFLUX server


class Aflux:
    """Serves pages of hand-made entries; ``script[page]`` lists the responses for successive tries."""

    def __init__(self, pages, script=None):
        self.pages = pages
        self.script = script or {}
        self.hits: dict[int, int] = {}
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                q = unquote(self.path)
                page = int(q.split("$paging(")[1].split(",")[0])
                n = outer.hits.get(page, 0)
                outer.hits[page] = n + 1
                actions = outer.script.get(page, [])
                action = actions[n] if n < len(actions) else "ok"
                if action == "500":
                    self.send_response(500)
                    self.end_headers()
                    return
                if action == "slow":
                    time.sleep(1.0)
                body = json.dumps(outer.pages[page - 1] if page <= len(outer.pages) else [])
                if action == "truncated":
                    body = body[: len(body) // 2]
                if action == "error":
                    body = json.dumps({"error": "invalid matchbook keyword"})
                data = body.encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                try:
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/API/aflux/v1.0/"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


PAGES = [[nacl("aflow:1"), nacl("aflow:2")], [nacl("aflow:3"), nacl("aflow:2")], []]


def _client(url, **kw):
    return AfluxClient(base_url=url, page_size=2, retries=kw.pop("retries", 3), backoff_s=0.01,
                       timeout_s=kw.pop("timeout_s", 5.0), **kw)


def test_client_pages_until_empty_and_dedupes(tmp_path):
    with Aflux(PAGES) as srv:
        entries = _client(srv.url).download(str(tmp_path / "pages"))
    assert [e["auid"] for e in entries] == ["aflow:1", "aflow:2", "aflow:3"]
    assert srv.hits == {1: 1, 2: 1, 3: 1}


def test_client_retries_truncated_failing_and_slow(tmp_path):
    script = {1: ["truncated", "500", "ok"], 2: ["slow", "ok"]}
    with Aflux(PAGES, script) as srv:
        entries = _client(srv.url, timeout_s=0.3).download(str(tmp_path / "pages"))
    assert len(entries) == 3
    assert srv.hits[1] == 3 and srv.hits[2] == 2


def test_client_error_object_and_giving_up(tmp_path):
    with Aflux(PAGES, {1: ["error"]}) as srv, pytest.raises(DataError, match="server error: invalid matchbook"):
        _client(srv.url).download(str(tmp_path / "a"))
    with Aflux(PAGES, {1: ["500"] * 10}) as srv, pytest.raises(DataError, match=r"page 1 .* failed after 3 tries"):
        _client(srv.url, retries=2).download(str(tmp_path / "b"))


def test_interrupted_download_resumes_from_disk(tmp_path):
    out = str(tmp_path / "pages")
    with Aflux(PAGES, {2: ["500"] * 10}) as srv, pytest.raises(DataError):
        _client(srv.url, retries=1).download(out)
    with Aflux(PAGES) as srv:
        entries = _client(srv.url).download(out)
    assert srv.hits.get(1) is None  # page 1 came from disk
    assert len(entries) == 3


def test_aflow_dataset_from_export(tmp_path):
    p = tmp_path / "aflow.json"
    p.write_text(json.dumps([nacl(f"aflow:{i}", ef=-1.0 - i * 0.01) for i in range(10)]))
    ds = load_dataset(DatasetSpec(name="aflow", source=str(p)))
    assert ds.store.recipe.kind == "knn" and (ds.store.n_edge == 24).all()
    assert ds.target == "enthalpy_formation_atom" and ds.unit == "eV/atom"
