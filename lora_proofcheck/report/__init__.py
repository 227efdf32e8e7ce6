"""Verification reports (`lora-proofcheck report`), grouped by what they produce: the claim ledger
(`claims`), the errata with stored counterexamples (`errata`), the measurements (`measurements`:
property grid, phase-transition sweeps, timings, benchmark) and the output files (`output`:
report.json with its schema, report.md, report.html, the plots, the atomic write). `build` runs the
sections in order; `config` holds each mode's sizes and the seed rule."""
