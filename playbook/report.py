"""The report of a run: the verdict, the progress table, the p50 waterfall, traces, the environment,
and every executed phase notebook rendered beside it.

    python -m playbook report reports/<run>        # writes report.md, report.html, notebooks/*.html there
    progress_table(run)                            # | Phase | p50 (ms) | vs Baseline | vs Target | Next Action |

Everything is rendered from the JSON in the run directory; no number is parsed back out of text.
report.html is self-contained: its figures are embedded, nothing is loaded from the network, and no
script runs. Each executed notebook is rendered to notebooks/NN-name.html with its code cells hidden
(nbconvert's basic template in our own page: no CDN script or style) and linked from the index.
report.md carries the same content for a pull request.
"""
import base64
import html
import io
import json
import re

import matplotlib.pyplot as plt

from . import bkc
from .errors import PlaybookError
from .state import Run

STATUS_MARK = {"kept": "kept", "rejected": "rejected", "skipped": "skipped", "failed": "FAILED"}


def _ms(x):
    return "-" if x is None else f"{x:.3f}"


def rows(run):
    """One dict per recorded phase, with the table's derived columns."""
    phases = run.phases()
    base = next((p["p50_ms"] for p in phases if p["name"] == "baseline"), None)
    target = run.params.get("target_ms")
    out = []
    for p in phases:
        p50 = p["p50_ms"]
        vs_base = "-" if p50 is None or not base or p["name"] == "baseline" else \
            f"{(p50 - base) / base:+.1%} ({base / p50:.2f}x)"
        if p50 is None or not target:
            vs_target = "-" if target else "no target"
        else:
            vs_target = "met" if p50 <= target else f"+{p50 - target:.3f} ms"
        out.append({"phase": f"{p['phase']} {p['name']} ({STATUS_MARK[p['status']]})", "p50": _ms(p50),
                    "vs_baseline": vs_base, "vs_target": vs_target, "next_action": p["next_action"] or "-",
                    "raw": p})
    return out


def verdict(run):
    """(met: True, False or None when there is no target, one line): the run's answer at a glance."""
    target = run.params.get("target_ms")
    final = run.phase("verify")
    base = run.phase("baseline")
    if final and final["p50_ms"] is not None:
        p50, what = final["p50_ms"], "verified"
        correct = final.get("correct")
    else:
        kept = [p for p in run.phases() if p["status"] == "kept" and p["p50_ms"] is not None]
        if not kept:
            return None, "nothing measured yet"
        p50, what, correct = kept[-1]["p50_ms"], f"last kept phase ({kept[-1]['name']}), not yet verified", True
    if final and final.get("speedup_vs_baseline"):       # measured beside the untouched model, one process
        speed = f", {final['speedup_vs_baseline']:.2f}x the untouched model measured beside it"
    else:
        speed = f", {base['p50_ms'] / p50:.2f}x the baseline" if base and base.get("p50_ms") else ""
    if correct is False:
        return False, f"Not correct: the verified recipe fails the correctness check ({p50:.3f} ms p50{speed})"
    if not target:
        return None, f"No target set: {p50:.3f} ms p50, {what}{speed}"
    met = p50 <= target
    word = "Target met" if met else "Target missed"
    return met, f"{word}: {p50:.3f} ms p50 against {target:g} ms, {what}{speed}"


def progress_table(run):
    lines = ["| Phase | p50 (ms) | vs Baseline | vs Target | Next Action |",
             "|-------|----------|-------------|-----------|-------------|"]
    for r in rows(run):
        cells = [r["phase"], r["p50"], r["vs_baseline"], r["vs_target"], r["next_action"]]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


