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
from lora_proofcheck.benchmarks.analysis import fit_all, planner_cells, targets_table, torch_seconds
from lora_proofcheck.benchmarks.plot import plot
from lora_proofcheck.benchmarks.runner import _Planner
from lora_proofcheck.benchmarks.worker import TORCH
from lora_proofcheck.cli import main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One real run: every method at L = 64 and 128, one repeat, and the contractions at g = 2 (about
    25 s, mostly imports)."""
    d = tmp_path_factory.mktemp("bench")
    out, png = d / "bench.json", d / "bench.png"
    rc = main(["bench", "--quick", "--L-min", "2^6", "--L-max", "2^7", "--repeats", "1", "--degrees", "2",
               "--contraction-degrees", "2", "--out", str(out), "--plot", str(png)])
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


# ---------------------------------------------------------------------------------------------
# issue 10: approx-rtol methods, the planner against the measurements, contractions, targets table


def test_end_to_end_rtol_method_records_its_path_and_forced_comparison(tiny_run):
    _, result, _ = tiny_run
    assert result["schema_version"] == 2
    for L in (64, 128):
        e = next(e for e in result["results"] if e["method"] == "approx-rtol1e-03" and e["L"] == L)
        assert e["status"] == "ok" and e["path"] in ("approx", "exact")  # on_threshold="exact": always answers
        assert e["bound_holds"] is True and e["max_abs_error"] <= e["bound"]
        assert set(e["errors"]) == set(e["bounds"]) and max(e["errors"].values()) == e["max_abs_error"]
        assert "forced" in e and (e["forced"]["degree"] is None) == ("reason" in e["forced"])
        if e["path"] == "approx":
            assert e["forced"]["degree"] == e["degree"]
    cells = result["summary"]["planner"]["cells"]
    assert {(c["L"], c["rtol"]) for c in cells} == {(64, 1e-3), (128, 1e-3)}
    assert [c["degree"] for c in result["contractions"]] == [2] and result["contractions"][0]["status"] == "ok"
    assert result["contractions"][0]["calls"] > 0 and result["contractions"][0]["gflops"] > 0
    assert {t["name"] for t in result["summary"]["targets_table"]}


def _rtol_entry(L, seconds, path, degree, forced_s, forced_degree=None, errors=None, bounds=None):
    e = _entry("approx-rtol1e-03", L, seconds, path=path, degree=degree,
               forced={"degree": degree if forced_degree is None else forced_degree, "median_s": forced_s,
                       "times_s": [forced_s]},
               predicted={"approx_seconds": 1.0, "exact_seconds": 2.0, "ratio": 0.5})
    if errors is not None:
        e.update(errors=errors, bounds=bounds, max_abs_error=max(errors.values()), bound=max(bounds.values()))
    return e


def _table_result():
    """Exact-blocked ~ L^2, rtol calls: exact at 2^10 (right), approx at 2^11 though slower (wrong),
    approx and faster from 2^12 on; PyTorch to 2^13 only; contractions at g = 6, 7."""
    ex = {2**10: 0.01, 2**11: 0.04, 2**12: 0.16, 2**13: 0.64, 2**14: 2.56, 2**16: 40.96}
    results = [_entry("exact-blocked", L, t) for L, t in ex.items()]
    results += [_entry(TORCH, L, 2 * ex[L]) for L in (2**10, 2**11, 2**12, 2**13)]
    results.append(_entry(TORCH, 2**14, None, status="skipped"))
    results += [
        _rtol_entry(2**10, 0.05, "exact", None, 0.03, forced_degree=6),
        _rtol_entry(2**11, 0.06, "approx", 5, 0.05),
        _rtol_entry(2**12, 0.10, "approx", 5, 0.08),
        _rtol_entry(2**13, 0.20, "approx", 5, 0.15),
        _rtol_entry(2**14, 0.40, "approx", 5, 0.30, errors={"A_Q": 1e-4, "B_Q": 1e-3, "A_V": 2e-4},
                    bounds={"A_Q": 1e-2, "B_Q": 2e-1, "A_V": 1e-2}),
        _rtol_entry(2**16, 1.60, "approx", 5, 1.20),
    ]
    contractions = [{"degree": g, "L": 2**14, "d": 8, "rank": 3003, "status": "ok", "chunk_rows": 349,
                     "workers": 2, "gflops": rate, "share": 0.5, "runs": [{}]} for g, rate in ((6, 70.0), (7, 80.0))]
    result = {"config": {"eps": [1e-3], "fit_min_L": 4096}, "results": results, "contractions": contractions,
              "gemm": [{"name": "square", "status": "ok", "gflops_best": 100.0}]}
    result["fits"] = fit_all(results, 4096)
    return result


def test_planner_cells_compare_the_choice_with_the_measured_faster_path():
    p = planner_cells(_table_result())
    by_L = {c["L"]: c for c in p["cells"]}
    assert by_L[2**10]["faster"] == "exact" and by_L[2**10]["agree"] is True   # forced 0.03 s > exact 0.01 s
    assert by_L[2**10]["measured_ratio"] == pytest.approx(3.0) and by_L[2**10]["forced_degree"] == 6
    assert by_L[2**11]["faster"] == "exact" and by_L[2**11]["agree"] is False  # chose approx: 0.05 s > 0.04 s
    assert by_L[2**12]["faster"] == "approx" and by_L[2**12]["agree"] is True
    assert p["decided"] == 6 and p["agreed"] == 5 and p["share"] == pytest.approx(5 / 6) and p["met"] is False


def test_planner_cells_without_a_certifying_degree_or_exact_time():
    result = _table_result()
    e = next(e for e in result["results"] if e["method"] == "approx-rtol1e-03" and e["L"] == 2**10)
    e["forced"] = {"degree": None, "reason": "AboveThresholdError: no degree <= 30 certifies"}
    result["results"] = [x for x in result["results"] if not (x["method"] == "exact-blocked" and x["L"] == 2**11)]
    by_L = {c["L"]: c for c in planner_cells(result)["cells"]}
    assert by_L[2**10]["faster"] == "exact" and by_L[2**10]["agree"] is True and "no degree" in by_L[2**10]["note"]
    assert by_L[2**11]["faster"] is None and by_L[2**11]["agree"] is None and "not measured" in by_L[2**11]["note"]


def test_targets_table_on_a_synthetic_result():
    rows = {t["name"].split(" (")[0].split(" at L")[0] + (" 16" if "L=16384" in t["name"] else " 64"
            if "L=65536" in t["name"] else ""): t for t in targets_table(_table_result())}
    ratio = rows["certified bound / measured error 16"]
    assert ratio["value"] == pytest.approx(100.0) and ratio["met"] is True  # median of 100, 200, 50
    cross = rows["crossover L: certified rtol=0.001 beats the exact path from"]
    assert cross["value"] == 2**12 and cross["met"] is True                # 2^11: 0.06 s > 0.04 s
    torch14 = rows["speedup of rtol=0.001 over torch-autograd 16"]
    assert torch14["value"] == pytest.approx(2 * 2.56 / 0.40) and "extrapolated x4 per doubling from L=8192" in \
        torch14["note"] and torch14["met"] is True                          # 12.8 >= 5
    torch16 = rows["speedup of rtol=0.001 over torch-autograd 64"]
    assert torch16["value"] == pytest.approx(2 * 0.64 * 64 / 1.60) and torch16["met"] is True  # 51.2 >= 20
    blocked = rows["speedup of rtol=0.001 over exact-blocked 64"]
    assert blocked["value"] == pytest.approx(40.96 / 1.60) and blocked["met"] is True  # 25.6 >= 3
    rate = rows["low-rank contraction rate / square GEMM rate"]
    assert rate["value"] == pytest.approx(0.7) and rate["met"] is True
    share = rows["planner picked the measured faster path"]
    assert share["value"] == pytest.approx(5 / 6) and share["met"] is False


def test_targets_table_reports_the_a_posteriori_ratio_beside_the_a_priori_one():
    key = lambda rows: {t["name"].split(" at L")[0]: t for t in rows}  # noqa: E731
    result = _table_result()
    rows = key(targets_table(result))
    assert rows["a posteriori bound / measured error"]["value"] is None
    assert rows["a posteriori bound / measured error"]["met"] is None and "not recorded" in \
        rows["a posteriori bound / measured error"]["note"]
    e = next(e for e in result["results"] if e["method"] == "approx-rtol1e-03" and e["L"] == 2**14)
    e["a_posteriori"] = {"reference": 8, "reason": "", "seconds": 1.5,
                         "bounds": {"A_Q": 1.5e-4, "B_Q": 3e-3, "A_V": 2e-4}}
    post = key(targets_table(result))["a posteriori bound / measured error"]
    assert post["value"] == pytest.approx(1.5) and post["met"] is True   # median of 1.5, 3, 1
    assert "degree 8" in post["note"] and "not the call's own certificate" in post["note"]
    assert "a priori" in key(targets_table(result))["certified bound / measured error"]["note"]
    e["a_posteriori"]["reason"] = "reference 8 refused: memory"
    post = key(targets_table(result))["a posteriori bound / measured error"]
    assert post["value"] is None and "refused" in post["note"]


def test_targets_table_crossover_never_and_version_1_results():
    result = _table_result()
    for e in result["results"]:
        if e["method"] == "approx-rtol1e-03" and e["L"] == 2**16:
            e["median_s"] = 100.0
    cross = next(t for t in targets_table(result) if t["name"].startswith("crossover"))
    assert cross["value"] is None and cross["met"] is False and "largest L" in cross["note"]
    old = _synthetic_result(approx_exp=1.0, approx_scale=0.1, torch_scale=10.0, gflops=60.0, blocked_scale=5.0)
    table = summarize(old)["targets_table"]  # a version-1 file: no rtol methods, no contractions
    assert table and all(t["met"] is None for t in table)


def test_torch_extrapolation():
    result = _table_result()
    assert torch_seconds(result, 2**13) == (pytest.approx(1.28), "measured at L=8192")
    assert torch_seconds(result, 2**15)[0] == pytest.approx(1.28 * 16)
    result["results"] = [e for e in result["results"] if e["method"] != TORCH]
    assert torch_seconds(result, 2**14)[0] is None


def test_targets_preset_config():
    import argparse  # noqa: PLC0415

    from lora_proofcheck.cli.bench import add_commands, config_from_args  # noqa: PLC0415

    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers())
    config = config_from_args(parser.parse_args(["bench", "--targets", "--rtol", "1e-3", "1e-2"]))
    assert config.methods == ("exact-blocked", "approx-rtol1e-03", "approx-rtol1e-02", TORCH)
    assert config.torch_max_L == 8192 and config.contraction_degrees == (6, 7) and config.L_max == 65536
    quick = config_from_args(parser.parse_args(["bench", "--quick", "--contraction-degrees", "6"]))
    assert quick.contraction_degrees == (6,) and quick.rtol == (1e-3,) and quick.torch_max_L is None


@pytest.mark.parametrize("argv, match", [
    (["--rtol", "0"], "argument --rtol"),
    (["--rtol", "1.5"], "argument --rtol"),
    (["--quick", "--targets"], "--quick and --targets"),
    (["--contraction-degrees", "0"], "argument --contraction-degrees"),
    (["--torch-max-L", "1"], "argument --torch-max-L"),
    (["--peers", "--targets"], "--targets does not apply to --peers"),
    (["--peers", "--rtol", "1e-3"], "--rtol does not apply to --peers"),
])
def test_bad_issue10_flags_are_clear_errors(argv, match, capsys):
    try:
        rc = main(["bench", *argv])
    except SystemExit as exc:
        rc = exc.code
    assert rc == 2
    assert re.search(match, capsys.readouterr().err)


@pytest.mark.parametrize("field, value, match", [
    ("rtol", (0.0,), "rtol"), ("rtol", [1e-3], "rtol"), ("contraction_degrees", (0,), "contraction_degrees"),
    ("torch_max_L", 0, "torch_max_L"), ("contraction_L", 0, "contraction_L"),
])
def test_issue10_config_validation(field, value, match):
    with pytest.raises((InvalidInputError, InvalidTypeError), match=match):
        BenchConfig(**{field: value})


def test_tightness_table_is_sound_and_names_both_certificates(capsys, tmp_path):
    """The degree table and its looseness factors on a small instance; the factors' inequalities."""
    from lora_proofcheck.benchmarks import tightness

    table = tightness.degree_table(64, (2, 3), seed=1)
    assert [r["degree"] for r in table["rows"]] == [2, 3]
    for r in table["rows"]:
        for side in ("before", "after"):
            assert 0 < r[side]["error"] <= r[side]["bound"] < math.inf  # certified: never below the error
            assert r[side]["ratio_median"] >= 1
        x = r["after"]["looseness"]
        # each factor is an inequality of the certificate's own chain, so each can fail: Lemma 1 bounds
        # the row's l1 error, the triangle inequality the cross-row sum, R3 each row's term
        assert 0 < x["lemma1"] <= 1 and x["cross_rows"] >= 1 and x["within_rows"] >= 1
        assert 0 <= x["theta_corr"] <= 1
        assert all(v["error_at_F~"] <= v["row_sum"] for v in x["per_key"].values())
        for name, ref in (("degree", r["degree"] + tightness.POSTERIORI_STEP), ("auto", None)):
            post = r["a_posteriori"][name]  # certified: holds, and never above the a priori bound
            assert post["reason"] == "" and post["holds"] and 1 <= post["ratio_median"] <= r["after"]["ratio_median"]
            assert ref is None or post["reference"] == ref
    assert table["true_max_abs_logit"] <= table["cauchy_schwarz_R"]
    assert "| 2 |" in tightness.table_markdown(table) and "cross-row" in tightness.table_markdown(table)
    assert "A posteriori" in tightness.table_markdown(table)
    out = tmp_path / "t.json"
    assert main(["bench", "--tightness", "--sizes", "64", "--degrees", "2", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["rows"][0]["degree"] == 2 and "bound/error after" in capsys.readouterr().out


@pytest.mark.parametrize("argv, match", [
    (["--tightness", "--quick"], "--quick does not apply to --tightness"),
    (["--tightness", "--sizes", "64", "128"], "one --sizes L"),
])
def test_tightness_bad_flags(argv, match, capsys):
    assert main(["bench", *argv]) == 2
    assert match in capsys.readouterr().err


def test_looseness_names_what_it_takes():
    from lora_proofcheck.benchmarks import tightness
    from lora_proofcheck.problem import LoRAProblem

    p = LoRAProblem.random(16, 2, 1, adapt="QKV", N=2, seed=0)
    with pytest.raises(InvalidInputError, match="one-sample self-attention"):
        tightness.looseness(p, 2, {}, {})


def test_the_worker_records_the_a_posteriori_bound_of_an_approx_call():
    from lora_proofcheck import approx_gradients
    from lora_proofcheck.benchmarks import worker
    from lora_proofcheck.benchmarks.tightness import issue_instance
    from lora_proofcheck.checks.approx_checks import reference

    p = issue_instance(512)
    res = approx_gradients(p, degree=4, on_threshold="force")
    out = worker._posteriori(p, res, {"threads": None})["a_posteriori"]
    assert out["reference"] == 4 + worker.POSTERIORI_STEP and out["reason"] == ""
    ref, allowance = reference(p)
    for k, b in out["bounds"].items():
        err = float(np.max(np.abs(np.asarray(res.grads[k]) - ref[k])))
        assert err <= b + allowance[k] and b <= res.bound[k]
    exact = approx_gradients(p)  # L = 512: the exact path, nothing to verify
    assert exact.path == "exact" and worker._posteriori(p, exact, {"threads": None}) == {}
