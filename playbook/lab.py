"""The custom-kernel lab's gates: build, correctness, parallelism, performance, profile, one change at a time.

    lab = Lab(device="auto")                       # preflight facts; TRITON_INTERPRET=1 on a CPU
    lab.build("v1", launch, [kernel])              # compiles; registers, spills, shared memory vs the limit
    lab.correctness("v1", launch, reference, small_inputs)        # max abs diff below the dtype's tolerance
    lab.parallelism("v1", programs)                # programs against the SM count: target >= 4x SMs
    lab.performance("v1", launch, reference, inputs)              # below 0.5x of the reference: stop, profile
    lab.profile("v2", "decode-split", 4096)        # Nsight Compute counters -> the decision tree
    lab.change("split-KV", launch, inputs)         # timed against the current best; >2% slower: reverted
    lab.summary()                                  # every gate and change, as a table

The gates follow seeds 002/003: build first (minutes lost to builds are the commonest waste), check
a small size before a large one, count programs against SMs before any micro-optimisation, profile
before guessing, and change one thing at a time with an automatic revert on a regression over 2%.
Gates that need a GPU or a profiler say so and move on.
"""
import os
import re
import shutil
import subprocess
import sys

import torch

REGRESSION = 0.02            # the source's auto-revert threshold
PARALLELISM_TARGET = 4       # programs per SM
PERF_FLOOR = 0.5             # below half the reference's speed at the small size: stop and profile
TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 2e-2, torch.float16: 5e-3}
NCU_METRICS = {"dram_pct": "dram__throughput.avg.pct_of_peak_sustained_elapsed",
               "occupancy_pct": "sm__warps_active.avg.pct_of_peak_sustained_active",
               "duration_us": "gpu__time_duration.sum",
               "bank_conflicts": "l1tex__data_bank_conflicts_pipe_lsu_mem_shared.sum"}


def within(got, want, dtype):
    """(ok, max abs diff): finite, and the max abs diff under the dtype's tolerance x max |reference|."""
    worst = float((got.float() - want.float()).abs().max()) if torch.isfinite(got).all() else float("nan")
    return worst == worst and worst <= TOLERANCE[dtype] * max(1.0, float(want.float().abs().max())), worst


