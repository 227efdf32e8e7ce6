"""Code generation: deterministic, current (regen --check), array-API output, detects drift."""

import ast

import pytest
import sympy as sp

from lora_proofcheck.cli import main
from lora_proofcheck.codegen import regen as regen_mod
from lora_proofcheck.codegen import targets as targets_mod
from lora_proofcheck.codegen.printer import XPPrinter
from lora_proofcheck.derivations import decomposition
from lora_proofcheck.derivations.nodes import FaceSplit, RowDot, exp_elementwise, rowsum


def test_regen_check_is_clean(capsys):
    assert main(["regen", "--check"]) == 0, capsys.readouterr().out


def test_regeneration_is_deterministic():
    first, second = targets_mod.targets(), targets_mod.targets()
    assert first == second and first


def test_generated_files_carry_header_and_digest():
    text = (targets_mod.KERNELS / "_generated_exact.py").read_text()
    assert "DO NOT EDIT" in text and f"derivation decomposition sha256: {decomposition.build().digest()}" in text
    ast.parse(text)
    assert ".dot(" not in text and "numpy" not in text.split('"""', 2)[2]  # array-API only


def test_check_detects_a_hand_edit(tmp_path, monkeypatch):
    path = tmp_path / "_generated_exact.py"
    text = targets_mod.exact_module()
    path.write_text(text.replace("xp.exp(", "xp.expm1("))
    monkeypatch.setattr(regen_mod, "targets", lambda: {path: text})
    stale, _ = regen_mod.regen(check=True)
    assert stale == [path] and "expm1" in path.read_text()  # --check writes nothing
    assert main(["regen", "--check"]) == 1
    stale, _ = regen_mod.regen()
    assert path.read_text() == text and regen_mod.regen(check=True)[0] == []


def test_digest_changes_with_the_derivation():
    D = decomposition.build()
    other = decomposition.build()
    other.steps[-1] = type(other.steps[-1])("dW_V", 2 * other.steps[-1].expr, "")
    assert D.digest() != other.digest()


@pytest.mark.parametrize("expr, text", [
    (lambda M, N, v: M * N.T, "M @ xp.matrix_transpose(N)"),
    (lambda M, N, v: exp_elementwise(M), "xp.exp(M)"),
    (lambda M, N, v: rowsum(M), "xp.sum(M, axis=-1, keepdims=True)"),
    (lambda M, N, v: sp.HadamardProduct(M, N), "M * N"),
    (lambda M, N, v: M - N, "M - N"),
    (lambda M, N, v: RowDot(M, N), "xp.sum(M * N, axis=-1, keepdims=True)"),
])
def test_printer(expr, text):
    M, N = sp.MatrixSymbol("M", 4, 3), sp.MatrixSymbol("N", 4, 3)
    v = sp.MatrixSymbol("v", 4, 1)
    assert XPPrinter().doprint(expr(M, N, v)) == text


def test_printer_face_split_standalone():
    A, B = sp.MatrixSymbol("A", 4, 3), sp.MatrixSymbol("B", 4, 2)
    assert "face_split" in XPPrinter().doprint(FaceSplit(A, B))


def test_cse_never_hoists_operators():
    """CSE must not pull diag(v) out of its products (alone it would be an L x L array), and a
    later pass of a chain takes an earlier step as an argument and binds the sizes its slices use."""
    from sympy.matrices.expressions.diagonal import DiagMatrix

    from lora_proofcheck.codegen.render import Kernel, render_function
    from lora_proofcheck.derivations.nodes import ColSlice, Derivation, HStack

    L, d, k = sp.symbols("L d k", positive=True, integer=True)
    r, C = sp.MatrixSymbol("r", L, 1), sp.MatrixSymbol("C", L, d)
    A, B = sp.MatrixSymbol("A", L, k), sp.MatrixSymbol("B", L, d)
    D = Derivation("t", [r, C, A, B])
    D.let("x", DiagMatrix(r) * C)
    D.let("y", DiagMatrix(r) * C + C)
    V = D.let("V", A.T * HStack(C, FaceSplit(C, B)))
    T = D.let("T", A * V)
    D.let("z", ColSlice(T, d, d + d**2))
    text = render_function(Kernel("f", D, ("r", "C", "A", "B"), ("x", "y", "z"), ""), XPPrinter())
    assert "diagflat" not in text and "xp.eye" not in text
    assert "d = C.shape[-1]" in text and "T[..., d:d**2 + d]" in text
    later = render_function(Kernel("g", D, ("A", "V", "C"), ("z",), ""), XPPrinter())
    assert "def g(A, V, C):" in later and "V = " not in later and "T = A @ V" in later
