"""Phase 1 `cudagraph`: torch.compile(mode="default") for fusion, then a manual CUDA graph for launches.

At batch 1 the GPU finishes each small kernel before the CPU has launched the next: the step is bound
by launch overhead. A captured graph launches the whole step at once. Inductor's own graph modes are
off (`triton.cudagraphs=False`); the capture is ours (playbook/capture.py). Both compiled + graph and
eager + graph are tried, so a compiled capture that fails falls back with its error recorded.

A workload with a hot loop (pi0's denoise steps) is captured the source's way: the hot loop alone
first (Step A), then the whole step (Step B); each is a candidate, checked and timed. A workload that
names compile regions (step functions a loop calls again and again) is compiled region by region, so
its loop is not unrolled into one enormous graph.
"""

NUMBER = 1
NAME = "cudagraph"
WHAT = "torch.compile (mode default) plus a manual CUDA graph, to remove launch overhead"
KEEP_IF = "not_slower"


# The knob sets this phase may try, by the name a notebook's knobs_to_try (and its panel) uses.
CHOICES = {"compile + loop capture": "compile, then capture the hot loop alone (Step A; models with a hot loop)",
           "compile + whole capture": "compile, then capture the whole step in one CUDA graph (Step B)",
           "eager + capture": "capture the untouched eager step: the graph alone, no compiler",
           "compile only": "torch.compile without a graph (what a CPU runs)"}


def label(knobs):
    if not knobs.get("compile"):
        return "eager + capture"
    return {"loop": "compile + loop capture", True: "compile + whole capture"}.get(knobs.get("capture"), "compile only")


def candidates(ctx):
    wl = ctx.pipe.workload
    scope = "regions" if wl.regions else "model"
    compiled = {"compile": True, "mode": "default", "scope": scope}
    if wl.regions:
        ctx.info["compile_regions"] = list(wl.regions)
    if ctx.device.type != "cuda":
        return [dict(compiled, capture=False)]
    loop = [dict(compiled, capture="loop")] if wl.hot_loop else []
    return loop + [dict(compiled, capture=True), {"compile": False, "capture": True}]


def apply(pipe, knobs):
    pipe.compile = knobs["compile"]
    pipe.compile_scope = knobs.get("scope", "model")
    pipe.capture = knobs["capture"]
    if pipe.device.type != "cuda":
        pipe.notes.append("CPU: there is no CUDA graph to capture; this phase measures torch.compile alone")
    if pipe.vendor == "rocm":
        # The source's ROCm settings: memory planning recurses too deep there, and Dynamo's RNG
        # save/restore must be skipped while a stream captures. Unverified on hardware here.
        pipe.inductor["memory_planning"] = False
        pipe.rng_patch = True
        pipe.notes.append("ROCm: memory_planning off and the Dynamo RNG patch applied (unverified on hardware)")