class Lab:
    def __init__(self, device="auto", say=print):
        from .devices import resolve_device
        self.device = resolve_device(device)
        if self.device.type == "cpu":
            os.environ.setdefault("TRITON_INTERPRET", "1")      # before playbook/kernels/ imports triton
        self.say = say
        self.gpu = self.device.type == "cuda"
        self.sms = torch.cuda.get_device_properties(self.device).multi_processor_count if self.gpu else None
        self.gates, self.history, self.best = [], [], None

    # ---- 1. preflight ----------------------------------------------------------------------------------
    def preflight(self):
        from .preflight import PROFILERS
        from .runs import versions
        v = versions()
        tools = {n: shutil.which(n) for n in PROFILERS}
        name = torch.cuda.get_device_name(self.device) if self.gpu else "CPU (Triton interpreter)"
        self._gate("preflight", True, f"{name}; torch {v['torch']}, triton {v['triton']}; SMs {self.sms}; "
                   f"profilers: {', '.join(n for n, p in tools.items() if p) or 'none'}")
        return {"device": name, "sms": self.sms, "versions": v, "profilers": tools}

    # ---- 2. build validation ---------------------------------------------------------------------------
    def build(self, name, launch, kernels):
        """Run launch() once (compiling its kernels: Triton JIT functions) and report each one's resource use."""
        launch()
        if not self.gpu:
            return self._gate("build", True, f"{name}: runs in the Triton interpreter (no registers or shared "
                              "memory on a CPU: resource use needs a GPU)", name=name)
        limit = getattr(torch.cuda.get_device_properties(self.device), "shared_memory_per_block_optin", None)
        rows = []
        for fn in kernels:
            for compiled in _compiled(fn):
                if getattr(compiled, "n_regs", None) is None and hasattr(compiled, "_init_handles"):
                    compiled._init_handles()
                shared = getattr(compiled.metadata, "shared", None)
                rows.append({"kernel": fn.fn.__name__, "registers": getattr(compiled, "n_regs", None),
                             "spills": getattr(compiled, "n_spills", None), "shared_bytes": shared,
                             "shared_limit": limit})
        ok = all((r["spills"] or 0) == 0 and (r["shared_bytes"] or 0) <= (limit or float("inf")) for r in rows)
        text = "; ".join(f"{r['kernel']}: {r['registers']} registers, {r['spills']} spills, shared "
                         f"{r['shared_bytes']} of {r['shared_limit']} B" for r in rows) or "no compiled kernel found"
        return self._gate("build", ok, f"{name}: {text}", name=name, kernels=rows)

    # ---- 3. correctness --------------------------------------------------------------------------------
    def correctness(self, name, fn, reference, inputs):
        got = fn(*inputs)
        ok, worst = within(got, reference(*inputs), got.dtype)
        tol = TOLERANCE[got.dtype]
        return self._gate("correctness", ok, f"{name} at {_shape(inputs)}: max abs diff {worst:.3g} "
                          f"(tolerance {tol:g} x max |ref|)", name=name, max_abs_diff=worst)

    # ---- 4. parallelism --------------------------------------------------------------------------------
    def parallelism(self, name, programs):
        if not self.sms:
            return self._gate("parallelism", True, f"{name}: {programs} programs; no SMs on a CPU, the "
                              f"target ({PARALLELISM_TARGET}x the SM count) is checked on a GPU", name=name,
                              programs=programs)
        ratio = programs / self.sms
        ok = ratio >= PARALLELISM_TARGET
        why = "" if ok else (f": below the target, most SMs idle{' (fewer programs than SMs)' if ratio < 1 else ''}; "
                             "split the work across more programs before any micro-optimisation")
        return self._gate("parallelism", ok, f"{name}: {programs} programs on {self.sms} SMs = {ratio:.2f}x "
                          f"(target {PARALLELISM_TARGET}x){why}", name=name, programs=programs, per_sm=round(ratio, 2))

    # ---- 5. performance --------------------------------------------------------------------------------
    def time_us(self, fn, inputs):
        if not self.gpu:
            return None
        import triton.testing
        return 1e3 * triton.testing.do_bench(lambda: fn(*inputs), warmup=25, rep=100)

    def performance(self, name, fn, reference, inputs):
        us, ref_us = self.time_us(fn, inputs), self.time_us(reference, inputs)
        if us is None:
            return self._gate("performance", True, f"{name}: the interpreter's time is not a speed; timed on a GPU",
                              name=name)
        speed = ref_us / us
        ok = speed >= PERF_FLOOR
        return self._gate("performance", ok, f"{name} at {_shape(inputs)}: {us:.1f} us vs reference {ref_us:.1f} us "
                          f"= {speed:.2f}x its speed" + ("" if ok else f" (< {PERF_FLOOR}x: stop and profile)"),
                          name=name, us=round(us, 2), reference_us=round(ref_us, 2), speed=round(speed, 3))

    # ---- 6. profile ------------------------------------------------------------------------------------
    def profile(self, version, kernel_regex, kv_len, timeout=300):
        """Nsight Compute's counters for one launch of a version (run in a subprocess), and the decision."""
        ncu = shutil.which("ncu")
        if not (self.gpu and ncu):
            return self._gate("profile", True, "Nsight Compute not available here (" +
                              ("no GPU" if not self.gpu else "ncu not on PATH") + "): profile skipped")
        cmd = [ncu, "--csv", "--metrics", ",".join(NCU_METRICS.values()), "-k", f"regex:{kernel_regex}", "-c", "1",
               sys.executable, "-m", "playbook.lab", version, str(kv_len)]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        metrics = parse_ncu(done.stdout)
        if not metrics:
            why = (done.stdout + done.stderr).strip().splitlines()[-1:] or ["no output"]
            return self._gate("profile", True, f"ncu gave no counters ({why[0][:200]}): profile skipped")
        return self._gate("profile", True, f"{version} at KV {kv_len}: " + ", ".join(
            f"{k} {v:g}" for k, v in metrics.items()) + f" -> {decide(metrics)}", metrics=metrics, decision=decide(metrics))

    def sanitize(self, version, kv_len, timeout=300):
        tool = shutil.which("compute-sanitizer")
        if not (self.gpu and tool):
            return self._gate("sanitize", True, "compute-sanitizer not available here: skipped")
        done = subprocess.run([tool, "--tool", "memcheck", sys.executable, "-m", "playbook.lab", version, str(kv_len)],
                              capture_output=True, text=True, timeout=timeout)
        summary = next((line for line in done.stdout.splitlines() if "ERROR SUMMARY" in line), "no summary")
        return self._gate("sanitize", done.returncode == 0 and " 0 errors" in summary, f"{version}: {summary.strip()}")

    # ---- 7. one change at a time -----------------------------------------------------------------------
    def change(self, what, fn, inputs, reference=None):
        """Measure one change against the current best; keep it, or revert it when >2% slower or wrong."""
        if reference is not None and not self.correctness(what, fn, reference, inputs)["ok"]:
            entry = {"change": what, "us": None, "verdict": "reverted: wrong"}
        else:
            us = self.time_us(fn, inputs)
            entry = {"change": what, "us": None if us is None else round(us, 2)}
            if self.best is None:
                entry["verdict"] = "start"
            elif us is None:
                entry["verdict"] = "kept (not timed on a CPU)"
            else:
                gain = self.best["us"] / us - 1
                entry["vs_best"] = round(gain, 4)
                entry["verdict"] = ("reverted: slower by %.1f%% (> 2%%)" % (-gain * 100) if gain < -REGRESSION
                                    else "kept: %+.1f%%" % (gain * 100))
        self.history.append(entry)
        if entry["verdict"].startswith(("start", "kept")):
            self.best = dict(entry, fn=fn)
        self.say(f"change '{what}': {entry['verdict']}" + (f" ({entry['us']} us)" if entry["us"] else ""))
        return entry

    def summary(self):
        lines = ["| gate | ok | detail |", "| --- | --- | --- |"]
        lines += [f"| {g['gate']} | {'yes' if g['ok'] else 'NO'} | {g['detail']} |" for g in self.gates]
        lines += ["", "| change | us | verdict |", "| --- | --- | --- |"]
        lines += [f"| {h['change']} | {h['us'] if h['us'] is not None else '-'} | {h['verdict']} |" for h in self.history]
        return "\n".join(lines)

    def _gate(self, gate, ok, detail, **extra):
        g = {"gate": gate, "ok": bool(ok), "detail": detail, **extra}
        self.gates.append(g)
        self.say(f"[{'ok' if ok else 'STOP'}] {gate}: {detail}")
        return g


    def sweep(self, versions, kv_lens, dtype, reference=None):
        """Each version (and the reference) at each KV length: microseconds, programs, correct."""
        from playbook.kernels.reference import decode_attention
        rows = []
        for kv in kv_lens:
            x = decode_inputs(kv, self.device, dtype)
            want = decode_attention(*x)
            row = {"kv_len": kv}
            for name, (fn, programs) in versions.items():
                row[f"{name}_ok"] = within(fn(*x), want, dtype)[0]
                row[f"{name}_us"] = self.time_us(fn, x)
                row[f"{name}_programs"] = programs(*x[:2])
            if reference is not None:
                row["sdpa_us"] = self.time_us(reference, x)
            rows.append(row)
        return rows

    def results(self):
        return {"device": torch.cuda.get_device_name(self.device) if self.gpu else "cpu", "sms": self.sms,
                "gates": list(self.gates),
                "history": self.history}


