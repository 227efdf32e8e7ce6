"""The sweep engine: seeds from keys, results sorted by key and identical whoever runs the cells,
errors reaching the caller with their type, clear errors for bad arguments."""

from __future__ import annotations

import importlib.util
import json
import sys

import numpy as np
import pytest

from lora_proofcheck.errors import InvalidInputError, InvalidTypeError
from lora_proofcheck.report.config import ReportConfig
from lora_proofcheck.report.measurements import properties
from lora_proofcheck.sweeps import engine
from lora_proofcheck.sweeps.engine import Cell, cell_seed, run_sweep, to_json


def draw_cell(*, n, scale, seed):
    """A cell whose output depends on its seed: any seed mix-up changes the JSON."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(n) * scale
    return {"n": n, "mean": float(np.mean(x)), "sample": x[:3], "seed": seed, "tuple": (1, 2.5),
            "top": np.float64(x.max()), "inf": float("inf")}


class CellFailure(Exception):
    pass


def failing_cell(*, i, seed):
    if i == 3:
        raise CellFailure(f"cell {i} fails")
    return i


GRID = [Cell(("draw", n, s), {"n": n, "scale": s}) for n in (2, 10, 3) for s in (0.5, 2.0)]


def test_seed_rule_is_pinned_and_is_the_reports():
    """The values of commit 877a651's ReportConfig.seed_for (before the engine): the rule must not drift."""
    assert cell_seed(7, ("property", "QV", 64, 0.5)) == 1698166753
    assert cell_seed(7, ("sweep", 1024, 0.25)) == 2975741058
    assert cell_seed(0, ("a", 1)) == cell_seed(0, "a/1") == 2661567434 != cell_seed(1, ("a", 1))
    cfg = ReportConfig(mode="tiny", seed=7)
    assert cfg.seed_for("property/QV/64/0.5") == 1698166753


def test_serial_results_are_sorted_by_key_and_json_ready():
    out = run_sweep(draw_cell, GRID, base_seed=3, progress=False)
    assert list(out) == sorted(c.key for c in GRID)  # numeric parts sort numerically (2 < 3 < 10)
    assert [k[1] for k in out][::2] == [2, 3, 10]
    first = out[("draw", 2, 0.5)]
    assert first["seed"] == cell_seed(3, ("draw", 2, 0.5)) and first["tuple"] == [1, 2.5]
    assert isinstance(first["sample"], list) and isinstance(first["top"], float) and first["inf"] == "inf"
    json.dumps(first, allow_nan=False)


def test_serial_and_thread_cluster_give_identical_json(thread_cluster):
    serial = to_json(run_sweep(draw_cell, GRID, base_seed=11, progress=False))
    dask = to_json(run_sweep(draw_cell, GRID, base_seed=11, scheduler=thread_cluster.scheduler_address,
                             progress=False))
    assert serial == dask
    assert serial != to_json(run_sweep(draw_cell, GRID, base_seed=12, progress=False))


def test_report_cells_give_identical_json_serially_and_on_the_cluster(thread_cluster):
    """A real grid (the report's tiny property grid: exact path, certificate, approximate path)."""
    cells = properties.property_cells(ReportConfig(mode="tiny").sizes)
    serial = run_sweep(properties.property_cell, cells, base_seed=5, progress=False)
    dask = run_sweep(properties.property_cell, cells, base_seed=5, scheduler=thread_cluster.scheduler_address,
                     progress=False)
    assert to_json(serial) == to_json(dask)


def test_an_open_runner_is_reused_and_streams_every_cell(thread_cluster):
    from distributed import Client

    with Client(thread_cluster, set_as_default=False) as client:
        with engine.runner_scope(scheduler=client) as runner:
            streamed = dict(runner.stream(draw_cell, GRID, 5))
            assert set(streamed) == {c.key for c in GRID}
            again = run_sweep(draw_cell, GRID, base_seed=5, runner=runner, progress=False)
        assert client.status == "running"  # a lent client stays the caller's
    assert to_json(again) == to_json(run_sweep(draw_cell, GRID, base_seed=5, progress=False))


@pytest.mark.parametrize("where", ["serial", "threads"])
def test_a_failing_cell_raises_its_own_exception_naming_the_cell(where, thread_cluster):
    cells = [Cell(("fail", i), {"i": i}) for i in range(6)]
    kw = {} if where == "serial" else {"scheduler": thread_cluster.scheduler_address}
    with pytest.raises(CellFailure, match="cell 3 fails") as info:
        run_sweep(failing_cell, cells, progress=False, **kw)
    assert any("fail/3" in note for note in getattr(info.value, "__notes__", []))


UNIMPORTABLE = """
class Boom(Exception):
    pass

def cell(*, i, seed):
    if i == 2:
        raise Boom("boom at 2")
    return {"i": i, "seed": seed}
"""


