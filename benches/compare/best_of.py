"""Merge several `flashkern bench --json` reports of the same cases, keeping each case's fastest run.

Usage:
    python3 benches/compare/best_of.py merged.json run1.json run2.json [...]

On a shared host a case's median can be hit by another tenant's load for the whole of its
budget; the fastest of a few full runs is the closest to what the machine itself does. Each kept
row is copied whole (its baseline ratio is the one measured in its own run), except that its
roof is the highest any run measured for that case, so no fraction is flattered by a roof
measured under load. `machine` is taken from the run with the highest 1-thread FMA roof, and lists how
many runs were merged.
"""
import json
import re
import sys


def roof_value(row):
    """The roof's figure, e.g. 116.6 of "FMA 116.6 GFLOP/s" or 34.0 of "read BW 34.0 GB/s @ 32 MiB"."""
    return float(re.search(r"([0-9.]+) (?:GFLOP|GB)/s", row["roof"]).group(1))


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    out_path, paths = sys.argv[1], sys.argv[2:]
    reports = [json.load(open(path)) for path in paths]
    runs = {}
    for report in reports:
        for row in report["results"]:
            runs.setdefault((row["op"], row["shape"], row["dtype"], row["threads"]), []).append(row)
    best = {}
    for key, rows in runs.items():
        row = dict(min(rows, key=lambda r: r["median_s"]))
        # The roof too can be measured low under load: divide by the highest of the runs, so a
        # fraction is never flattered by a slow roof measurement.
        roof_row = max(rows, key=roof_value)
        throughput = row.get("gflops") or row.get("gbps")
        row["roof"] = roof_row["roof"]
        row["roof_fraction"] = throughput / roof_value(roof_row)
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
