"""Compare `flashkern bench --json` with PyTorch and ONNX Runtime on the same SHAPES.md cases.

Usage:
    cargo run --release -- bench --json flashkern.json
    python3 benches/compare/compare.py flashkern.json [--out-dir benches/compare/out]

Peers run only when importable (torch; onnxruntime + onnx for matmul), on the thread counts and
dtypes the flashkern report has, in this process, one after the other. Writes `comparison.md`
(a table) and, when matplotlib is installed, `comparison.png` (a chart). With no peer
installed it still writes flashkern's own table and chart.
"""
import argparse
import json
import os
import statistics
import sys
import time

MATMUL = {"sq512": (512, 512, 512), "sq1024": (1024, 1024, 1024), "sq2048": (2048, 2048, 2048),
          "minilm_up": (128, 384, 1536), "minilm_down": (128, 1536, 384), "gpt2_up": (512, 768, 3072),
          "gpt2_down": (512, 3072, 768), "gemv4096": (1, 4096, 4096)}
ATTENTION = {"minilm128": (1, 12, 12, 128, 128, 32, False), "bert512": (1, 12, 12, 512, 512, 64, False),
             "long2k": (1, 12, 12, 2048, 2048, 64, False), "long2k_causal": (1, 12, 12, 2048, 2048, 64, True),
             "long4k_d128_causal": (1, 8, 8, 4096, 4096, 128, True), "decode_gqa": (1, 32, 8, 1, 4096, 128, False)}
NORM = {"ln_minilm": (128, 384), "ln_gpt2": (512, 768), "ln_big": (16384, 768), "ln_wide": (2048, 4096)}


def median_time(fn, budget=0.5):
    fn()
    start = time.perf_counter()
    fn()
    first = time.perf_counter() - start
    times = []
    for _ in range(max(1, min(30, int(budget / max(first, 1e-9))))):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def work(op, shape, dtype_size):
    """(amount, unit) as flashkern counts it: FLOPs, or bytes for memory-bound cases."""
    if op == "matmul":
        m, k, n = MATMUL[shape]
        return (n * k * dtype_size, "GB/s") if m == 1 else (2.0 * m * n * k, "GFLOP/s")
    if op == "attention":
        b, hq, hkv, nq, nkv, d, causal = ATTENTION[shape]
        if nq <= 8:
            return 2 * b * hkv * nkv * d * dtype_size, "GB/s"
        return 4.0 * b * hq * nq * nkv * d / (2 if causal else 1), "GFLOP/s"
    rows, hidden = NORM[shape]
    return 3 * rows * hidden * dtype_size + 2 * hidden * 4, "GB/s"


