"""`lora-proofcheck report`: a tiny-config report end to end (schema, files, HTML, determinism),
atomic writes on failure, and clear CLI errors.

The tiny configuration (hidden --tiny flag) runs every section at toy sizes: about 20 s per
report on 2 cores; the module builds three (the second checks determinism, the third runs the
sweeps on an in-process Dask cluster). The reports carry a small recorded stress campaign and the
recorded audit of real heads (reports/audit/audit.json, `--audit`): "Where real heads sit".
"""

import base64
import copy
import json
import sys
from html.parser import HTMLParser
from pathlib import Path

import jsonschema
import pytest

from lora_proofcheck.cli import main
from lora_proofcheck.report import build
from lora_proofcheck.report.config import ReportConfig
from lora_proofcheck.report.output import schema, writers
from lora_proofcheck.sweeps import stress

SEED = 3
RECORDED_AUDIT = Path(__file__).resolve().parents[2] / "reports" / "audit" / "audit.json"


@pytest.fixture(scope="module")
def stress_file(tmp_path_factory):
    """A small recorded campaign (`lora-proofcheck stress --out`), as `report --stress` reads it."""
    path = tmp_path_factory.mktemp("stress") / "stress.json"
    stress.write_json(path, stress.run_campaign(24, seed=1, round_size=12, cell_size=6, progress=False))
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, stress_file):
    out = tmp_path_factory.mktemp("reports") / "tiny"
    assert main(["report", "--tiny", "--out", str(out), "--seed", str(SEED), "--no-progress",
                 "--stress", str(stress_file), "--audit", str(RECORDED_AUDIT)]) in (0, 1)
    return out, json.loads((out / "report.json").read_text(encoding="utf-8"))


def test_report_json_follows_the_schema(tiny):
    _, report = tiny
    schema.validate(report)
    assert report["config"] == {**report["config"], "mode": "tiny", "seed": SEED, "backend": "numpy"}
    broken = copy.deepcopy(report)
    broken["claims"][0]["verdict"] = "probably"
    with pytest.raises(jsonschema.ValidationError):
        schema.validate(broken)
    del broken["environment"]
    with pytest.raises(jsonschema.ValidationError):
        schema.validate(broken)


def test_report_has_every_file_and_section(tiny):
    out, report = tiny
    names = {p.name for p in out.iterdir()}
    assert {"report.json", "report.md", "report.html"} <= names
    assert {p["file"] for p in report["plots"]} <= names
    assert {p["file"] for p in report["plots"]} == {
        "error_vs_bound.png",
        "bound_tightness.png",
        "phase_diagram.png",
        "sweep.png",
        "time_vs_L.png",
        "real_heads.png",
        "peers_frontier.png",
    }
    env = report["environment"]
    assert env["versions"]["numpy"] and env["cpu"]["cores"] >= 1 and "id" in env["commit"]
    assert report["summary"]["claims"] == len(report["claims"]) >= 20
    assert set(report["measurements"]) == {"properties", "frontier", "sweep", "timing", "benchmark", "stress",
                                           "audit", "peers"}
    assert report["measurements"]["benchmark"]["status"] == "not run"  # tiny mode says so, no numbers
    assert report["engine"] == {"runner": "serial", "workers": 1, "sections": ["properties", "frontier", "sweep"]}
    peers = report["measurements"]["peers"]
    assert peers["status"] == "not run" and "--peers" in peers["reason"]
    md = (out / "report.md").read_text(encoding="utf-8")
    for plot in report["plots"]:
        assert f"]({plot['file']})" in md


class _Images(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images, self.tags = [], 0

    def handle_starttag(self, tag, attrs):
        self.tags += 1
        if tag == "img":
            self.images.append(dict(attrs))


def test_html_parses_and_embeds_every_plot(tiny):
    out, report = tiny
    parser = _Images()
    parser.feed((out / "report.html").read_text(encoding="utf-8"))
    parser.close()
    assert parser.tags > 50
    by_alt = {img["alt"]: img["src"] for img in parser.images}
    for plot in report["plots"]:
        src = by_alt[plot["name"]]
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]) == (out / plot["file"]).read_bytes()


