"""The report's figures, from the run's JSON and traces: p50 per phase, the p50 waterfall, one step's
timeline, time by category, and where each phase's wall time went.

    fig = plot_waterfall(run); data = png(fig)     # png() closes the figure
"""
import io

from .tables import rows


class _Pyplot:
    """matplotlib.pyplot, imported on first use, not with the playbook: a kernel forked from
    playbook/forkkernel.py then picks its own (inline) backend, and the chain imports it in a kernel's
    warm-up, where the phase does not wait for it (0.6 s on a 2-core CPU)."""

    def __getattr__(self, name):
        import matplotlib.pyplot
        return getattr(matplotlib.pyplot, name)


plt = _Pyplot()


def plot_p50(run):
    """p50 per phase (kept solid, others hatched), with the target and the bandwidth floor as lines."""
    rs = [r for r in rows(run) if r["raw"]["p50_ms"] is not None]
    fig, ax = plt.subplots(figsize=(8, 3.6))
    colors = {"kept": "#2b7bba", "rejected": "#d95f02", "failed": "#999999", "skipped": "#cccccc"}
    for i, r in enumerate(rs):
        p = r["raw"]
        ax.bar(i, p["p50_ms"], color=colors[p["status"]], hatch=None if p["status"] == "kept" else "//")
        ax.errorbar(i, p["p50_ms"], yerr=[[p["p50_ms"] - (p.get("min_ms") or p["p50_ms"])],
                                          [(p["p95_ms"] or p["p50_ms"]) - p["p50_ms"]]], color="black", capsize=3)
    ax.set_xticks(range(len(rs)), [f"{r['raw']['phase']} {r['raw']['name']}" for r in rs], rotation=20)
    ax.set_ylabel("p50 latency (ms)")
    target = run.params.get("target_ms")
    if target:
        ax.axhline(target, color="green", linestyle="--", label=f"target {target:g} ms")
    floor = next((r["raw"].get("bandwidth_floor_ms") for r in rs if r["raw"].get("bandwidth_floor_ms")), None)
    if floor:
        ax.axhline(floor, color="purple", linestyle=":", label=f"bandwidth floor {floor:.3f} ms")
    if target or floor:
        ax.legend(loc="upper right", fontsize=8)
    ax.set_title(f"{run.params['workload']} {run.params.get('preset') or ''} on "
                 f"{run.params.get('device_info', {}).get('name', run.params['device'])}", fontsize=10)
    fig.tight_layout()
    return fig


def plot_waterfall(run):
    """The p50 waterfall: from the baseline, each kept phase's step down (or up), rejected phases as
    hatched bars that were not applied, the verified recipe as the last full bar; the target as a line.
    Once the step has fallen tenfold (phase 1 often does that), the axis is logarithmic, so the later,
    smaller steps stay readable."""
    ps = [p for p in run.phases() if p["p50_ms"] is not None]
    fig, ax = plt.subplots(figsize=(8, 3.6))
    values = [p["p50_ms"] for p in ps]
    log = bool(values) and max(values) > 10 * min(values)
    floor = min(values) / 2 if log else 0.0            # full bars start here (a log axis has no zero)
    level, labels = None, []
    for i, p in enumerate(ps):
        v = p["p50_ms"]
        if p["name"] in ("baseline", "verify") or level is None:
            ax.bar(i, v - floor, bottom=floor, color="#2b7bba" if p["name"] == "baseline" else "#1b9e77")
            ax.text(i, v, f"{v:.3g}", ha="center", va="bottom", fontsize=7)
            level = v if p["name"] == "baseline" else level
        elif p["status"] == "kept":
            ax.bar(i, level - v, bottom=v, color="#1b9e77" if v <= level else "#d95f02")
            ax.text(i, v, f"{v:.3g}", ha="center", va="top", fontsize=7)
            level = v
        else:
            lo, hi = sorted((level, v))
            ax.bar(i, hi - lo or level * 0.002, bottom=lo, color="none", edgecolor="#d95f02", hatch="//")
            ax.text(i, hi, f"{v:.3g} ({p['status']})", ha="center", va="bottom", fontsize=7, color="#d95f02")
        labels.append(f"{p['phase']} {p['name']}")
    ax.set_xticks(range(len(ps)), labels, rotation=20)
    ax.set_ylabel("p50 latency (ms)" + (", log scale" if log else ""))
    if log:
        ax.set_yscale("log")
        ax.set_ylim(bottom=floor)
    target = run.params.get("target_ms")
    if target:
        ax.axhline(target, color="green", linestyle="--", label=f"target {target:g} ms")
        ax.legend(loc="upper right", fontsize=8)
    ax.set_title("p50 waterfall: each kept phase's change from the recipe before it", fontsize=10)
    fig.tight_layout()
    return fig


CATEGORY_COLORS = {"gemm": "#2b7bba", "attention": "#e6550d", "norm": "#31a354", "elementwise": "#9e9ac8",
                   "memcpy": "#fdae6b", "other": "#bdbdbd", "launch": "#636363"}


BARS_PER_LANE = 1500      # a lane is ~1000 pixels wide: more bars than that are not seen, only drawn slowly


