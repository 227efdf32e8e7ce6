"""The one table of benchmark presets: the `bench` command's `--quick`, `--targets` and default (full) runs, and
the small runs a report makes when no recorded benchmark is given (`report --quick` / `--full`).

Each preset is a dict of `BenchConfig` fields (`PeersConfig` fields for `bench --peers`); the command
line overrides any of them.
"""

from __future__ import annotations

__all__ = ["PEERS_PRESETS", "PRESETS"]

PRESETS = {
    # lora-proofcheck bench --quick / bench
    "quick": dict(L_min=256, L_max=2048, repeats=1, max_seconds=30.0, budget_seconds=180.0, gemm_square=512,
                  contraction_L=2048),
    "full": dict(L_min=1024, L_max=131072, repeats=3, max_seconds=300.0, budget_seconds=1200.0, gemm_square=2048),
    # lora-proofcheck bench --targets: just what the targets table needs (a few minutes). The methods
    # are exact-blocked, approx-rtol<RTOL> for each --rtol and torch-autograd (the CLI adds them);
    # PyTorch up to 2^13, extrapolated beyond; contractions at g = 6, 7 (d = 8) at 2^14
    "targets": dict(L_min=1024, L_max=65536, repeats=1, max_seconds=300.0, budget_seconds=900.0, gemm_square=2048,
                    torch_max_L=8192, contraction_degrees=(6, 7), contraction_L=16384),
    # the benchmark section of lora-proofcheck report --quick / --full
    "report-quick": dict(L_list=(1024, 2048, 4096), repeats=1, eps=(1e-3,), budget_seconds=90.0, max_seconds=60.0,
                         fit_min_L=1024, gemm_square=512),
    "report-full": dict(L_min=1024, L_max=32768, repeats=3, eps=(1e-3, 1e-6), budget_seconds=900.0,
                        max_seconds=300.0, fit_min_L=4096, gemm_square=2048),
}

#: `PeersConfig` fields of lora-proofcheck bench --peers --quick / bench --peers (the reference run)
PEERS_PRESETS = {
    "quick": dict(sizes=(512,), logit_bounds=(1.3,), families=("benchmark", "aligned", "real-head"),
                  favor_features=(64, 256), repeats=1),
    "full": dict(sizes=(512, 2048, 8192), logit_bounds=(1.3, 4.8)),
}