def test_errata_are_confirmed_on_their_stored_counterexamples(tiny):
    _, report = tiny
    assert {e["id"] for e in report["errata"]} == {f"E{i}" for i in range(1, 8)} | {"O1"}
    assert {e["id"]: e["source"] for e in report["errata"]}["O1"] == "ours"
    for e in report["errata"]:
        assert e["status"] == "confirmed", e
        assert e["counterexample"]["file"] == f"errata/counterexamples/{e['id']}.json"
        assert any(o["role"] == "literal" and o["holds"] is False for o in e["outcomes"])


def test_verdicts_are_consistent_with_the_outcomes(tiny):
    _, report = tiny
    from lora_proofcheck._lib.records import Outcome
    from lora_proofcheck.report.claims import ledger

    for claim in report["claims"]:
        outcomes = [
            Outcome(c["name"], c["holds"], "", role=c["role"], status=c["status"], required=c["required"])
            for c in claim["checks"]
        ]
        assert claim["verdict"] == ledger.verdict(claim["kind"], outcomes, claim["printed"])
    by_id = {c["id"]: c["verdict"] for c in report["claims"]}
    assert by_id["Lemma 2.1"] == "verified"
    assert by_id["App. C.7"] == "verified-with-correction"  # E4: the paper's composed bound fails
    # E6's rescaling: Thms 3.1 / A.1 as printed contradict Thm 4.1 (under SETH); Thm 4.1 itself is
    # a conditional lower bound, of which only the reduction is checkable
    assert by_id["Theorem 3.1 (as printed)"] == by_id["Theorem A.1 (as printed)"] == "refuted-as-printed"
    assert by_id["Theorem 4.1"] == "reduction verified"
    assert by_id["Remarks 4.1, 4.2"] == "supported-with-correction"
    assert by_id["App. G"] == "inconclusive"  # nothing that could decide it can run here
    finding = next(c for c in report["claims"] if c["id"] == "Finding (plug-in vs model)")
    measured = {k["name"]: k for k in finding["checks"]}
    assert measured["refutation: the chain is not the model gradient"]["holds"] is True
    assert measured["measured: the two modes at the issue's setting"]["holds"] is True


def test_proofs_section_says_what_is_proved_for_which_sizes(tiny):
    _, report = tiny
    assert report["proofs"] and all(p["all_sizes"] and p["sufficient_size"] for p in report["proofs"])
    by_name = {p["name"]: p for p in report["proofs"]}
    assert by_name["p = dL/dS"]["sufficient_size"] == "L=1, L_kv=3, d=1"
    assert by_name["p = dL/dS"]["basis"] == "Theorem 2"
    assert report["summary"]["proofs_all_sizes"] == report["summary"]["proofs_total"]


def test_same_seed_same_content(tiny, stress_file):
    out, report = tiny
    again, plots = build.build_report(ReportConfig("tiny", SEED, stress_file=str(stress_file),
                                                   audit_file=str(RECORDED_AUDIT)))
    assert schema.comparable(json.loads(json.dumps(again, ensure_ascii=False))) == schema.comparable(report)
    for name, (png, _) in plots.items():
        if name != "time_vs_L.png":  # drawn from timings
            assert png == (out / name).read_bytes(), name


