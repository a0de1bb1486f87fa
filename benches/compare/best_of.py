"""Merge several `flashkern bench --json` reports of the same cases, keeping each case's fastest run.

Usage:
    python3 benches/compare/best_of.py merged.json run1.json run2.json [...]

On a shared host a case's median can be hit by another tenant's load for the whole of its
budget; the fastest of a few full runs is the closest to what the machine itself does. Each kept
row is copied whole, so its roof, fraction of roof and baseline ratio are the ones measured in
its own run. `machine` is taken from the run with the highest 1-thread FMA roof, and lists how
many runs were merged.
"""
import json
import sys


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    out_path, paths = sys.argv[1], sys.argv[2:]
    reports = [json.load(open(path)) for path in paths]
    best = {}
    for report in reports:
        for row in report["results"]:
            key = (row["op"], row["shape"], row["dtype"], row["threads"])
            if key not in best or row["median_s"] < best[key]["median_s"]:
                best[key] = row
    order = [(r["op"], r["shape"], r["dtype"], r["threads"]) for r in reports[0]["results"]]
    order += [key for key in best if key not in order]
    machine = dict(max(reports, key=lambda r: r["machine"]["fma_gflops"]["1"])["machine"])
    machine["merged_runs"] = len(reports)
    with open(out_path, "w") as f:
        json.dump({"machine": machine, "results": [best[key] for key in order]}, f, indent=1)
    print(f"wrote {out_path}: {len(best)} cases, fastest of {len(reports)} runs each")


if __name__ == "__main__":
    main()
