"""`lora-proofcheck bench --peers` on tiny sizes: the JSON follows its schema, every instance carries
its exact rows (float64 reference, float32 floor) and R and max|S| on every row, the real-head hook
is used when the caller passes one (the command line: the audit's MiniLM head) and skipped with a
reason otherwise, costly ranks are skipped, flags are checked. No
timing assertions: times are only checked to be recorded."""

from __future__ import annotations

import json
import math
import re

import jsonschema
import numpy as np
import pytest

from lora_proofcheck import InvalidInputError, InvalidTypeError, LoRAProblem
from lora_proofcheck.benchmarks import peers as bp
from lora_proofcheck.benchmarks.plot import plot_peers
from lora_proofcheck.benchmarks.schema import PEERS_SCHEMA
from lora_proofcheck.cli import main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TINY = dict(sizes=(48,), logit_bounds=(1.3,), families=("benchmark", "aligned", "real-head"), taylor_degrees=(1, 2),
            chebyshev_degrees=(2,), favor_features=(8,), support_degrees=(3,), favor_seeds=2, repeats=1,
            progress=False)


@pytest.fixture(scope="module")
def tiny():
    result = bp.run_peers(bp.PeersConfig(**TINY))
    result["summary"] = bp.summarize_peers(result)
    return result


def test_result_follows_the_schema(tiny):
    jsonschema.validate(json.loads(json.dumps(tiny, allow_nan=False)), PEERS_SCHEMA)
    broken = json.loads(json.dumps(tiny))
    broken["rows"][0]["mode"] = "autograd"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, PEERS_SCHEMA)


def test_every_instance_has_its_reference_floor_and_every_setting(tiny):
    config = bp.PeersConfig(**TINY)
    for family in ("benchmark", "aligned"):
        rows = [r for r in tiny["rows"] if r["family"] == family]
        methods = {(r["method"], r.get("param"), r["mode"]) for r in rows}
        want = {("exact-float64", None, "exact"), ("exact-float32", None, "exact")}
        want |= {(m, p, mode) for m, _, p in bp.settings(config) for mode in ("plugin", "model")}
        assert methods == want  # nothing silently missing
        for r in rows:
            assert r["R"] > 0 and 0 < r["max_abs_S"] <= r["R"] * (1 + 1e-12)  # R and max|S| on every row
            if r["status"] != "ok":
                assert r["reason"]
                continue
            assert r["seconds"] > 0 and len(r["times_s"]) == 1
            assert all(math.isfinite(r[k]) and r[k] >= 0 for k in ("max_abs", "max_abs_rel", "frob_rel"))
        exact = next(r for r in rows if r["method"] == "exact-float64")
        floor = next(r for r in rows if r["method"] == "exact-float32")
        assert exact["max_abs"] == 0.0 and 0 < floor["frob_rel"] < 1e-5
        favor = [r for r in rows if r["method"] == "favor+" and r["status"] == "ok"]
        assert favor and all(r["seeds"] == 2 and r["frob_rel_min"] <= r["frob_rel"] <= r["frob_rel_max"]
                             for r in favor)


def test_real_head_is_skipped_with_a_reason_without_one(tiny):
    (row,) = [r for r in tiny["rows"] if r["family"] == "real-head"]
    assert row["status"] == "skipped" and "real_head" in row["reason"]
    (inst,) = [i for i in tiny["summary"]["instances"] if i["family"] == "real-head"]
    assert inst["status"] == "skipped" and inst["reason"] == row["reason"]


def test_a_given_real_head_is_measured_and_costly_settings_skipped():
    """The real head's problem comes from the caller; a rank that would cost more than max_cost_ratio x
    the exact path is skipped with the predicted ratio, not run."""
    head = lambda L, seed: LoRAProblem.random(L, 8, 4, adapt="QV", logit_bound=2.0, seed=seed)  # noqa: E731
    config = bp.PeersConfig(**{**TINY, "families": ("real-head",), "real_head_sizes": (40,), "favor_features": (4,),
                               "taylor_degrees": (1, 3), "chebyshev_degrees": (1,), "support_degrees": (1,),
                               "max_cost_ratio": 5.0})
    result = bp.run_peers(config, real_head=head)
    rows = {(r["method"], r.get("param"), r["mode"]): r for r in result["rows"]}
    assert rows[("taylor", 1, "plugin")]["status"] == "ok" and rows[("taylor", 1, "plugin")]["target_R"] is None
    assert rows[("taylor", 1, "plugin")]["R"] == pytest.approx(2.0, rel=1e-12)
    skipped = rows[("taylor", 3, "model")]
    assert skipped["status"] == "skipped" and "x the exact path" in skipped["reason"]
    assert bp.peer_cost_ratio(LoRAProblem.random(40, 8, 4, seed=0), 165) > 5.0