def test_atomic_write_leaves_nothing_on_failure(tiny, tmp_path, monkeypatch):
    out, report = tiny
    plots = {p["file"]: ((out / p["file"]).read_bytes(), p["caption"]) for p in report["plots"]}
    monkeypatch.setattr(build, "build_report", lambda config, **kw: (report, plots))

    def broken(*args, **kwargs):
        raise RuntimeError("disk full (simulated)")

    monkeypatch.setattr(writers, "write_html", broken)
    target = tmp_path / "new"
    with pytest.raises(RuntimeError, match="simulated"):
        build.write_report(ReportConfig("tiny"), target)
    assert list(tmp_path.iterdir()) == []  # no DIR, no temporary folder

    # a previous report survives a failed replacement untouched
    monkeypatch.undo()
    monkeypatch.setattr(build, "build_report", lambda config, **kw: (report, plots))
    build.write_report(ReportConfig("tiny"), target)
    before = {p.name: p.read_bytes() for p in target.iterdir()}
    monkeypatch.setattr(writers, "write_markdown", broken)
    with pytest.raises(RuntimeError):
        build.write_report(ReportConfig("tiny"), target)
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["new"]


def _error(capsys, argv) -> str:
    assert main(argv) == 2
    return capsys.readouterr().err


def test_cli_errors_name_the_argument(tmp_path, capsys):
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a directory")
    err = _error(capsys, ["report", "--tiny", "--out", str(blocker / "sub")])
    assert "--out" in err and "error" in err
    err = _error(capsys, ["report", "--tiny", "--out", str(blocker)])
    assert "--out" in err and "not a directory" in err
    other = tmp_path / "data"
    other.mkdir()
    (other / "keep.txt").write_text("user data")
    err = _error(capsys, ["report", "--tiny", "--out", str(other)])
    assert "--out" in err and "refusing" in err and (other / "keep.txt").exists()
    err = _error(capsys, ["report", "--tiny", "--out", str(tmp_path / "r"), "--backend", "jax"])
    assert "--backend" in err
    try:
        import cupy

        has_gpu = cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # noqa: BLE001
        has_gpu = False
    if not has_gpu:
        err = _error(capsys, ["report", "--tiny", "--out", str(tmp_path / "r"), "--backend", "cupy"])
        assert "--backend cupy" in err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("seed", ["-1", "abc", str(2**63)])
def test_bad_seed_is_a_usage_error(seed, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["report", "--tiny", "--out", str(tmp_path / "r"), "--seed", seed])
    assert exc.value.code == 2
    assert "--seed" in capsys.readouterr().err


def test_recorded_benchmark_is_summarized(tmp_path):
    """--bench FILE.json: a recorded `bench` result is validated and carried into the report."""
    import json as _json

    from lora_proofcheck.cli import main
    from lora_proofcheck.report.measurements.benchmark import recorded_benchmark

    bad = tmp_path / "bad.json"
    bad.write_text('{"no": "results"}')
    assert main(["report", "--tiny", "--no-progress", "--out", str(tmp_path / "r"), "--bench", str(bad)]) == 2
    assert not (tmp_path / "r").exists()
    recorded = Path(__file__).resolve().parents[2] / "reports" / "benchmarks" / "bench_cpu_full.json"
    section = recorded_benchmark(recorded)
    assert section["status"] == "ok" and section["summary"]["methods"]
    assert _json.loads(recorded.read_text())["results"] == section["results"]


def test_recorded_peers_run_is_carried_with_tables_and_frontier(tiny, tmp_path):
    """--peers FILE.json: the recorded reference run is checked, summarized again from its rows, and
    shows up in report.md (both tables) and in peers_frontier.png; a bad file is a usage error."""
    from lora_proofcheck.report.measurements.peers import recorded_peers
    from lora_proofcheck.report.output import plots

    bad = tmp_path / "bad.json"
    bad.write_text('{"kind": "bench", "rows": []}')
    assert main(["report", "--tiny", "--no-progress", "--out", str(tmp_path / "r"), "--peers", str(bad)]) == 2
    assert not (tmp_path / "r").exists()
    recorded = Path(__file__).resolve().parents[2] / "reports" / "benchmarks" / "peers_cpu.json"
    section = recorded_peers(recorded)
    assert section["status"] == "ok" and section["rows"] == json.loads(recorded.read_text())["rows"]
    _, report = tiny
    report = copy.deepcopy(report)
    report["measurements"]["peers"] = json.loads(json.dumps(section))
    schema.validate(report)
    md = writers.markdown(report)
    assert "Peers side by side: winner per instance" in md and "taylor model" in md
    bench = next(i for i in section["summary"]["instances"] if i["family"] == "benchmark" and i["status"] == "ok")
    assert bench["winner"]["seconds"] < bench["exact_seconds"]  # the winner rule: faster than exact float64
    assert plots.peers_frontier(report)[:8] == b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------------------------------------