def plot_sweep(rows, names):
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    kv = [r["kv_len"] for r in rows]
    for name in list(names) + (["sdpa"] if "sdpa_us" in rows[0] else []):
        ax.plot(kv, [r[f"{name}_us"] for r in rows], marker="o", label=name)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("KV length")
    ax.set_ylabel("us per call (log)")
    ax.set_title("decode attention, batch 1")
    ax.legend()
    fig.tight_layout()
    return fig


def decide(m):
    """The source's decision tree over Nsight Compute's counters, bandwidth and occupancy first.
    NOTE: bank conflicts come last: on the H200 the split kernel (2 KB of shared memory, used by
    Triton's reductions) reported 2.0M "conflicts" at 11% DRAM and 23% occupancy; the counter
    includes replays that no layout change removes, and leading with it sent the lab the wrong way."""
    if m.get("dram_pct", 0) >= 70:
        return "memory-bound near peak: read fewer bytes (a narrower dtype, no redundant loads); little left here"
    if m.get("occupancy_pct", 100) < 30:
        return "low achieved occupancy: more programs or fewer registers per program (smaller blocks, fewer warps)"
    if m.get("bank_conflicts", 0) > 0 and m.get("dram_pct", 0) >= 40:
        return "shared-memory bank conflicts at moderate bandwidth: pad or swizzle the shared-memory layout"
    return "neither DRAM nor occupancy is high: latency-bound; more parallelism (split the work) or more bytes in flight"


