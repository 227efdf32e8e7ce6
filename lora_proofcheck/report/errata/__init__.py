"""The paper's errata: the catalogue (`catalogue`), the evaluators that set a printed form against our
correction on one instance (`evaluators`), the deterministic searches that found the stored
counterexamples (`search`, `python -m lora_proofcheck.report.errata.search`) and their JSON format
(`instances`; the files are package data under `counterexamples/`)."""