def phase_summary(p):
    """A few lines about one phase: verdict, correctness, knobs, notes, error."""
    lines = [f"**Phase {p['phase']} `{p['name']}`: {p['status']}**"]
    if p["p50_ms"] is not None:
        spread = f"p95 {_ms(p['p95_ms'])}, std {_ms(p['std_ms'])} ms over {p.get('iters')} iterations"
        lines.append(f"- p50 {_ms(p['p50_ms'])} ms ({spread})")
    if p.get("previous_p50_ms") is not None:
        lines.append(f"- kept recipe measured beside it: {_ms(p['previous_p50_ms'])} ms "
                     f"(speedup {p.get('speedup_vs_previous')}x, verdict {p.get('verdict')}, "
                     f"noise {p.get('noise', 0):.1%})")
    if p["correct"] is not None:
        line = f"- correct: {p['correct']} (against the untouched model: max abs diff {p['max_abs_diff']}, rel err {p.get('rel_err')}"
        if p.get("precise_err") is not None:
            line += f"; against its fp32 twin: rel err {p['precise_err']:.3g}"
        lines.append(line + ")")
    if p.get("x_of_floor"):
        lines.append(f"- {p['x_of_floor']}x of the floor: {p.get('x_of_bandwidth_floor', '-')}x of the bandwidth floor "
                     f"({_ms(p.get('bandwidth_floor_ms'))} ms), {p.get('x_of_compute_floor', '-')}x of the compute floor "
                     f"({_ms(p.get('compute_floor_ms'))} ms)")
    if p["knobs"]:
        lines.append(f"- knobs: `{json.dumps(_short(p['knobs']))}`")
    lines += [f"- {n}" for n in p.get("notes", [])]
    if p["error"]:
        lines.append(f"- error: `{p['error']}`")
    lines += phase_details(p)
    return "\n".join(lines)


def _short(x):
    """Knobs for reading: long lists (fused groups, rewritten sites) become their length."""
    if isinstance(x, dict):
        return {k: _short(v) for k, v in x.items()}
    if isinstance(x, list) and len(x) > 3:
        return f"[{len(x)} items]"
    return x


def _knobs(k):
    return ", ".join(f"{a}={json.dumps(b) if isinstance(b, (dict, list)) else b}" for a, b in k.items()
                     if a not in ("groups", "route")) or "-"


