"""The report's words and tables, rendered from the run's JSON: the progress table, the verdict, a
phase's summary and details, the time each phase took, the environment.

    progress_table(run)      # | Phase | p50 (ms) | vs Baseline | vs Target | Next Action | Time (s) |
    phase_summary(result)    # a few Markdown lines about one phase
"""
import json

STATUS_MARK = {"kept": "kept", "rejected": "rejected", "skipped": "skipped", "failed": "FAILED"}


def _ms(x):
    return "-" if x is None else f"{x:.3f}"


def _seconds(x):
    return "-" if x is None else f"{x:.0f}"


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
                    "time_s": _seconds((p.get("time_s") or {}).get("total")), "raw": p})
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


def time_line(time_s):
    """"52 s in all: compile 31.5, start 4.1, ..." (sections of one second or more, largest first)."""
    parts = sorted(((k, v) for k, v in time_s.items() if k != "total" and v >= 1), key=lambda kv: -kv[1])
    return f"{time_s.get('total', 0):.0f} s in all" + (": " + ", ".join(f"{k} {v:.1f}" for k, v in parts) if parts else "")


def _cache_line(c):
    return (f"FX graph {c.get('fx_graph_hit', 0)} hit / {c.get('fx_graph_miss', 0)} missed, "
            f"AOTAutograd {c.get('aot_autograd_hit', 0)} hit / {c.get('aot_autograd_miss', 0)} missed"
            + (f" / {c['aot_autograd_bypass']} bypassed ({'; '.join(c.get('aot_autograd_bypass_why') or [])})"
               if c.get("aot_autograd_bypass") else ""))


def progress_table(run):
    lines = ["| Phase | p50 (ms) | vs Baseline | vs Target | Next Action | Time (s) |",
             "|-------|----------|-------------|-----------|-------------|----------|"]
    for r in rows(run):
        cells = [r["phase"], r["p50"], r["vs_baseline"], r["vs_target"], r["next_action"], r["time_s"]]
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
    if p.get("time_s"):
        lines.append(f"- time: {time_line(p['time_s'])}" + (f"; compile caches: {_cache_line(p['compile_cache'])}"
                                                            if p.get("compile_cache") else ""))
    if p.get("compile_stages"):
        top = list(p["compile_stages"].items())[:5]
        lines.append("- inside the compiles (torch's timers, nested): " + ", ".join(f"{k} {v} s" for k, v in top))
    if p.get("not_built"):
        lines.append(f"- not built: {', '.join(p['not_built']['labels'])} ({p['not_built']['why']})")
    if p.get("budget"):
        b = p["budget"]
        lines.append(f"- time budget {b['budget_s']} s, spent {b['spent_s']} s"
                     + (f"; not built: {', '.join(b['left_out'])}" if b["left_out"] else ""))
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
        hf = [f"{h['path'] or 'model'}: {h['was']} -> {h['now']}" + (f" ({h['why']})" if h.get("why") else "")
              for h in sites["hf"]]
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
    if p.get("gemv_shapes"):
        chosen = (p.get("knobs") or {}).get("gemv") if p["status"] == "kept" else None
        routed = {(r["rows"], r["N"], r["K"], r["norm"]) for r in p["gemv_shapes"]} if chosen is True else \
            {tuple(s) for s in chosen or []}
        out += ["", "| projection shape (rows, N x K) | folded in | gemv (us) | cuBLAS (us) | routed in the recipe |",
                "| --- | --- | --- | --- | --- |"]
        gated = bool((p.get("knobs") or {}).get("gemv_gated")) and p["status"] == "kept"
        glu = bool((p.get("knobs") or {}).get("gemv_glu")) and p["status"] == "kept"
        for r in p["gemv_shapes"]:
            key = (r["rows"], r["N"], r["K"], r["norm"])
            us = f"{r['gemv_us']} ({_blocks(r['blocks'])})" if r.get("blocks") else r["gemv_us"]
            if r.get("gemv_pdl_us") is not None:
                us = f"{us}; with PDL {r['gemv_pdl_us']}"
            if r.get("glu"):        # the gate+up gemv writing act(gate) * up, against it then act's kernel
                out.append(f"| {r['rows']}, {r['N']} x {r['K']} | {'norm, ' if r['norm'] else ''}{r['glu']}(gate) * up "
                           f"epilogue | {us} | {r['cublas_us']} (our gemv, then the activation) "
                           f"| {'yes' if glu and key in routed else 'no'} |")
                continue
            if r.get("gated"):      # the down projection with act(gate) * up in its prologue, against act's kernel
                out.append(f"| {r['rows']}, {r['N']} x {r['K']} | {r['gated']}(gate) * up | {us} "
                           f"| {r['cublas_us']} | {'yes' if gated and key in routed else 'no'} |")
                continue
            out.append(f"| {r['rows']}, {r['N']} x {r['K']} | {'yes' if r['norm'] else 'no'} | {us} "
                       f"| {r['cublas_us']} | {'yes' if key in routed else 'no'} |")
        timed = [r for r in p["gemv_shapes"] if r.get("blocks_us")]
        if timed:
            most = max(len(r["blocks_us"]) for r in timed)
            out.append(f"- gemv (us), one row: at the fastest of {most} block choices a shape (rows of W a program, or a "
                       f"GLU's output columns, x K chunk, warps), then timed again beside cuBLAS (each choice's time: "
                       f"blocks_us in the phase JSON)")
    for n in p.get("kernels_notes", []):
        out.append(f"- {n}")
    if p.get("gemv_more"):      # phase 6: shapes its one-build PDL candidate routes on top of phase 5's
        more = p["gemv_more"]
        out.append(f"- more shapes to the GEMV offered with PDL: {', '.join(_shape(s) for s in more['shapes'])} "
                   f"({more['why']})")
    return out + profile_details(p)


def _shape(s):
    rows, n, k, norm = s
    return f"{rows}, {n} x {k}" + (" with its norm" if norm else "")


def _blocks(choice):
    """A one-row gemv's blocks as the table shows them: rows (a GLU: output columns) x K chunk, warps."""
    return "{} x {}, {} warps".format(*choice)


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
    split = [r for r in prof.get("launch_table") or []
             if sum(1 for o in prof["launch_table"] if o["name"] == r["name"]) > 1]
    if split:           # one kernel name at several grids (our Triton kernels carry no shape in their name)
        out += ["", "| kernel by grid | grid | registers | count | us a launch | idle before (us, median) |",
                "| --- | --- | --- | --- | --- | --- |"]
        out += [f"| `{_cell(r['name'])}` | {r['grid']} | {r.get('registers') or '-'} | {r['count']} | {r['us_each']} "
                f"| {r['gap_us']} |" for r in split[:8]]
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
        if "skipped" in h:
            said.append(f"skipped: {h['skipped']}")
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