def parse_ncu(text):
    """{name: value} from `ncu --csv --metrics ...` output (the first launch's values)."""
    names = {v: k for k, v in NCU_METRICS.items()}
    out = {}
    for line in text.splitlines():
        cells = [c.strip('"') for c in re.findall(r'"[^"]*"', line)]
        for i, cell in enumerate(cells):
            if cell in names and names[cell] not in out and i + 2 < len(cells):
                try:
                    value = float(cells[-1].replace(",", ""))
                except ValueError:
                    continue
                unit = cells[-2] if len(cells) >= 2 else ""
                scale = {"nsecond": 1e-3, "ns": 1e-3, "msecond": 1e3, "ms": 1e3}.get(unit, 1.0)
                out[names[cell]] = value * scale if names[cell] == "duration_us" else value
    return out


def _shape(inputs):
    return " ".join("x".join(map(str, t.shape)) for t in inputs if isinstance(t, torch.Tensor))


def _compiled(fn):
    cache = getattr(fn, "device_caches", None) or getattr(fn, "cache", None)
    found = []
    for entry in (cache or {}).values():
        kernels = entry[0] if isinstance(entry, tuple) else entry
        found += list(kernels.values()) if isinstance(kernels, dict) else []
    return found


def decode_inputs(kv_len, device, dtype, heads=32, kv_heads=8, head_dim=128, seed=0):
    """Llama-3-8B's decode geometry at batch 1: q [1, 32, 128], k and v [1, 8, kv_len, 128]."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(1, heads, head_dim, generator=g)
    k = torch.randn(1, kv_heads, kv_len, head_dim, generator=g)
    v = torch.randn(1, kv_heads, kv_len, head_dim, generator=g)
    return tuple(t.to(device=device, dtype=dtype) for t in (q, k, v))


def sdpa(q, k, v):
    """The reference to beat: torch's SDPA with grouped-query attention, one query token."""
    out = torch.nn.functional.scaled_dot_product_attention(q[:, :, None], k, v, enable_gqa=True)
    return out[:, :, 0]


if __name__ == "__main__":          # one launch, for ncu and compute-sanitizer: python -m playbook.lab v1|split KV
    from playbook.kernels import decode_attention as da
    version, kv = sys.argv[1], int(sys.argv[2])
    x = decode_inputs(kv, torch.device("cuda"), torch.bfloat16)
    (da.decode_attention_v1 if version == "v1" else da.decode_attention_split)(*x)
    torch.cuda.synchronize()