def test_local_process_cluster_matches_serial(tmp_path, monkeypatch):
    """The real `--workers 2` path: two worker processes on random ports, the report's property cells.
    Also a cell function whose module the workers cannot import (a file off sys.path, as pytest's
    importlib mode makes of test modules): shipped by value, not a sweep that waits forever."""
    cells = properties.property_cells(ReportConfig(mode="tiny").sizes)
    serial = run_sweep(properties.property_cell, cells, progress=False)
    with engine.runner_scope(workers=2) as runner:
        assert runner.workers == 2 and runner.description == "LocalCluster(2 processes, 1 thread each)"
        procs = run_sweep(properties.property_cell, cells, runner=runner, progress=False)
        with pytest.raises(CellFailure, match="cell 3 fails"):  # a remote process's exception, its own type
            run_sweep(failing_cell, [Cell(("fail", i), {"i": i}) for i in range(5)], runner=runner, progress=False)
        path = tmp_path / "lp_unimportable_cells.py"
        path.write_text(UNIMPORTABLE)
        spec = importlib.util.spec_from_file_location("lp_unimportable_cells", path)
        mod = importlib.util.module_from_spec(spec)
        monkeypatch.setitem(sys.modules, "lp_unimportable_cells", mod)
        spec.loader.exec_module(mod)
        grid = [Cell(("u", i), {"i": i}) for i in range(2)]
        assert to_json(run_sweep(mod.cell, grid, runner=runner, progress=False)) == \
            to_json(run_sweep(mod.cell, grid, progress=False))
        with pytest.raises(mod.Boom, match="boom at 2"):  # its exception class is the caller's own
            run_sweep(mod.cell, [Cell(("u", i), {"i": i}) for i in range(4)], runner=runner, progress=False)
    assert to_json(serial) == to_json(procs)


def test_on_result_sees_every_cell_as_it_arrives(thread_cluster):
    seen = []
    out = run_sweep(draw_cell, GRID, scheduler=thread_cluster.scheduler_address, progress=False,
                    on_result=lambda key, result: seen.append((key, result["seed"])))
    assert sorted(seen) == sorted((k, v["seed"]) for k, v in out.items())
    with pytest.raises(InvalidTypeError, match="on_result"):
        run_sweep(draw_cell, GRID, progress=False, on_result=3)


def test_progress_bar_on_request(capsys):
    run_sweep(draw_cell, GRID, progress=True, desc="my-grid")
    err = capsys.readouterr().err
    assert "my-grid" in err and f"{len(GRID)}/{len(GRID)}" in err
    run_sweep(draw_cell, GRID, progress=False, desc="silent-grid")
    assert "silent-grid" not in capsys.readouterr().err


def test_without_distributed_workers_say_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed -> ImportError
    for kw in ({"workers": 2}, {"scheduler": "tcp://127.0.0.1:8786"}):
        with pytest.raises(InvalidInputError, match=r'pip install -e "\.\[distributed\]"'):
            run_sweep(draw_cell, GRID, progress=False, **kw)
    assert run_sweep(draw_cell, GRID[:1], progress=False)  # serial needs nothing


def test_unreachable_scheduler_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(engine, "CONNECT_TIMEOUT", "1s")
    with pytest.raises(InvalidInputError, match="cannot connect"):
        engine.open_runner(scheduler="tcp://127.0.0.1:9")


@pytest.mark.parametrize("kw, err, match", [
    ({"workers": 0}, InvalidInputError, "workers must be >= 1"),
    ({"workers": -2}, InvalidInputError, "workers must be >= 1"),
    ({"workers": True}, InvalidTypeError, "workers must be an integer"),
    ({"workers": 1.5}, InvalidTypeError, "workers must be an integer"),
    ({"workers": "2"}, InvalidTypeError, "workers must be an integer"),
    ({"scheduler": "localhost:8786"}, InvalidInputError, "tcp://HOST:PORT"),
    ({"scheduler": "tcp://host"}, InvalidInputError, "tcp://HOST:PORT"),
    ({"scheduler": "tcp://host:99999"}, InvalidInputError, "PORT in 1..65535"),
    ({"scheduler": 8786}, InvalidTypeError, "scheduler must be an address"),
    ({"workers": 2, "scheduler": "tcp://h:1"}, InvalidInputError, "not both"),
    ({"base_seed": -1}, InvalidInputError, "base_seed"),
    ({"base_seed": 2**63}, InvalidInputError, "base_seed"),
    ({"base_seed": 1.0}, InvalidTypeError, "base_seed"),
    ({"processes": "yes"}, InvalidTypeError, "processes"),
    ({"pin_blas": 1}, InvalidTypeError, "pin_blas"),
])
def test_bad_engine_arguments(kw, err, match):
    with pytest.raises(err, match=match):
        run_sweep(draw_cell, GRID, progress=False, **kw)


def test_bad_cells():
    with pytest.raises(InvalidInputError, match="duplicate cell key"):
        run_sweep(draw_cell, [GRID[0], GRID[0]], progress=False)
    with pytest.raises(InvalidInputError, match="one layout"):
        run_sweep(draw_cell, [Cell(("a", 1), {"n": 1, "scale": 1.0}), Cell(("a", "b"), {"n": 1, "scale": 1.0})],
                  progress=False)
    with pytest.raises(InvalidTypeError, match="Cell instances"):
        run_sweep(draw_cell, [("a", 1)], progress=False)
    with pytest.raises(InvalidTypeError, match="callable"):
        run_sweep("draw_cell", GRID, progress=False)
    with pytest.raises(InvalidInputError, match="derived from the key"):
        Cell(("a",), {"seed": 1})
    with pytest.raises(InvalidTypeError, match="key parts"):
        Cell(("a", None))
    with pytest.raises(InvalidTypeError, match="key parts"):
        Cell((True,))
    with pytest.raises(InvalidInputError, match="finite"):
        Cell(("a", float("nan")))
    with pytest.raises(InvalidInputError, match="at least one part"):
        Cell(())
    with pytest.raises(InvalidTypeError, match="params must be a dict"):
        Cell(("a",), [1])
    with pytest.raises(InvalidTypeError, match="not JSON-ready"):
        run_sweep(lambda seed: object(), [Cell(("a",))], progress=False)