# the sweep engine and the recorded stress campaign in the report


def test_sweeps_on_a_cluster_give_the_same_report(tiny, stress_file, thread_cluster, tmp_path):
    """`report --scheduler ADDR`: the same content as the serial report (what ran it is recorded)."""
    _, report = tiny
    out = tmp_path / "cluster"
    assert main(["report", "--tiny", "--out", str(out), "--seed", str(SEED), "--no-progress", "--stress",
                 str(stress_file), "--audit", str(RECORDED_AUDIT), "--scheduler",
                 thread_cluster.scheduler_address]) in (0, 1)
    again = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert again["engine"]["runner"] == f"scheduler {thread_cluster.scheduler_address}"
    assert again["engine"]["workers"] == 2
    assert schema.comparable(again) == schema.comparable(report)


def test_the_recorded_stress_summary_is_carried_and_shown(tiny, stress_file):
    out, report = tiny
    section = report["measurements"]["stress"]
    recorded = json.loads(stress_file.read_text(encoding="utf-8"))
    assert section["status"] == "ok" and section["summary"] == recorded
    assert section["source"].startswith(f"recorded: {stress_file.name}")
    assert report["summary"]["stress_cases"] == 24 and report["summary"]["stress_violations"] == 0
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "## Stress campaign: certificate violations (recorded)" in md
    for family in recorded["families"]:
        assert f"| {family} | {recorded['families'][family]['cases']} |" in md
    assert "Stress campaign: certificate violations (recorded)" in (out / "report.html").read_text(encoding="utf-8")
    checks = {c["name"]: c for claim in report["claims"] if claim["id"] in ("Theorem 3.1", "Theorem A.1")
              for c in claim["checks"]}
    assert checks["stress campaign (recorded)"]["holds"] is True
    assert "0 violations in 24 adversarial cases" in checks["stress campaign (recorded)"]["measured"]


def test_without_a_recorded_campaign_the_section_says_so(tiny):
    from lora_proofcheck.report.measurements.stress import stress as stress_section

    _, report = tiny
    missing = stress_section(ReportConfig("tiny"))
    assert missing["status"] == "not run" and "report --stress" in missing["reason"]
    other = copy.deepcopy(report)
    other["measurements"]["stress"] = missing
    schema.validate(other)
    assert ("Stress campaign", ("status", "reason"), [("not run", missing["reason"])], "") in writers.tables(other)
    broken = copy.deepcopy(report)
    broken["measurements"]["stress"]["summary"]["violations"] = -1
    with pytest.raises(jsonschema.ValidationError):
        schema.validate(broken)


def test_a_recorded_violation_refutes_the_certified_bound(tiny, stress_file, tmp_path):
    from lora_proofcheck.report.claims import measured
    from lora_proofcheck.report.context import Context
    from lora_proofcheck.report.measurements.stress import recorded_stress

    bad = json.loads(stress_file.read_text(encoding="utf-8"))
    bad["violations"] = 1
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    ctx = Context(ReportConfig("tiny"))
    ctx.put("stress", recorded_stress(path))
    holds, text, data = measured.stress_campaign(ctx)
    assert holds is False and data["violations"] == 1 and "1 violations" in text