def merge_events(events, bars=BARS_PER_LANE):
    """[(start, dur, category)] with neighbours of one category closer than 1/bars of the lane merged:
    an eager pi0 step has tens of thousands of kernels, which a figure cannot show one by one."""
    if not events:
        return []
    span = max(s + d for s, d, _, _ in events) - min(s for s, _, _, _ in events)
    gap, out = span / bars, []
    for start, dur, _, cat in sorted(events):
        if out and out[-1][2] == cat and start - (out[-1][0] + out[-1][1]) <= gap:
            out[-1][1] = max(out[-1][1], start + dur - out[-1][0])
        else:
            out.append([start, dur, cat])
    return out


def plot_timeline(trace_path, title=""):
    """One step: the CPU lane (launch calls, or ops on a CPU) above the GPU lane (kernels), by category."""
    from ..profile import read_step
    cpu, gpu = read_step(trace_path)
    fig, ax = plt.subplots(figsize=(9, 1.9))
    lanes = [("CPU", cpu, 1)] + ([("GPU", gpu, 0)] if gpu else [])
    seen = set()
    for _, events, y in lanes:
        by_cat = {}
        for start, dur, cat in merge_events(events):
            by_cat.setdefault(cat, []).append((start, max(dur, 1e-4)))
        for cat, bars in by_cat.items():          # one call per category: fast for thousands of bars
            ax.broken_barh(bars, (y - 0.35, 0.7), color=CATEGORY_COLORS.get(cat, "#bdbdbd"), lw=0,
                           label=None if cat in seen else cat)
            seen.add(cat)
    ax.set_yticks([y for _, _, y in lanes], [n for n, _, _ in lanes])
    ax.set_xlabel("ms from the step's start")
    ax.set_title(title, fontsize=9)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7, frameon=False)
    fig.tight_layout()
    return fig


def plot_categories(run):
    """Time by category per measured phase, stacked, phases side by side (GPU time, or CPU self time)."""
    ps = [p for p in run.phases() if p.get("category_ms")]
    fig, ax = plt.subplots(figsize=(8, 3.2))
    bottoms = [0.0] * len(ps)
    for cat in CATEGORY_COLORS:
        vals = [p["category_ms"].get(cat, 0.0) for p in ps]
        if any(vals) and cat != "launch":
            ax.bar(range(len(ps)), vals, bottom=bottoms, color=CATEGORY_COLORS[cat], label=cat)
            bottoms = [b + v for b, v in zip(bottoms, vals)]
    ax.set_xticks(range(len(ps)), [f"{p['phase']} {p['name']}" for p in ps], rotation=20)
    unit = "GPU time" if any(p.get("kernel_count") for p in ps) else "CPU self time"
    ax.set_ylabel(f"{unit} per step (ms)")
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    return fig


TIME_COLORS = {"start": "#bdbdbd", "start_ahead": "#e0e0e0", "build_ahead": "#dadaeb",
               "compile_ahead": "#fdd9b5", "kernel_wait": "#fdd0a2",
               "papermill": "#969696", "build": "#9e9ac8", "decide": "#fdae6b", "compile": "#d95f02", "check": "#31a354", "wait_ahead": "#c7e9c0", "time": "#2b7bba",
               "trace": "#e6550d", "render": "#756bb1", "other": "#636363"}


def plot_time(run):
    """Where each phase's wall time went (its JSON's time_s), stacked per phase, with the total beside it.
    `start_ahead`, `build_ahead` and `compile_ahead` (done by a kernel started while the phase before ran) are hatched: they
    are not in the total."""
    ps = [p for p in run.phases() if p.get("time_s")]
    # tall enough for the legend beside it (up to 14 sections) even for a run of one phase
    fig, ax = plt.subplots(figsize=(8, 0.5 + 0.42 * max(len(ps), 5)))
    seen = set()
    for i, p in enumerate(ps):
        t, left = p["time_s"], 0.0
        for name, color in TIME_COLORS.items():
            v = t.get(name) or 0.0
            if v <= 0:
                continue
            ax.barh(i, v, left=left, color=color, hatch="//" if name.endswith("_ahead") else None,
                    label=None if name in seen else name)
            seen.add(name)
            left += v
        ax.text(left, i, f" {t.get('total', 0):.0f} s", va="center", fontsize=7)
    ax.set_yticks(range(len(ps)), [f"{p['phase']} {p['name']}" for p in ps])
    ax.invert_yaxis()
    ax.set_xlabel("seconds of wall time")
    total = (run.params.get("chain_s") or {}).get("total")
    ax.set_title("where each phase's time went" + (f" (the whole chain: {total:.0f} s)" if total else ""), fontsize=10)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7, frameon=False)
    fig.tight_layout()
    return fig


def traced(run):
    """(phase result, trace path) for every phase with a trace on disk."""
    out = []
    for p in run.phases():
        prof = p.get("profile")
        if prof and (run.path / "traces" / prof["trace"]).exists():
            out.append((p, run.path / "traces" / prof["trace"]))
    return out


def close(fig):
    plt.close(fig)


def png(fig):
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    close(fig)
    return buf.getvalue()