def phase_details(p):
    """What a rewriting phase found and tried: candidates, sites, backend table, GEMM launches."""
    out = []
    if p.get("candidates"):
        out += ["", "| candidate | correct | p50 (ms) | verdict | compile (s) | kernels (CPU ops) | launch overhead (ms) | error |",
                "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for c in p["candidates"]:
            count = c.get("kernel_count") if c.get("kernel_count") is not None else c.get("cpu_op_count")
            out.append(f"| {_knobs(c['knobs'])} | {c.get('correct')} | {_ms(c.get('p50_ms'))} | {c.get('verdict', '-')} "
                       f"| {c.get('compile_s') if c.get('compile_s') is not None else '-'} | {'-' if count is None else count} "
                       f"| {_ms(c.get('launch_overhead_ms'))} | {(c.get('error') or '')[:120]} |")
    gl = p.get("gemm_launches")
    if gl:
        b, a = gl["before"], gl["after"]
        if isinstance(b, dict):
            out.append("\n- per step (eager), before -> after: " +
                       ", ".join(f"{k} {b[k]} -> {a[k]}" for k in ("gemm", "bmm", "sdpa", "ops")))
        else:
            out.append(f"\n- GEMM launches per step (eager): {b} before, {a} after ({b - a} fewer)")
    if p.get("groups"):
        by = {}
        for g in p["groups"]:
            by[g["found_by"]] = by.get(g["found_by"], 0) + 1
        kinds = {}
        for g in p["groups"]:
            kinds["+".join(g["names"])] = kinds.get("+".join(g["names"]), 0) + 1
        out.append(f"- fused groups: {', '.join(f'{n} x{c}' for n, c in kinds.items())} "
                   f"(found by {', '.join(f'{k}: {v}' for k, v in by.items())})")
    if p.get("weight_bytes"):
        w = p["weight_bytes"]
        out.append(f"- weight bytes: {w['before'] / 1e6:.1f} MB before, {w['after'] / 1e6:.1f} MB after")
    sites = p.get("attention_sites")
    if sites:
        hf = [f"{h['path'] or 'model'}: {h['was']} -> {h['now']}" for h in sites["hf"]]
        out.append(f"- attention: Hugging Face switch {hf or 'none'}; eager sites rewritten to SDPA: "
                   f"{len(sites['rewritten'])}")
    if p.get("sdpa_backends"):
        out += ["", "| SDPA backend | step total (us) | runs here |", "| --- | --- | --- |"]
        for r in p["sdpa_backends"]:
            runs = ("yes" + (f" ({r['note']})" if r.get("note") else "")) if r["ok"] else r["error"]
            out.append(f"| {r['backend']} | {r['us'] if r['ok'] else '-'} | {runs} |")
        if p.get("sdpa_backend_choice"):
            out.append(f"\n- backend choice: {p['sdpa_backend_choice']}")
    if p.get("kernel_sites"):
        k = p["kernel_sites"]
        out.append(f"- kernel sites: {k['norms']} RMSNorms ({k['gemma_norms']} Gemma-style), {k['mlps']} gated MLPs, "
                   f"{k['add_norm_layers']} add + norm pairs; left alone: {len(k['left'])}")
    for n in p.get("kernels_notes", []):
        out.append(f"- {n}")
    return out + profile_details(p)


def profile_details(p):
    """The trace's analysis: counts, busy and launch time, categories, top kernels, the diff."""
    prof = p.get("profile")
    if not prof:
        return []
    cats = ", ".join(f"{k} {v:.3f}" for k, v in (p.get("category_ms") or {}).items() if v)
    if prof["unit"] == "kernel":
        out = [f"- trace ({prof['trace']}, median of {prof['steps_profiled']} steps): {p['kernel_count']} kernels, "
               f"GPU busy {p['gpu_busy_ms']:.3f} of {prof['step_span_ms']:.3f} ms "
               f"(idle {prof['idle_fraction']:.0%}); {prof['launches']} launch calls taking "
               f"{p['launch_overhead_ms']:.3f} ms of CPU (traced), launch to kernel start {_ms(prof.get('launch_to_kernel_ms'))} ms; "
               f"{prof['syncs']} syncs ({prof['sync_ms']:.3f} ms); untraced p50 less GPU busy: {_ms(prof.get('host_bound_ms'))} ms",
               f"- GPU time by category (ms): {cats}"]
    else:
        out = [f"- trace ({prof['trace']}, median of {prof['steps_profiled']} steps): {p['cpu_op_count']} CPU ops, "
               f"busy {prof['cpu_busy_ms']:.3f} of {prof['step_span_ms']:.3f} ms. {prof['note']}",
               f"- CPU self time by category (ms): {cats}"]
    out += ["", "| top by time | category | count | ms |", "| --- | --- | --- | --- |"]
    out += [f"| `{_cell(k['name'])}` | {k.get('category', '-')} | {k['count']} | {k['ms']:.4f} |"
            for k in prof["kernel_table"][:8]]
    by_count = sorted(prof["kernel_table"], key=lambda k: -k["count"])[:5]
    out.append("\n- most launched: " + ", ".join(f"`{_cell(k['name'])}` x{k['count']}" for k in by_count))
    if prof.get("gpu_ms_by_op"):
        out.append("- GPU time by CPU op: " + "; ".join(
            f"{e['op']} {e['shapes'] if e['shapes'] else ''} {e['ms']:.3f} ms ({e['kernels']} kernels)"
            for e in prof["gpu_ms_by_op"][:5]))
    h = prof.get("hta")
    if h:
        said = []
        if "idle_pct" in h:
            said.append(f"idle {h['idle_pct']}%, compute {h['compute_pct']}%, non-compute {h['non_compute_pct']}% "
                        "over all profiled steps with the gaps between them")
        if "kernel_type_pct" in h:
            said.append(f"kernel types {h['kernel_type_pct']}")
        said += [f"{k.replace('_', ' ')}: {v}" for k, v in h.items() if k.endswith("error")]
        out.append("- Holistic Trace Analysis: " + "; ".join(said))
    d = p.get("trace_diff")
    if d:
        delta = "" if d["count_delta"] is None else f"{d['count_delta']:+d}" + (
            "" if d["count_delta_pct"] is None else f" ({d['count_delta_pct']:+.1f}%)")
        out.append(f"- against {d['against']}: {d['unit']}s {d['count_before']} -> {d['count_after']} {delta}; "
                   f"added {len(d['added'])}, removed {len(d['removed'])}, changed {len(d['changed'])}"
                   + (f" (e.g. added `{_cell(d['added'][0]['name'])}`)" if d["added"] else ""))
    return out


def _cell(name, width=70):
    name = name.replace("|", "/").replace("`", "'")
    return name if len(name) <= width else name[:width - 3] + "..."


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
    hatched bars that were not applied, the verified recipe as the last full bar; the target as a line."""
    ps = [p for p in run.phases() if p["p50_ms"] is not None]
    fig, ax = plt.subplots(figsize=(8, 3.6))
    level, labels = None, []
    for i, p in enumerate(ps):
        v = p["p50_ms"]
        if p["name"] in ("baseline", "verify") or level is None:
            ax.bar(i, v, color="#2b7bba" if p["name"] == "baseline" else "#1b9e77")
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
    ax.set_ylabel("p50 latency (ms)")
    target = run.params.get("target_ms")
    if target:
        ax.axhline(target, color="green", linestyle="--", label=f"target {target:g} ms")
        ax.legend(loc="upper right", fontsize=8)
    ax.set_title("p50 waterfall: each kept phase's change from the recipe before it", fontsize=10)
    fig.tight_layout()
    return fig


CATEGORY_COLORS = {"gemm": "#2b7bba", "attention": "#e6550d", "norm": "#31a354", "elementwise": "#9e9ac8",
                   "memcpy": "#fdae6b", "other": "#bdbdbd", "launch": "#636363"}


def plot_timeline(trace_path, title=""):
    """One step: the CPU lane (launch calls, or ops on a CPU) above the GPU lane (kernels), by category."""
    from .profile import read_step
    cpu, gpu = read_step(trace_path)
    fig, ax = plt.subplots(figsize=(9, 1.9))
    lanes = [("CPU", cpu, 1)] + ([("GPU", gpu, 0)] if gpu else [])
    seen = set()
    for _, events, y in lanes:
        for start, dur, _, cat in events:
            ax.broken_barh([(start, max(dur, 1e-4))], (y - 0.35, 0.7), color=CATEGORY_COLORS.get(cat, "#bdbdbd"), lw=0,
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


def environment(run):
    p = run.params
    info, v, c = p.get("device_info", {}), p.get("versions", {}), p.get("ceilings") or {}
    return [("device", info.get("name")), ("driver / runtime", f"{info.get('driver')} / {info.get('runtime')}"),
            ("torch", v.get("torch")), ("transformers", v.get("transformers")), ("triton", v.get("triton")),
            ("python", v.get("python")), ("copy bandwidth", f"{c.get('copy_gbps')} GB/s (read + write)"),
            ("matmul rate", f"{c.get('matmul_tflops')} TFLOP/s ({c.get('matmul_dtype')})"),
            ("workload", (p.get("workload_info") or {}).get("description")), ("dtype", p.get("dtype")),
            ("target", f"{p['target_ms']} ms" if p.get("target_ms") else "none"), ("run", p.get("run_id")),
            ("created", p.get("created"))]


def notebooks(run):
    return sorted((run.path / "notebooks").glob("*.ipynb"))


def notebook_page(nb_path):
    """An executed notebook as one offline HTML page: outputs and Markdown, code cells hidden."""
    import nbformat
    from nbconvert import HTMLExporter
    nb = nbformat.read(str(nb_path), as_version=4)
    exporter = HTMLExporter(template_name="basic", exclude_input=True, exclude_input_prompt=True,
                            exclude_output_prompt=True)
    body, _ = exporter.from_notebook_node(nb)
    body = re.sub(r"<script\b.*?</script>", "", body, flags=re.S)        # widget state and the like: no scripts
    title = html.escape(nb_path.stem)
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 1000px; margin: 2em auto; color: #222; }}
table {{ border-collapse: collapse; }} td, th {{ border: 1px solid #ccc; padding: 3px 6px; }}
pre {{ background: #f6f6f6; padding: 6px; overflow-x: auto; }} img {{ max-width: 100%; }}
.jp-Cell {{ margin: 0.6em 0; }} .jp-RenderedText pre {{ font-size: 12px; }}
</style></head><body>
<p><a href="../report.html">&larr; report</a> &middot; executed notebook <code>{title}.ipynb</code>, code cells hidden</p>
{body}
</body></html>
"""


def render_notebooks(run):
    """notebooks/NN-name.html beside each executed notebook; {stem: file name or the error}."""
    out = {}
    for nb in notebooks(run):
        try:
            page = nb.with_suffix(".html")
            page.write_text(notebook_page(nb))
            out[nb.stem] = page.name
        except Exception as e:  # noqa: BLE001  (a notebook that cannot be rendered costs its page, not the report)
            out[nb.stem] = f"not rendered: {type(e).__name__}: {e}"
    return out


def figures(run):
    """{file name under figures/: png bytes}: p50 per phase, categories per phase, one timeline per trace."""
    out = {"waterfall.png": png(plot_waterfall(run)), "p50.png": png(plot_p50(run))}
    if any(p.get("category_ms") for p in run.phases()):
        out["categories.png"] = png(plot_categories(run))
    for p, path in traced(run):
        out[timeline_name(p)] = png(plot_timeline(path, f"one step of phase {p['phase']} {p['name']}"))
    return out


def timeline_name(p):
    return f"timeline-{p['phase']:02d}-{p['name']}.png"


def _phase_notebook(p, pages):
    return next((stem for stem in pages if stem[3:] == p["name"]), None)


def markdown(run, names, pages=None):
    pages = pages or {}
    met, line = verdict(run)
    mark = {True: "✅", False: "❌", None: "ℹ️"}[met]
    parts = [f"# Inference playbook report: {run.params['workload']} {run.params.get('preset') or ''}", "",
             f"**{mark} {line}**", "", progress_table(run), "",
             "![p50 waterfall](figures/waterfall.png)", "", "![p50 per phase](figures/p50.png)", ""]
    if "categories.png" in names:
        parts += ["![time by category per phase](figures/categories.png)", ""]
    parts += ["## Phases", ""]
    for p in run.phases():
        parts.append(phase_summary(p))
        stem = _phase_notebook(p, pages)
        if stem and pages[stem].endswith(".html"):
            parts.append(f"- executed notebook: [notebooks/{pages[stem]}](notebooks/{pages[stem]}) "
                         f"([.ipynb](notebooks/{stem}.ipynb))")
        if timeline_name(p) in names:
            parts += ["", f"![one step of {p['name']}](figures/{timeline_name(p)})"]
        parts.append("")
    parts += ["## Environment", "", "| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in environment(run)]
    if pages:
        parts += ["", "## Executed notebooks", ""]
        for stem, page in pages.items():
            parts.append(f"- [{stem}](notebooks/{page})" if page.endswith(".html") else f"- {stem}: {page}")
    return "\n".join(parts) + "\n"


def _inline(text):
    """Escape, then render **bold** and `code` spans."""
    text = html.escape(text)
    text = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", text)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", text)


def _md_to_html(text):
    """The few Markdown forms phase_summary writes: "- " items, tables, bold and code spans."""
    out, table = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            if not set(line) <= set("|- "):
                table.append([c.strip() for c in line.strip().strip("|").split(" | ")])
            continue
        if table:
            head, *body = table
            out.append("<table><tr>" + "".join(f"<th>{_inline(c)}</th>" for c in head) + "</tr>" +
                       "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>" for r in body) +
                       "</table>")
            table = []
        if line.startswith("- "):
            out.append(f"<li>{_inline(line[2:])}</li>")
        elif line.strip():
            out.append(f"<p>{_inline(line)}</p>")
    return "\n".join(out)


