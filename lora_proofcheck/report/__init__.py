"""Verification reports: the claim ledger, the errata with stored counterexamples, the
phase-transition evidence, and `lora-proofcheck report` (report.json / report.md / report.html)."""
