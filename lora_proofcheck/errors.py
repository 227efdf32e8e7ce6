"""The package's own exceptions: every bad input raises one of these, naming the argument."""

__all__ = ["AboveThresholdError", "InvalidInputError", "InvalidTypeError", "ProofcheckError"]


class ProofcheckError(Exception):
    """Base class of every error lora_proofcheck raises on purpose."""


class InvalidInputError(ProofcheckError, ValueError):
    """A value is wrong: non-finite entries, a bad shape, an unknown module name, ..."""


class InvalidTypeError(ProofcheckError, TypeError):
    """A value has the wrong type: an unsupported dtype, mixed array libraries, ..."""


class AboveThresholdError(ProofcheckError, ValueError):
    """No rank cheaper than the exact path meets the requested accuracy (above the norm threshold)."""
