"""Runs flashkern attention from Python on numpy arrays and checks it against numpy.

Usage: cargo build --release --lib && python3 examples/python/attention_demo.py
Skips (exit 0) when numpy is not installed.
"""
import sys

try:
    import numpy as np
except ImportError:
    print("numpy is not installed: skipping the Python example")
    sys.exit(0)

import flashkern

lib = flashkern.load()
print(f"flashkern {lib.fk_version().decode()} on {lib.fk_isa().decode()}")
rng = np.random.default_rng(0)
b, h, n, d = 2, 4, 50, 32
# [B, N, H, D] memory (as projections produce it), viewed as [B, H, N, D] without a copy.
q, k, v = (rng.standard_normal((b, n, h, d), dtype=np.float32).transpose(0, 2, 1, 3) for _ in range(3))
out = flashkern.attention(lib, q, k, v, causal="top_left")

scores = q.astype(np.float64) @ k.astype(np.float64).transpose(0, 1, 3, 2) / np.sqrt(d)
scores[..., np.triu(np.ones((n, n), dtype=bool), 1)] = -np.inf
p = np.exp(scores - scores.max(-1, keepdims=True))
want = (p / p.sum(-1, keepdims=True)) @ v.astype(np.float64)
err = np.abs(out - want).max()
print(f"attention [B={b}, H={h}, N={n}, D={d}] causal, strided input: max |err| vs numpy = {err:.2e}")
sys.exit(0 if err < 1e-5 else 1)