def test_a_failing_real_head_is_a_failed_row():
    def broken(L, seed):
        raise OSError("model files missing")

    result = bp.run_peers(bp.PeersConfig(**{**TINY, "families": ("real-head",)}), real_head=broken)
    (row,) = result["rows"]
    assert row["status"] == "failed" and "model files missing" in row["reason"]


def test_summary_frontier_and_winner(tiny):
    for inst in tiny["summary"]["instances"]:
        if inst["status"] != "ok":
            continue
        rows = [r for r in tiny["rows"] if r["family"] == inst["family"] and r["status"] == "ok"
                and r["mode"] in ("plugin", "model")]
        best = min(rows, key=lambda r: r["frob_rel"])
        assert any(f["frob_rel"] == best["frob_rel"] for f in inst["frontier"])  # the most accurate is on it
        times = [f["seconds"] for f in inst["frontier"]]
        errs = [f["frob_rel"] for f in inst["frontier"]]
        assert times == sorted(times) and errs == sorted(errs, reverse=True)  # a Pareto front
        faster = [r for r in rows if r["seconds"] < inst["exact_seconds"]]
        assert (inst["winner"] is None) == (not faster)


def test_max_abs_logit_by_blocks_is_the_dense_maximum():
    p = LoRAProblem.random(70, 3, 2, adapt="QKV", N=2, cross=True, L_kv=33, logit_bound=2.0, seed=4)
    W = p.weights()
    S = p.beta * (p.X3 @ W["Q"]) @ np.swapaxes(p.Xkv3 @ W["K"], -1, -2)
    assert bp.max_abs_logit(p, rows=16) == pytest.approx(float(np.max(np.abs(S))), rel=1e-15)


def test_plot_writes_a_png(tiny, tmp_path):
    path = tmp_path / "peers.png"
    plot_peers(tiny, path)
    assert path.read_bytes()[:8] == PNG_MAGIC


def test_cli_prints_every_row_with_R_and_max_S(tmp_path, capsys):
    out, png = tmp_path / "p.json", tmp_path / "p.png"
    rc = main(["bench", "--peers", "--sizes", "40", "--logit-bounds", "1.3", "--families", "benchmark",
               "--repeats", "1", "--out", str(out), "--plot", str(png)])
    assert rc == 0
    result = json.loads(out.read_text())
    jsonschema.validate(result, PEERS_SCHEMA)
    lines = [line for line in capsys.readouterr().out.splitlines() if " L=40 " in line and " k=" in line]
    assert len(lines) == len(result["rows"]) and all("R=" in line and "max|S|=" in line for line in lines)
    assert png.read_bytes()[:8] == PNG_MAGIC


@pytest.mark.parametrize("argv, match", [
    (["--peers", "--eps", "1e-3"], "--eps does not apply to --peers"),
    (["--peers", "--L-min", "1024"], "--L-min does not apply to --peers"),
    (["--peers", "--degrees", "2"], "--degrees does not apply to --peers"),
    (["--peers", "--families", "nonsense"], "argument --families"),
    (["--peers", "--logit-bounds", "0"], "argument --logit-bounds"),
    (["--logit-bounds", "1.3"], "--logit-bounds applies to --peers only"),
    (["--families", "benchmark"], "--families applies to --peers only"),
    (["--peers", "--out", "x.txt"], "--out must name a .json file"),
    (["--peers", "--seed", "-1"], "--seed must be >= 0"),
])
def test_bad_flags_are_clear_errors(argv, match, capsys):
    try:
        rc = main(["bench", *argv])
    except SystemExit as exc:  # argparse's own type and choice errors
        rc = exc.code
    assert rc == 2
    assert re.search(match, capsys.readouterr().err)


@pytest.mark.parametrize("field, value, exc", [
    ("sizes", (1,), InvalidInputError), ("sizes", [64], InvalidTypeError), ("logit_bounds", (0.0,), InvalidInputError),
    ("families", ("gaussian",), InvalidInputError), ("favor_features", (0,), InvalidInputError),
    ("threads", 0, InvalidInputError), ("support_max_share", 1.5, InvalidInputError), ("seed", -1, InvalidInputError),
])
def test_config_validation_names_the_field(field, value, exc):
    with pytest.raises(exc, match=field):
        bp.PeersConfig(**{field: value})


def test_errors_metric():
    ref = {"A_Q": np.array([[1.0, -2.0]]), "B_Q": np.array([[0.5], [0.0]])}
    got = {"A_Q": np.array([[1.0, -1.0]]), "B_Q": np.array([[0.5], [0.0]])}
    e = bp.errors(got, ref)
    assert e["max_abs"] == 1.0 and e["max_abs_rel"] == 0.5 and e["A_Q_max_rel"] == 0.5
    assert e["frob_rel"] == pytest.approx(1.0 / math.sqrt(5.25))