def _img(pngs, name, alt, id_=""):
    if name not in pngs:
        return ""
    ident = f" id='{id_}'" if id_ else ""
    return f"<img{ident} alt='{html.escape(alt)}' src='data:image/png;base64,{base64.b64encode(pngs[name]).decode()}'>"


def html_page(run, pngs, pages=None):
    esc, pages = html.escape, pages or {}
    met, line = verdict(run)
    table = "".join(
        f"<tr class='{r['raw']['status']}'><td>{esc(r['phase'])}</td><td>{r['p50']}</td><td>{esc(r['vs_baseline'])}</td>"
        f"<td class='target-{'met' if r['vs_target'] == 'met' else 'open'}'>{esc(r['vs_target'])}</td>"
        f"<td>{esc(r['next_action'])}</td></tr>" for r in rows(run))
    env = "".join(f"<tr><th>{esc(k)}</th><td>{esc(str(v))}</td></tr>" for k, v in environment(run))

    def nb_link(p):
        stem = _phase_notebook(p, pages)
        if not stem:
            return ""
        page = pages[stem]
        return (f"<p class='nb'><a href='notebooks/{esc(page)}'>executed notebook {esc(stem)}</a></p>"
                if page.endswith(".html") else f"<p class='nb'>{esc(stem)}: {esc(page)}</p>")
    phases = "".join(f"<div class='phase' id='phase-{p['phase']}'><ul>{_md_to_html(phase_summary(p))}</ul>"
                     f"{nb_link(p)}{_img(pngs, timeline_name(p), 'one step of ' + p['name'])}</div>"
                     for p in run.phases())
    side = "".join(f"<li><a href='notebooks/{esc(page)}'>{esc(stem)}</a></li>" if page.endswith(".html")
                   else f"<li>{esc(stem)} ({esc(page)})</li>" for stem, page in pages.items())
    title = esc(f"Inference playbook report: {run.params['workload']} {run.params.get('preset') or ''}")
    cls = {True: "met", False: "missed", None: "none"}[met]
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 0; color: #222; }}
.layout {{ display: flex; align-items: flex-start; }}
main {{ flex: 1; max-width: 1100px; padding: 1em 2em; min-width: 0; }}
nav {{ position: sticky; top: 0; width: 230px; padding: 1em; background: #f7f7f7; border-right: 1px solid #ddd;
       min-height: 100vh; box-sizing: border-box; font-size: 14px; }}
