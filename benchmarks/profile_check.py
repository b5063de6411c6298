"""Check a run's traces against what a trace of a CUDA graph must show (issue 3's GPU goals), from its JSON.

    python benchmarks/profile_check.py reports/<run>         # prints the checks, writes profile_check.json there

- A graph removes launches, not kernels: the baseline (eager) and phase 1's eager + graph candidate run
  the same number of kernels per step; the kept compiled + graph recipe runs fewer (Inductor fused them).
- A replayed graph is one launch: launch calls per step fall to under 1% of eager's, and the time an
  untraced step spends outside GPU work (p50 less GPU busy time: launches, Python, gaps) falls to under
  5% of eager's. What remains is the gap between a graph's nodes (about 0.35 us each). The traced CPU
  time inside cudaGraphLaunch is reported too, but the profiler inflates it (CUPTI instruments every node).
- Each measured phase's category times add up to its GPU busy time within 5% (kernels of one stream do
  not overlap, so the sum of their times is the busy time; more would mean double counting).
"""
import json
import sys
from pathlib import Path


def main(run_dir):
    run = Path(run_dir)
    phases = {p["name"]: p for p in (json.loads(f.read_text()) for f in sorted((run / "phases").glob("*.json")))}
    base, graph = phases["baseline"], phases["cudagraph"]
    eager_graph = next(c for c in graph["candidates"] if c["knobs"].get("compile") is False)
    checks = {
        "same_kernels_eager_and_eager_graph": base["kernel_count"] == eager_graph["kernel_count"],
        "graph_launch_overhead_near_zero": all(
            c["profile"]["launches"] <= 0.01 * base["profile"]["launches"]
            and c["profile"]["host_bound_ms"] <= 0.05 * base["profile"]["host_bound_ms"] for c in (eager_graph, graph)),
    }
    sums = {}
    for name, p in phases.items():
        if p.get("gpu_busy_ms"):
            total = sum(p["category_ms"].values())
            sums[name] = {"category_sum_ms": round(total, 4), "gpu_busy_ms": p["gpu_busy_ms"],
                          "within_5pct": abs(total - p["gpu_busy_ms"]) <= 0.05 * p["gpu_busy_ms"]}
    checks["categories_sum_to_busy"] = bool(sums) and all(s["within_5pct"] for s in sums.values())
    out = {"checks": checks, "all_ok": all(checks.values()),
           "kernels": {"baseline": base["kernel_count"], "cudagraph eager + graph": eager_graph["kernel_count"],
                       "cudagraph kept": graph["kernel_count"]},
           "launches": {name: p["profile"]["launches"] for name, p in
                        (("baseline", base), ("cudagraph eager + graph", eager_graph), ("cudagraph kept", graph))},
           "host_bound_ms": {name: p["profile"]["host_bound_ms"] for name, p in
                             (("baseline", base), ("cudagraph eager + graph", eager_graph), ("cudagraph kept", graph))},
           "launch_overhead_ms (traced)": {"baseline": base["launch_overhead_ms"],
                                  "cudagraph eager + graph": eager_graph["launch_overhead_ms"],
                                  "cudagraph kept": graph["launch_overhead_ms"]},
           "category_sums": sums}
    (run / "profile_check.json").write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))
    return 0 if out["all_ok"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
