"""The runtime gradient paths and the planner.

`exact_path` (the generated O(L^2 d) kernels, dense or in row blocks), `lowrank_path` (the fused
low-rank chain over row chunks: the approximate path's kernel), `approx` (`approx_gradients`:
certify, plan, run the path chosen), `a_posteriori` (`a_posteriori_bound`: a result's error certified
against a more accurate certified reference run), `planner` (logit bound, threshold report, `plan` without
data), `costs` (flops and memory read off the derivations), `peers` (`peer_gradients`: the peer
approximations, as plug-in or model gradients).
"""
