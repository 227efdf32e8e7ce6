"""The claim ledger (`ledger`: one entry per claim of the paper, its checks and a computed verdict) and
the checks it runs: exact SymPy identities (`symbolic`), numerical bounds against oracles
(`numeric`), and evidence from the report's measured sections (`measured`)."""