def torch_cases(cases):
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        print("torch not installed: PyTorch skipped")
        return []
    dtypes = {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}
    results = []
    for op, shape, dtype, threads in cases:
        torch.set_num_threads(threads)
        t = dtypes[dtype]
        if op == "matmul":
            m, k, n = MATMUL[shape]
            a, b = torch.randn(m, k, dtype=t), torch.randn(n, k, dtype=t)
            fn = lambda: F.linear(a, b)
        elif op == "attention":
            bb, hq, hkv, nq, nkv, d, causal = ATTENTION[shape]
            q = torch.randn(bb, hq, nq, d, dtype=t)
            k = torch.randn(bb, hkv, nkv, d, dtype=t).repeat_interleave(hq // hkv, 1)
            v = torch.randn(bb, hkv, nkv, d, dtype=t).repeat_interleave(hq // hkv, 1)
            fn = lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        else:
            rows, hidden = NORM[shape]
            x, r = torch.randn(rows, hidden, dtype=t), torch.randn(rows, hidden, dtype=t)
            g, be = torch.ones(hidden, dtype=t), torch.zeros(hidden, dtype=t)
            fn = lambda: F.layer_norm(x + r, (hidden,), g, be)
        with torch.inference_mode():
            seconds = median_time(fn)
        results.append(("PyTorch", op, shape, dtype, threads, seconds))
    return results


def ort_cases(cases):
    try:
        import numpy as np
        import onnx
        import onnxruntime as ort
        from onnx import TensorProto, helper
    except ImportError:
        print("onnxruntime/onnx not installed: ONNX Runtime skipped")
        return []
    results = []
    for op, shape, dtype, threads in cases:
        if op != "matmul" or dtype != "f32":
            continue
        m, k, n = MATMUL[shape]
        graph = helper.make_graph(
            [helper.make_node("Gemm", ["a", "b"], ["c"], transB=1)], "mm",
            [helper.make_tensor_value_info("a", TensorProto.FLOAT, [m, k]),
             helper.make_tensor_value_info("b", TensorProto.FLOAT, [n, k])],
            [helper.make_tensor_value_info("c", TensorProto.FLOAT, [m, n])])
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        session = ort.InferenceSession(helper.make_model(graph).SerializeToString(), options)
        feeds = {"a": np.random.randn(m, k).astype(np.float32), "b": np.random.randn(n, k).astype(np.float32)}
        results.append(("ONNX Runtime", op, shape, dtype, threads, median_time(lambda: session.run(None, feeds))))
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("report")
    parser.add_argument("--out-dir", default=os.path.join(os.path.dirname(__file__), "out"))
    args = parser.parse_args()
    report = json.load(open(args.report))
    ours = [r for r in report["results"] if r["op"] in ("matmul", "attention", "norm")]
    cases = [(r["op"], r["shape"], r["dtype"], r["threads"]) for r in ours]
    rows = [("flashkern", r["op"], r["shape"], r["dtype"], r["threads"], r["median_s"]) for r in ours]
    # The baseline flashkern ran in the same process (gemm crate / naive attention / unfused norm).
    rows += [("baseline in the same run", r["op"], r["shape"], r["dtype"], r["threads"], r["baseline_s"]) for r in ours]
    rows += torch_cases(cases) + ort_cases(cases)
    os.makedirs(args.out_dir, exist_ok=True)
    size = {"f32": 4, "bf16": 2, "f16": 2}
    table = ["| op | shape | dtype | threads | implementation | median ms | throughput |", "|---|---|---|---|---|---|---|"]
    bars = []
    for impl, op, shape, dtype, threads, seconds in sorted(rows, key=lambda r: (r[1], r[2], r[3], r[4], r[0])):
        amount, unit = work(op, shape, size[dtype])
        rate = amount / seconds / 1e9
        table.append(f"| {op} | {shape} | {dtype} | {threads} | {impl} | {seconds * 1e3:.3f} | {rate:.1f} {unit} |")
        bars.append((f"{op}/{shape}/{dtype}/{threads}t", impl, rate))
    machine = report["machine"]
    roofs = ", ".join(f"{g:.0f} ({t} thr)" for t, g in machine["fma_gflops"].items())
    header = f"ISA {machine['isa']}, {machine['cpus']} CPUs, f32 FMA roof {roofs} GFLOP/s"
    with open(os.path.join(args.out_dir, "comparison.md"), "w") as f:
        f.write(f"{header}\n\n" + "\n".join(table) + "\n")
    print(f"wrote {os.path.join(args.out_dir, 'comparison.md')}")
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no chart")
        return 0
    impls = sorted({b[1] for b in bars})
    ops = [op for op in ("matmul", "attention", "norm") if any(b[0].startswith(op + "/") for b in bars)]
    fig, axes = plt.subplots(len(ops), 1, figsize=(14, 4.2 * len(ops)), squeeze=False)
    for ax, op in zip(axes[:, 0], ops):
        mine = [b for b in bars if b[0].startswith(op + "/")]
        labels = sorted({b[0] for b in mine}, key=[b[0] for b in mine].index)
        width = 0.8 / len(impls)
        for i, impl in enumerate(impls):
            values = {b[0]: b[2] for b in mine if b[1] == impl}
            ax.bar([x + i * width for x in range(len(labels))], [values.get(l, 0) for l in labels], width, label=impl)
        ax.set_xticks([x + 0.4 - width / 2 for x in range(len(labels))])
        ax.set_xticklabels([l[len(op) + 1:] for l in labels], rotation=90, fontsize=6)
        ax.set_ylabel("GB/s" if op == "norm" else "GFLOP/s (GB/s: gemv, decode)")
        ax.set_title(f"{op} — {header}", fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(args.out_dir, "comparison.png"), dpi=110)
    print(f"wrote {os.path.join(args.out_dir, 'comparison.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
