"""Stage 2 of the pipeline: print the derivations into array-API-generic kernel modules.

`printer` (an XPPrinter, NumPyPrinter subclass), `render` (CSE, liveness `del`s, the DO-NOT-EDIT
header), `targets` (which file is printed from which derivation), `regen` (write or check them).
"""