nav ul {{ padding-left: 1.1em; }}
table {{ border-collapse: collapse; margin: 1em 0; }} td, th {{ border: 1px solid #ccc; padding: 4px 8px; text-align: left; }}
tr.rejected td, tr.failed td {{ color: #a33; }} tr.skipped td {{ color: #888; }}
td.target-met {{ background: #e3f4e6; font-weight: bold; }}
#verdict {{ padding: 0.7em 1em; border-radius: 6px; font-size: 1.15em; font-weight: bold; }}
#verdict.met {{ background: #e3f4e6; border: 2px solid #1b9e77; }} #verdict.missed {{ background: #fbe9e2; border: 2px solid #d95f02; }}
#verdict.none {{ background: #eef2f7; border: 2px solid #2b7bba; }}
.phase {{ border-left: 3px solid #2b7bba; padding-left: 1em; margin: 1em 0; }}
img {{ max-width: 100%; }} code {{ background: #f4f4f4; }}
</style></head><body><div class="layout">
<nav><b>Executed notebooks</b><ul id="notebooks">{side}</ul>
<b>Sections</b><ul><li><a href="#progress">Progress</a></li><li><a href="#phases">Phases</a></li>
<li><a href="#environment">Environment</a></li></ul></nav>
<main>
<h1>{title}</h1>
<p id="verdict" class="{cls}">{esc(line)}</p>
<h2>Progress</h2>
<table id="progress"><tr><th>Phase</th><th>p50 (ms)</th><th>vs Baseline</th><th>vs Target</th><th>Next Action</th></tr>{table}</table>
{_img(pngs, "waterfall.png", "p50 waterfall", "waterfall-plot")}
{_img(pngs, "p50.png", "p50 per phase", "p50-plot")}
{_img(pngs, "categories.png", "time by category per phase", "categories-plot")}
<h2 id="phases">Phases</h2>{phases}
<h2>Environment</h2><table id="environment">{env}</table>
</main></div>
</body></html>
"""


def write(run_dir):
    """Write report.md, report.html, the figures (figures/*.png), notebooks/*.html and bkc.md into the run."""
    run = Run.open(run_dir)
    pngs = figures(run)
    (run.path / "figures").mkdir(exist_ok=True)
    for name, data in pngs.items():
        (run.path / "figures" / name).write_bytes(data)
    pages = render_notebooks(run)
    (run.path / "report.md").write_text(markdown(run, pngs, pages))
    (run.path / "report.html").write_text(html_page(run, pngs, pages))
    try:
        bkc.write(run)
    except PlaybookError as e:                  # a corrupt recipe must not cost the report of what was measured
        (run.path / "bkc.md").write_text(f"No best known config: {e}\n")
    return run.path / "report.html"