@pytest.mark.parametrize("argv, match", [
    (["--workers", "0"], "--workers: expected a positive integer"),
    (["--workers", "two"], "--workers: expected a positive integer"),
    (["--scheduler", "localhost:8786"], "tcp://HOST:PORT"),
    (["--workers", "2", "--scheduler", "tcp://h:1"], "not allowed with"),
])
def test_engine_flags_are_usage_errors(argv, match, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["report", "--tiny", "--out", str(tmp_path / "r"), *argv])
    assert exc.value.code == 2 and match in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_engine_and_stress_errors_exit_2_before_any_work(tmp_path, capsys, monkeypatch):
    bad = tmp_path / "bad.json"
    bad.write_text('{"schema": "lora-proofcheck/stress-summary/1"}')
    assert main(["report", "--tiny", "--no-progress", "--out", str(tmp_path / "r"), "--stress", str(bad)]) == 2
    assert "--stress" in capsys.readouterr().err and not (tmp_path / "r").exists()
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed -> ImportError
    assert main(["report", "--tiny", "--no-progress", "--out", str(tmp_path / "r"), "--workers", "2"]) == 2
    assert 'pip install -e ".[distributed]"' in capsys.readouterr().err
    assert not (tmp_path / "r").exists() and list(tmp_path.iterdir()) == [bad]


def test_where_real_heads_sit_from_the_recorded_audit(tiny):
    """The section carries the recorded audit's numbers unchanged, its figure, and the App. G claim reads it:
    two required checks that cannot run (so: inconclusive) and the audit's evidence, which ran."""
    from lora_proofcheck.report.measurements.real_heads import recorded_audit

    out, report = tiny
    section = report["measurements"]["audit"]
    recorded = json.loads(RECORDED_AUDIT.read_text(encoding="utf-8"))
    assert section["status"] == "ok" and section["summary"] == recorded["summary"]
    assert section == json.loads(json.dumps(recorded_audit(RECORDED_AUDIT)))
    assert len(section["points"]) == len(recorded["heads"])
    assert {(s["model"], s["attention"], s["L"]) for s in section["summary"]} >= {
        ("minilm", "softmax", 128), ("minilm", "softmax", 512)}
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "## Where real heads sit" in md and "The LoRA gradient on a real head" in md
    for s in section["summary"]:
        label = s["model"] if s["attention"] == "softmax" else f"{s['model']} ({s['attention']})"
        assert f"| {label} | {s['L']} |" in md
    (claim,) = [c for c in report["claims"] if c["id"] == "App. G"]
    checks = {c["name"]: c for c in claim["checks"]}
    required = [c for c in claim["checks"] if c["role"] == "claim"]
    assert required and all(c["required"] and c["status"] == "skipped" for c in required)
    evidence = [c for c in claim["checks"] if c["role"] == "evidence"]
    heads = checks["real softmax-trained heads vs the certifiable frontier (recorded audit)"]
    assert heads["status"] == "ran" and heads["holds"] is True and "minilm L=128" in heads["measured"]
    assert len(evidence) == 3 and claim["kind"] == "empirical claim"


def test_recorded_audit_bad_files_name_the_flag(tmp_path, capsys):
    from lora_proofcheck.report.config import ReportConfig as Config
    from lora_proofcheck.report.measurements.real_heads import real_heads

    kind = '"kind": "lora_proofcheck.audit"'
    for text in ("{not json", '{"kind": "something else"}', "{" + kind + ', "schema_version": "2.0"}',
                 "{" + kind + ', "schema_version": "1.0"}'):
        bad = tmp_path / "bad.json"
        bad.write_text(text, encoding="utf-8")
        argv = ["report", "--tiny", "--no-progress", "--out", str(tmp_path / "r"), "--audit", str(bad)]
        err = _error(capsys, argv)
        assert "--audit" in err and "not a readable audit.json" in err
    missing = tmp_path / "missing.json"
    err = _error(capsys, ["report", "--tiny", "--out", str(tmp_path / "r"), "--audit", str(missing)])
    assert "--audit" in err
    assert not (tmp_path / "r").exists()
    assert real_heads(Config("tiny"))["status"] == "not run"  # no recorded audit: the section says so
