"""`lora-proofcheck bench` end to end on tiny sizes, its analysis, its flags; the blocked exact
path's threading. No timing assertions: times are only checked to be recorded."""

import importlib.util
import json
import math
import re

import jsonschema
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lora_proofcheck import InvalidInputError, InvalidTypeError
from lora_proofcheck.benchmarks import RESULT_SCHEMA, BenchConfig, fit_exponent, summarize
from lora_proofcheck.benchmarks.analysis import fit_all
from lora_proofcheck.benchmarks.plot import plot
from lora_proofcheck.benchmarks.runner import _Planner
from lora_proofcheck.cli import main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One real run: every method at L = 64 and 128, one repeat (about 15 s, mostly imports)."""
    d = tmp_path_factory.mktemp("bench")
    out, png = d / "bench.json", d / "bench.png"
    rc = main(["bench", "--quick", "--L-min", "2^6", "--L-max", "2^7", "--repeats", "1", "--degrees", "2",
               "--out", str(out), "--plot", str(png)])
    return rc, json.loads(out.read_text()), png


def test_end_to_end_writes_valid_json_and_png(tiny_run, capsys):
    rc, result, png = tiny_run
    assert rc == 0
    jsonschema.validate(result, RESULT_SCHEMA)
    assert png.read_bytes()[:8] == PNG_MAGIC
    config = BenchConfig(L_min=64, L_max=128, eps=(1e-3, 1e-6), degrees=(2,))
    seen = {(e["method"], e["L"]) for e in result["results"]}
    assert seen == {(m, L) for m in config.all_methods() for L in (64, 128)}  # nothing silently missing
    for e in result["results"]:
        if e["status"] != "ok":
            assert e["reason"]  # every gap says why
            continue
        assert len(e["times_s"]) == e["repeats_done"] == 1 and e["median_s"] == e["times_s"][0]
        assert e["peak_rss_bytes"] >= e["baseline_rss_bytes"] > 0
    assert result["gemm"][0]["name"] == "square" and result["gemm"][0]["gflops_best"] > 0
    assert all(f["exponent"] is None and f["reason"] for f in result["fits"].values())  # no L >= 4096 here
    assert "summary" in result and {t["name"] for t in result["summary"]["targets"]}


def test_end_to_end_errors_against_the_exact_path(tiny_run):
    _, result, _ = tiny_run
    by = {(e["method"], e["L"]): e for e in result["results"]}
    for L in (64, 128):
        assert by[("exact-blocked", L)]["status"] == "ok" and by[("exact-dense", L)]["status"] == "ok"
        assert by[("exact-blocked", L)]["max_abs_error"] == 0.0  # its own reference
        assert by[("exact-dense", L)]["max_abs_error"] <= 1e-13 * by[("exact-dense", L)]["grad_max_abs"]
        torch_entry = by[("torch-autograd", L)]
        if importlib.util.find_spec("torch") is not None:
            assert torch_entry["max_abs_error"] <= 1e-12 * torch_entry["grad_max_abs"]
        else:
            assert torch_entry["status"] == "skipped" and "torch" in torch_entry["reason"]
        for eps in ("1e-03", "1e-06"):
            e = by[(f"approx-eps{eps}", L)]
            if e["status"] == "ok":  # the certified bound must hold on the measured error
                assert e["error_reference"] == "exact-blocked" and e["bound_holds"] is True
                assert e["max_abs_error"] <= e["bound"] and e["path"] == "approx"
                assert e["rank"] >= 1 and e["degree"] >= 0
            else:
                assert e["status"] == "skipped" and e["reason"].startswith("AboveThresholdError")
        forced = by[("approx-g2", L)]  # always runs; its bound is degree 2's, however loose
        assert forced["status"] == "ok" and forced["path"] == "approx"
        assert forced["degree"] == 2 and forced["rank"] == 45  # C(8 + 2, 2)
        assert forced["bound_holds"] is True and 0 < forced["max_abs_error"] <= forced["bound"]
        assert forced["flops"] > 0 and forced["gflops"] > 0


def test_plot_is_deterministic(tiny_run, tmp_path):
    _, result, _ = tiny_run
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    plot(result, a)
    plot(result, b)
    assert a.read_bytes() == b.read_bytes()


@settings(deadline=None)
@given(exponent=st.floats(0.5, 3.0), prefactor=st.floats(1e-9, 1e3),
       sizes=st.lists(st.integers(6, 18), min_size=2, max_size=8, unique=True))
def test_fit_exponent_recovers_a_power_law(exponent, prefactor, sizes):
    L = [2**s for s in sizes]
    fit = fit_exponent(L, [prefactor * x**exponent for x in L])
    assert fit["exponent"] == pytest.approx(exponent, abs=1e-9)
    assert fit["prefactor"] == pytest.approx(prefactor, rel=1e-7)


def test_fit_exponent_is_least_squares():
    # log2 t = 0, 3, 4 at log2 L = 0, 1, 2: slope of the LS line is 2 (not the endpoint slope 2, nor 3)
    L, t = [1, 2, 4], [1, 8, 16]
    fit = fit_exponent(L, t)
    x, y = np.log(L), np.log(t)
    want = np.sum((x - x.mean()) * (y - y.mean())) / np.sum((x - x.mean()) ** 2)
    assert fit["exponent"] == pytest.approx(want, rel=1e-12) and fit["max_log_residual"] > 0


@pytest.mark.parametrize("L, t, match", [([4], [1.0], "two distinct"), ([4, 4], [1.0, 2.0], "two distinct"),
                                         ([4, 8], [1.0, 0.0], "positive"), ([4, 8], [1.0], "same length")])
def test_fit_exponent_rejects_bad_data(L, t, match):
    with pytest.raises(InvalidInputError, match=match):
        fit_exponent(L, t)


def _entry(method, L, seconds, status="ok", **kw):
    base = {"method": method, "L": L, "status": status}
    if status == "ok":
        base.update(median_s=seconds, times_s=[seconds], peak_rss_bytes=10**8, baseline_rss_bytes=10**7, **kw)
    else:
        base["reason"] = "demo"
    return base


def test_fit_all_uses_only_successful_sizes_above_the_cut():
    entries = [_entry("m", 2**10, 100.0), _entry("m", 2**12, 1.0), _entry("m", 2**13, 2.0),
               _entry("m", 2**14, 1.0, status="skipped"), _entry("n", 2**12, 1.0)]
    fits = fit_all(entries, 2**12)
    assert fits["m"]["exponent"] == pytest.approx(1.0) and fits["m"]["L"] == [4096.0, 8192.0]
    assert fits["n"]["exponent"] is None and "fewer than two" in fits["n"]["reason"]


def _synthetic_result(approx_exp, approx_scale, torch_scale, gflops, blocked_scale):
    sizes = [2**12, 2**13, 2**14, 2**17]
    results = []
    for L in sizes:
        x = L / 2**14
        results.append(_entry("approx-eps1e-03", L, approx_scale * x**approx_exp, gflops=gflops,
                              max_abs_error=1e-6, bound=1e-5, bound_holds=True))
        results.append(_entry("exact-blocked", L, blocked_scale * x**2, gflops=1.0, max_abs_error=0.0))
        if L <= 2**14:
            results.append(_entry("torch-autograd", L, torch_scale * x**2, gflops=1.0, max_abs_error=1e-16))
        else:
            results.append(_entry("torch-autograd", L, None, status="skipped"))
    result = {"config": {"eps": [1e-3], "fit_min_L": 4096}, "results": results,
              "gemm": [{"name": "square", "status": "ok", "gflops_best": 100.0}]}
    result["fits"] = fit_all(results, 4096)
    return result


def test_summary_targets_met():
    s = summarize(_synthetic_result(approx_exp=1.0, approx_scale=0.1, torch_scale=10.0, gflops=60.0,
                                    blocked_scale=5.0))
    met = {t["name"]: t for t in s["targets"]}
    assert s["speedups"]["approx-eps1e-03 over torch-autograd"] == pytest.approx(100.0)
    assert s["speedups"]["exact-blocked over torch-autograd"] == pytest.approx(2.0)
    assert s["methods"]["approx-eps1e-03"]["exponent"] == pytest.approx(1.0)
    assert s["methods"]["approx-eps1e-03"]["bound_holds"] is True
    by_prefix = lambda p: next(t for n, t in met.items() if n.startswith(p))  # noqa: E731
    assert by_prefix("approx-eps1e-03 FLOP rate")["value"] == pytest.approx(0.6)
    assert all(t["met"] for t in s["targets"] if "L=20000" not in t["name"])
    assert by_prefix("exact-blocked peak RSS")["met"] is None  # L = 20000 not measured
    assert any("torch-autograd at L=131072" in line for line in s["not_run"])


def test_summary_targets_missed():
    s = summarize(_synthetic_result(approx_exp=1.5, approx_scale=1.0, torch_scale=10.0, gflops=20.0,
                                    blocked_scale=20.0))
    missed = {t["name"].split(" ")[0] + " " + t["target"] for t in s["targets"] if t["met"] is False}
    assert missed == {"approx-eps1e-03 >= 0.5", "approx-eps1e-03 <= 1.1", "approx-eps1e-03 >= 50",
                      "exact-blocked >= 1"}


def test_summary_says_why_a_target_method_never_ran():
    result = _synthetic_result(approx_exp=1.0, approx_scale=0.1, torch_scale=10.0, gflops=60.0, blocked_scale=5.0)
    result["results"] = [
        {"method": e["method"], "L": e["L"], "status": "skipped",
         "reason": f"AboveThresholdError: above the threshold at L={e['L']}; use on_threshold='exact'"}
        if e["method"] == "approx-eps1e-03" else e for e in result["results"]]
    result["fits"] = fit_all(result["results"], 4096)
    rate = next(t for t in summarize(result)["targets"] if t["name"].startswith("approx-eps1e-03 FLOP rate"))
    assert rate["met"] is None and rate["value"] is None
    assert rate["note"] == "never ran: L=16384: AboveThresholdError: above the threshold at L=16384"


def test_planner_skips_with_reasons_and_keeps_skipping():
    config = BenchConfig(L_min=64, L_max=1024, max_seconds=2.0)
    plan = _Planner(config, memory_budget=10**9)
    assert plan.verdict("exact-blocked", 64, elapsed=0.0) is None
    plan.record("exact-blocked", 64, {"median_s": 1.0, "peak_rss_bytes": 2000, "baseline_rss_bytes": 1000})
    reason = plan.verdict("exact-blocked", 128, elapsed=0.0)  # quadratic: 4 s predicted > 2 s
    assert "time budget" in reason and "4 s" in reason
    assert plan.verdict("exact-blocked", 256, elapsed=0.0) == reason
    # the dense kernel's a-priori working set: >= 32 bytes per logit, 32 * 8192^2 > 1e9
    assert "memory budget" in plan.verdict("exact-dense", 8192, elapsed=0.0)
    assert "run budget" in _Planner(BenchConfig(budget_seconds=5.0), None).verdict("torch-autograd", 64, 6.0)


def test_planner_budgets_gpu_memory_for_cupy_runs_only():
    plan = _Planner(BenchConfig(backend="cupy"), memory_budget=10**12, device_budget=10**9)
    assert "GPU memory budget" in plan.verdict("exact-dense", 8192, elapsed=0.0)
    assert plan.verdict("torch-autograd", 8192, elapsed=0.0) is None  # PyTorch runs on the host


@pytest.mark.parametrize("argv, match", [
    (["--L-min", "0"], "argument --L-min"),
    (["--L-min", "abc"], "argument --L-min"),
    (["--L-min", "4096", "--L-max", "1024"], "--L-min .4096. must not exceed --L-max .1024."),
    (["--repeats", "0"], "argument --repeats"),
    (["--eps", "2"], "argument --eps"),
    (["--eps", "0"], "argument --eps"),
    (["--threads", "-1"], "argument --threads"),
    (["--backend", "jax"], "argument --backend"),
    (["--out", "result.txt"], "--out must name a .json file"),
    (["--plot", "figure.jpg"], "--plot must name a .png file"),
    (["--out", "/no/such/dir/r.json"], "--out: directory '/no/such/dir' does not exist"),
    (["--methods", "exact-sparse"], "--methods: .*exact-sparse"),
    (["--max-seconds", "0"], "argument --max-seconds"),
    (["--degrees", "-1"], "argument --degrees"),
    (["--sizes", "1"], "argument --sizes"),
])
def test_bad_flags_are_clear_errors(argv, match, capsys):
    try:
        rc = main(["bench", *argv])
    except SystemExit as exc:  # argparse's own type and choice errors
        rc = exc.code
    assert rc == 2
    assert re.search(match, capsys.readouterr().err)


@pytest.mark.skipif(importlib.util.find_spec("cupy") is not None, reason="CuPy is importable here")
def test_cupy_backend_without_cupy_is_a_clear_error(capsys):
    assert main(["bench", "--backend", "cupy"]) == 2
    assert "--backend cupy: CuPy is not importable" in capsys.readouterr().err


@pytest.mark.parametrize("field, value, match", [
    ("L_min", 0, "L_min"), ("repeats", 1.5, "repeats"), ("eps", (0.5, 1.0), "eps"), ("eps", [1e-3], "eps"),
    ("backend", "jax", "backend"), ("threads", 0, "threads"), ("L_list", (1,), "L_list"),
    ("budget_seconds", math.inf, "budget_seconds"), ("degrees", (-1,), "degrees"), ("degrees", [2], "degrees"),
])
def test_config_validation(field, value, match):
    with pytest.raises((InvalidInputError, InvalidTypeError), match=match):
        BenchConfig(**{field: value})
