"""Phase 5's decode-projection rewrite: few-row Linears -> kernels.gemv, and each RMSNorm that feeds only
projections folded into their prologue.

    found = find_sites(model, args, kwargs)     # on one real call: what would be routed and folded, and why not
    table = time_shapes(found, device, dtype)   # GPU: each projection shape on kernels.gemv and on cuBLAS
    found = select(found, winners(table))       # only the shapes the kernel wins
    routed = route(model, found)                # in place

A decode step's projections read each weight once for one row of activations (or a few: pi0's 11 suffix
tokens a denoise step, a short prompt): a matrix-vector product bound by the weight's bytes. The rewrite is
found by data flow on one real call of the step, not by names:
- a Linear is routed when every call it got had at most MAX_ROWS rows (a Linear that also sees a long
  prompt, or a vision encoder's patches, keeps F.linear for those calls: it falls back by shape);
- an RMSNorm (recognised by a probe, kernel_swap.norm_flavour) is folded when every output it produced
  was read only by Linears, as their whole input, and those Linears never took an input from anywhere
  else. The norm then passes its input through, and each of those Linears computes the norm itself in
  its prologue (rstd * ((x * w) @ W.T)). A norm whose output is also read by anything else (a residual
  taken after the norm, a shape-changing view) is left, with the op that read it.
Before building, phase 5 times every distinct shape (rows, N, K, with the norm folded in or not) both ways,
inside CUDA graphs with the weights rotating past the L2 cache as a step reads them, and routes only the
shapes whose kernel is faster beyond noise: at 11 rows (pi0's denoise steps, H200) the kernel beat cuBLAS on
some projections and lost on others (benchmarks/results/gemv/).
Routed Linears keep their class and parameters (state_dict unchanged); a call with more than MAX_ROWS rows,
or any call when the kernel cannot run, goes through F.linear after the norm's own forward, so the folded
model is the same model at every shape.
"""
import types

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from .fusion import FusedPart
from .kernel_swap import norm_flavour

MAX_ROWS = 16         # kernels.gemv.MAX_ROWS, the rows its few-row kernel takes at once (a test checks they agree)


def _rows(x):
    return x.numel() // max(1, x.shape[-1])


def _owner(mod):
    """The module whose forward computes the projection: a Linear itself, or a fused group's FusedLinear
    for one of its parts (phase 4's QKV and gate+up)."""
    return mod.group if isinstance(mod, FusedPart) else mod


class _Reads(TorchDispatchMode):
    """Every op's tensor inputs, seen while not inside a Linear's forward (a Linear reading its input is the
    use a fold allows)."""

    def __init__(self, watched, inside):
        super().__init__()
        self.watched, self.inside, self.reads = watched, inside, {}

    def __torch_dispatch__(self, func, types_, args=(), kwargs=None):
        if not self.inside:
            for t in tree_leaves((args, kwargs or {})):
                if isinstance(t, torch.Tensor) and not isinstance(t, nn.Parameter):
                    path = self.watched.get(t.untyped_storage().data_ptr())
                    if path is not None:
                        self.reads.setdefault(path, set()).add(str(func.overloadpacket.__name__))
        return func(*args, **(kwargs or {}))


def find_sites(model, args=(), kwargs=None):
    """{"linears": [path], "folds": [{"norm", "eps", "offset", "into": [path]}], "left": [{"path", "why"}]}
    from one call of model(*args, **kwargs) (run here, under no_grad)."""
    kwargs = kwargs or {}
    linears = {p: m for p, m in model.named_modules() if isinstance(m, (nn.Linear, FusedPart))}
    norms = {}
    for path, mod in model.named_modules():
        flavour = norm_flavour(mod)
        if flavour:
            norms[path] = (mod, *flavour)
    outputs, watched, inputs, rows, inside = {}, {}, {}, {}, []
    keep = []                             # every output stays alive, so no storage is reused mid-call

    def norm_hook(path):
        def hook(mod, inp, out):
            if isinstance(out, torch.Tensor):
                outputs.setdefault(path, []).append(out)
                watched[out.untyped_storage().data_ptr()] = path
                keep.append(out)
        return hook

    def linear_pre(path):
        def hook(mod, inp):
            x = inp[0] if inp else None
            if isinstance(x, torch.Tensor):
                inputs.setdefault(path, []).append(x)
                rows.setdefault(path, []).append(_rows(x))
                keep.append(x)
            inside.append(path)
        return hook

    def linear_post(mod, inp, out):
        inside.pop()

    handles = [m.register_forward_hook(norm_hook(p)) for p, (m, _, _) in norms.items()]
    for p, m in linears.items():
        handles += [m.register_forward_pre_hook(linear_pre(p)), m.register_forward_hook(linear_post)]
    reads = _Reads(watched, inside)
    try:
        with torch.no_grad(), reads:
            model(*args, **kwargs)
    finally:
        for h in handles:
            h.remove()
    found = {"linears": [], "folds": [], "left": [], "shapes": {}}
    groups = {}                           # a fused group is routed whole, or not at all
    for path, mod in linears.items():
        groups.setdefault(id(_owner(mod)), []).append(path)
    for path, mod in linears.items():
        many = max((r for p in groups[id(_owner(mod))] for r in rows.get(p, [])), default=0)
        if not rows.get(path):
            found["left"].append({"path": path, "why": "not called by the step"})
        elif many > MAX_ROWS:
            found["left"].append({"path": path, "why": f"called with {many} rows (the GEMV takes 1 to {MAX_ROWS})"})
        else:
            found["linears"].append(path)
            w = _owner(mod).weight
            found["shapes"][path] = [max(1, many), w.shape[0], w.shape[1]]
    routed = set(found["linears"])
    found["gated"] = _gated_sites(model, routed)
    found["glu"] = _glu_sites(model, routed)
    for path, (mod, eps, offset) in norms.items():
        outs = outputs.get(path) or []
        if not outs:
            found["left"].append({"path": path, "why": "norm not called by the step"})
            continue
        if path in reads.reads:
            found["left"].append({"path": path, "why": "its output is also read by " + ", ".join(sorted(reads.reads[path]))})
            continue
        ptrs = {o.untyped_storage().data_ptr(): o for o in outs}
        into = sorted(p for p, xs in inputs.items()
                      if any(x.untyped_storage().data_ptr() in ptrs for x in xs))
        why = _why_not_fold(into, inputs, ptrs, routed)
        if why:
            found["left"].append({"path": path, "why": why})
        else:
            found["folds"].append({"norm": path, "eps": eps, "offset": offset, "into": into})
    return found


def _gated_sites(model, routed):
    """[{"mlp", "act", "down"}]: gated MLPs (down(act(gate(x)) * up(x)), recognised by behaviour) whose down
    projection is routed: its gemv can compute act(gate) * up as it loads its input."""
    out = []
    for path, mod in model.named_modules():
        down = getattr(mod, "down_proj", None)
        down_path = f"{path}.down_proj" if path else "down_proj"
        if type(down) is not nn.Linear or down_path not in routed:
            continue
        act = _activation(mod)
        if act:
            out.append({"mlp": path, "act": act, "down": down_path})
    return out


def _glu_sites(model, routed):
    """[{mlp, act, gate_up}]: the gated MLPs whose gate and up projections are the two equal halves of one fused
    projection (phase 4's gate+up, gate first) that is routed: its gemv can write act(gate) * up itself (a GLU
    epilogue), and the activation's kernel goes. gate_up: the gate part's path (its shape key)."""
    out = []
    for path, mod in model.named_modules():
        gate, up = getattr(mod, "gate_proj", None), getattr(mod, "up_proj", None)
        pre = f"{path}." if path else ""
        if not (isinstance(gate, FusedPart) and isinstance(up, FusedPart) and gate.group is up.group
                and f"{pre}gate_proj" in routed and isinstance(getattr(mod, "down_proj", None), nn.Module)):
            continue
        group = gate.group
        if len(group.sizes) != 2 or gate.offset != 0 or up.offset != gate.out_features \
                or up.out_features != gate.out_features:
            continue
        act = _activation(mod)
        if act:
            out.append({"mlp": path, "act": act, "gate_up": f"{pre}gate_proj"})
    return out


def _activation(mlp):
    """kernel_swap.mlp_activation of a module, or None where the probe cannot call it as down(act(gate(x)) * up(x))."""
    from .kernel_swap import mlp_activation
    try:
        return mlp_activation(mlp)
    except Exception:  # noqa: BLE001  (not a gated MLP as the folds need one)
        return None


def shape_keys(found):
    """{path: (rows, N, K, norm)} of found's routed projections: what time_shapes times and select keeps. A
    fused group's parts share their group's key (it is one projection)."""
    folded = {p for f in found["folds"] for p in f["into"]}
    return {p: (*found["shapes"][p], p in folded) for p in found["linears"]}


# NOTE: a shape with the norm folded in is timed against the norm's kernel then cuBLAS (kernels.rms_norm, then
# F.linear): the pair the fold replaces. From 2026-12-03 to 12-04 it was timed against cuBLAS alone, on a misreading
# of benchmarks/results/pi0-fold/: there the step's GEMV time went 2.16 -> 6.13 ms for 380 -> 740 calls with pi0's
# 11-row q/k/v and gate+up routed with their norms, and the cause was taken to be those two shapes. It was not:
# the same candidate ran the gated down projection (180 calls at 16.4 us against 5.7 plain, +1.92 ms; measured
# alone in benchmarks/results/pi0-attention/), and what is left for q/k/v and gate+up, 2.08 ms for 360 calls, is
# what cuBLAS took for them in the recipe before it (0.87 + 1.18 ms), with their norms' kernels (0.99 -> 0.50 ms) gone. Against cuBLAS
# alone they lost by 0.2-0.7 us, stayed on cuBLAS with their norms, and stayed outside phase 6's PDL chain.
# (Routed on 2026-12-01, before the residual fold, they had cost 18.10 -> 18.55 ms: the add before each norm then
# stayed a kernel of its own. Phase 5 now turns the residual fold on wherever a norm is folded.)
# NOTE: the gated row times each side after the cuBLAS gate+up projection that writes the down projection's input
# (one gate+up weight, [hidden, 2 x K], L2-resident; both sides pay it), where it had timed the down projection
# alone on a ready input. Alone it had won in an earlier table (2026-12-02), and inside pi0 full's step the down
# projection built with it took 16.4 us a call where the plain one took 5.7 (180 calls, 2.95 against 1.03 ms; the
# recipe with phase 5's folds 17.99 ms against 17.10 without them: H200, 2026-12-03, torch 2.11,
# benchmarks/results/pi0-attention/). Measured both ways that day (gated-pair.json there): 16.72 against 9.47 us
# alone, 22.37 against 15.21 after gate+up; the gated fold is not offered at pi0's shape either way. Nor is it the
# prologue's shared memory (114 KB a program at three pipeline stages, one program an SM): with two stages (82 KB)
# it took 17.26 against 16.37 us (benchmarks/results/glu/, 2026-12-04), so why it is slow is still open. The GLU
# epilogue (act(gate) * up written by the gate+up projection, the row with "glu") goes the other way round; at
# its blocks since that sweep it took 7.91 against 9.29 us alone, and 7.18 us a call inside pi0 full's step, where
# gate+up had taken 7.22 and the activation's kernel 1.36 (H200, 2026-12-04, benchmarks/results/pi0-full/).
ROTATE_BYTES = 256 * 2 ** 20     # weight copies a timed graph rotates over: several times an H100/H200's L2
CALLS = 20                       # calls of one shape in one timed graph
# NOTE: the one-row kernel's blocks, chosen per shape by timing. One fixed choice (two rows of W a program, K in
# chunks of 1024) was within 7% of the best of a 60-choice sweep on llama 1b's plain shapes (benchmarks/results/
# gemv/, 2026-11-23), but a norm folded in changes the balance: each program reads x and the norm's weight again
# (from L2) for its two rows, as many bytes as its rows of W, and llama's 16384 x 2048 gate+up then took 21.18 us
# with the norm folded against 20.59 for the norm's kernel then cuBLAS (H200, 2026-12-04, at 17.77 plain in that
# sweep). With more rows a program, x is read once for more of W. So phase 5 times each one-row shape at these
# choices (block_n: rows of W a program, or output columns for a GLU, whose program reads as many rows of each
# half; block_k; warps), keeps the fastest, then times it against cuBLAS again in a graph of its own, so that the best
# of several noisy timings is not what is compared. A choice that leaves fewer programs than SMs is not timed.
# A weight under TUNE_BYTES (pi0's 1024 x 32 time projection) is launch-bound: its blocks are not worth the builds.
ONE_ROW_BLOCKS = ((1, 1024, 4), (2, 1024, 4), (4, 1024, 4), (4, 1024, 8), (8, 512, 8))
GLU_ONE_ROW_BLOCKS = ((1, 1024, 4), (2, 1024, 4), (2, 1024, 8), (4, 512, 8))
TUNE_BYTES = 4 * 2 ** 20


def block_choices(rows, n, k, device, glu="", itemsize=2):
    """[(block_n, block_k, num_warps)] that phase 5 times kernels.gemv's one-row kernel at for a projection of
    N x K, the kernel's default first (one_row_choices); [] for a few-row shape (its own blocks,
    kernels.gemv.rows_blocks, were chosen by a sweep), a weight under TUNE_BYTES, or off a GPU."""
    from playbook.kernels._triton import sm_count
    device = torch.device(device)
    if rows != 1 or device.type != "cuda" or n * k * itemsize < TUNE_BYTES:
        return []
    return one_row_choices(n, k, sm_count(device), glu)


def one_row_choices(n, k, sms, glu=""):
    """The default blocks of the one-row kernel for N x K on `sms` SMs (kernels.gemv.gpu_blocks; a GLU's
    program takes half as many output columns, so as many rows of W), then each of ONE_ROW_BLOCKS (a GLU:
    GLU_ONE_ROW_BLOCKS) that still gives every SM a program, K chunks no longer than K's next power of two."""
    from playbook.kernels._triton import next_pow2
    from playbook.kernels.gemv import gpu_blocks
    n_out = n // 2 if glu else n
    block_n, block_k = gpu_blocks(n, k, sms)
    out = [(max(1, block_n // 2) if glu else block_n, block_k, 4)]     # what gemv() takes by default
    for block_n, block_k, warps in GLU_ONE_ROW_BLOCKS if glu else ONE_ROW_BLOCKS:
        choice = (block_n, min(block_k, next_pow2(k)), warps)
        if choice not in out and -(-n_out // block_n) >= sms:
            out.append(choice)
    return out


def block_kw(choice):
    """gemv()'s keyword arguments for a (block_n, block_k, num_warps) choice; {} for None (its defaults)."""
    return {} if choice is None else dict(zip(("block_n", "block_k", "num_warps"), map(int, choice)))


def _blocks_name(choice):
    return "{}x{}, {} warps".format(*choice)


def time_shapes(found, device, dtype, iters=15):
    """[{rows, N, K, norm, gemv_us, cublas_us}] for each distinct shape of found's projections: kernels.gemv
    (with the norm folded in where a fold would apply) against F.linear (cuBLAS; after the norm's own kernel,
    kernels.rms_norm, where the gemv folds it in: the pair the fold replaces), and for each gated MLP's down
    projection the gemv with act(gate) * up in its prologue against the activation's kernel then cuBLAS (a row
    with "gated", each side after the gate+up projection that writes its input: see the NOTE below), and for each
    fused gate+up of a gated MLP the gemv writing act(gate) * up against the same gemv then the activation's
    kernel (a row with "glu"); each as CALLS back-to-back calls in one CUDA graph over weight copies that rotate
    past the L2, replays timed side by side. A one-row shape's gemv is first timed at each of block_choices
    (the row's "blocks_us"), and the fastest ("blocks") is the one timed against the other side. Where the GPU
    has PDL, a plain or norm row's gemv is timed with it too, beside them ("gemv_pdl_us"). GPU only."""
    from ..quiet import quiet
    with quiet():                # the kernels started ahead wait once for the whole table
        table = [_time_shape(*key, device, dtype, iters) for key in sorted(set(shape_keys(found).values()))]
        table += [_time_shape(*key, device, dtype, iters, glu=act) for key, act in sorted(glu_keys(found))]
        return table + [_time_shape(*key, device, dtype, iters, act=act) for key, act in sorted(gated_keys(found))]


def glu_keys(found):
    """{((rows, N, K, norm), act)}: the fused gate+up projections of found's GLU sites, as time_shapes times them
    (the gemv writing act(gate) * up against the same gemv then the activation's kernel)."""
    keys = shape_keys(found)
    return {(keys[g["gate_up"]], g["act"]) for g in found.get("glu", []) if g["gate_up"] in keys}


def gated_keys(found):
    """{((rows, N, K, False), act)}: the down projections of found's gated MLPs, as time_shapes times them (the
    gemv with act(gate) * up in its prologue against the activation's kernel then cuBLAS)."""
    keys = shape_keys(found)
    return {(keys[g["down"]], g["act"]) for g in found.get("gated", []) if g["down"] in keys}


def _time_shape(rows, n, k, norm, device, dtype, iters, act="", glu=""):
    from playbook.kernels._triton import pdl_here
    from playbook.kernels.gemv import gemv

    from .. import bench
    copies = max(2, min(CALLS, -(-ROTATE_BYTES // (n * k * dtype.itemsize))))
    g = torch.Generator(device=device).manual_seed(0)
    ws = [torch.randn(n, k, device=device, dtype=dtype, generator=g) * k ** -0.5 for _ in range(copies)]
    x = torch.randn(rows, k, device=device, dtype=dtype, generator=g)
    nw = torch.rand(k, device=device, dtype=dtype, generator=g) + 0.5 if norm else None
    if act:         # a gated MLP's down projection, after the fused gate+up projection that writes its input
        from playbook.kernels.activations import act_and_mul
        h = torch.randn(rows, n, device=device, dtype=dtype, generator=g)
        w_gate_up = torch.randn(2 * k, n, device=device, dtype=dtype, generator=g) * n ** -0.5

        def ours(w, **b):
            gate, up = F.linear(h, w_gate_up).split(k, dim=-1)
            return gemv(gate, w, up=up, act=act, **b)

        def other(w):
            gate, up = F.linear(h, w_gate_up).split(k, dim=-1)
            return F.linear(act_and_mul(gate, up, act), w)
    elif glu:       # the GLU epilogue against the same projection (as phase 5 would route it) then the activation
        from playbook.kernels.activations import act_and_mul
        kw = {"norm_weight": nw} if norm else {}

        def ours(w, **b):
            return gemv(x, w, glu=glu, **kw, **b)

        def other(w):
            gate, up = gemv(x, w, **kw).chunk(2, dim=-1)
            return act_and_mul(gate, up, glu)
    elif norm:      # the pair the fold replaces: the norm's kernel, then cuBLAS (the NOTE above)
        from playbook.kernels.norms import rms_norm

        def ours(w, **b):
            return gemv(x, w, norm_weight=nw, **b)

        def other(w):
            return F.linear(rms_norm(x, nw), w)
    else:
        def ours(w, **b):
            return gemv(x, w, **b)

        def other(w):
            return F.linear(x, w)

    def timed(calls):
        return bench.graphs_side_by_side({name: lambda c=c: [c(ws[i % copies]) for i in range(CALLS)]   # the next W
                                          for name, c in calls.items()}, CALLS, device, iters=iters)
    row = {"rows": rows, "N": n, "K": k, "norm": norm}
    best = {}
    choices = block_choices(rows, n, k, device, glu, dtype.itemsize)
    if len(choices) > 1:        # the fastest blocks first, then only they against the other side (the NOTE above)
        try:
            by = timed({_blocks_name(c): (lambda w, c=c: ours(w, **block_kw(c))) for c in choices})
        except Exception as e:  # noqa: BLE001  (a choice Triton cannot build here: the defaults, and why)
            row["blocks_error"] = f"{type(e).__name__}: {str(e).strip()[:160]}"
        else:
            choice = min(choices, key=lambda c: by[_blocks_name(c)])
            best = block_kw(choice)
            row.update(blocks=list(choice), blocks_us=by)
    sides = {"gemv": lambda w: ours(w, **best), "cublas": other}
    if not (act or glu) and pdl_here(device):   # what phase 6's PDL would make of it (see pdl_winners)
        sides["gemv_pdl"] = lambda w: ours(w, pdl=True, **best)
    us = timed(sides)
    row.update(gemv_us=us["gemv"], cublas_us=us["cublas"])
    if "gemv_pdl" in sides:
        row["gemv_pdl_us"] = us["gemv_pdl"]
    return {**row, "gated": act} if act else {**row, "glu": glu} if glu else row


def _wins(r, margin, side="gemv_us"):
    return r[side] < r["cublas_us"] * (1 - margin)


def winners(table, margin=0.02):
    """The shapes of time_shapes' table where the kernel is faster than cuBLAS by more than margin, as the
    [rows, N, K, norm] lists phase 5 records in its knobs (the gated rows are gated_wins')."""
    return [[r["rows"], r["N"], r["K"], r["norm"]] for r in table
            if not r.get("gated") and not r.get("glu") and _wins(r, margin)]


# NOTE: a shape's gemv is also timed with PDL where the GPU has it (the row's gemv_pdl_us): CALLS back-to-back calls,
# each reading its first chunk of W while the one before finishes, as phase 6's PDL has every routed projection do
# after the kernel before it in the step. cuBLAS's kernels cannot. Phase 5 routes by the plain timing (the recipe it
# builds has no PDL), and phase 6 offers PDL with the shapes that only PDL made win routed too (pdl_winners): on
# llama 1b (H200, 2026-12-04) gate+up with its norm lost by 3% (21.18 against 20.59 us) and stayed on cuBLAS, with
# its norm a kernel of its own, outside the PDL chain. Not yet timed on a GPU.
def pdl_winners(table, routed=(), margin=0.02):
    """The shapes (as winners gives them) that time_shapes' table found faster than cuBLAS by more than margin
    with PDL only: not among `routed` (the recipe's shapes), and with a gemv_pdl_us timing."""
    have = {tuple(s) for s in routed} | {tuple(s) for s in winners(table, margin)}
    return [[r["rows"], r["N"], r["K"], r["norm"]] for r in table
            if not r.get("gated") and not r.get("glu") and "gemv_pdl_us" in r and _wins(r, margin, "gemv_pdl_us")
            and (r["rows"], r["N"], r["K"], r["norm"]) not in have]


def gated_wins(table, margin=0.02):
    """Whether the gated prologue won at every gated down projection time_shapes timed (and it timed one)."""
    gated = [r for r in table if r.get("gated")]
    return bool(gated) and all(_wins(r, margin) for r in gated)


def glu_wins(table, margin=0.02):
    """Whether the GLU epilogue won at every gate+up shape time_shapes timed it at (and it timed one). Its
    "cublas_us" side is the same gemv without the epilogue, then the activation's kernel."""
    rows = [r for r in table if r.get("glu")]
    return bool(rows) and all(_wins(r, margin) for r in rows)


def tuned_blocks(table):
    """[{"shape": [rows, N, K, norm], "variant": "" | "glu" | "gated", "blocks": [block_n, block_k, num_warps]}]: the
    blocks time_shapes chose for each one-row shape it timed at several (phase 5's gemv_blocks knob; route()
    takes it)."""
    return [{"shape": [r["rows"], r["N"], r["K"], r["norm"]], "variant": _variant(r), "blocks": list(r["blocks"])}
            for r in table if r.get("blocks")]


def _variant(r):
    return "glu" if r.get("glu") else "gated" if r.get("gated") else ""


def select(found, shapes):
    """found with only the projections whose shape is in shapes (time_shapes' winners; True: all of them),
    and only the folds whose projections all stay routed."""
    if shapes is True:
        return found
    keep = {tuple(s) for s in shapes}
    keys = shape_keys(found)
    linears = [p for p in found["linears"] if keys[p] in keep]
    kept = set(linears)
    left = found["left"] + [{"path": p, "why": "cuBLAS faster at its shape " + "x".join(map(str, keys[p][:3]))}
                            for p in found["linears"] if p not in kept]
    folds = []
    for f in found["folds"]:
        if all(p in kept for p in f["into"]):
            folds.append(f)
        else:
            left.append({"path": f["norm"], "why": "its projections are left to cuBLAS"})
    gated = [g for g in found.get("gated", []) if g["down"] in kept]
    glu = [g for g in found.get("glu", []) if g["gate_up"] in kept]
    return {**found, "linears": linears, "folds": folds, "left": left, "gated": gated, "glu": glu}


def _why_not_fold(into, inputs, ptrs, routed):
    if not into:
        return "its output reaches no Linear"
    for p in into:
        if p not in routed:
            return f"{p} is not routed (more than {MAX_ROWS} rows)"
        for x in inputs[p]:
            out = ptrs.get(x.untyped_storage().data_ptr())
            if out is None:
                return f"{p} also takes an input from elsewhere"
            if x.data_ptr() != out.data_ptr() or x.shape != out.shape:
                return f"{p} takes a part or a view of the norm's output"
    return None


def _kernel_takes(x):
    """Whether a call with input x goes through kernels.gemv: few rows, on a GPU (or in Triton's interpreter)."""
    return _rows(x) <= MAX_ROWS and (x.is_cuda or _interpreted())


def _blocks_for(x, choice):
    """gemv()'s block arguments for a call with input x: the choice phase 5 timed, for a one-row call only."""
    return block_kw(choice) if _rows(x) == 1 else {}


def _routed_gemv(lin, x, glu="", blocks=None):
    """kernels.gemv for a routed projection lin (a Linear or a fused group): its folded norm, its PDL setting, its
    blocks (a GLU's: blocks, the MLP's)."""
    from playbook.kernels.gemv import gemv
    norm = lin.__dict__.get("_playbook_norm")
    kw = {} if norm is None else {"norm_weight": norm[0].weight, "eps": norm[1], "offset": norm[2]}
    kw.update(_blocks_for(x, blocks if glu else lin.__dict__.get("_playbook_blocks")))
    return gemv(x, lin.weight, lin.bias, pdl=getattr(lin, "_playbook_pdl", False), glu=glu, **kw)


def _linear_forward(self, x):
    if _kernel_takes(x):
        return _routed_gemv(self, x)
    norm = self._playbook_norm
    if norm is not None:
        x = norm[0]._playbook_forward(x)
    return F.linear(x, self.weight, self.bias)


def _gated_forward(self, x):
    """A gated MLP whose down projection's gemv computes act(gate) * up from the two projections' outputs (two
    halves of one fused gate+up output: read in place)."""
    gate, up = self.gate_proj(x), self.up_proj(x)
    down = self.down_proj
    if _kernel_takes(gate):
        from playbook.kernels.gemv import gemv
        return gemv(gate, down.weight, down.bias, up=up, act=self._playbook_act,
                    pdl=getattr(down, "_playbook_pdl", False), **_blocks_for(gate, self._playbook_gated_blocks))
    from .kernel_swap import ACTIVATIONS
    return down(ACTIVATIONS[self._playbook_act](gate) * up)


def _glu_forward(self, x):
    """A gated MLP whose fused gate+up projection's gemv writes act(gate) * up (no activation kernel), for its
    down projection to read."""
    act = self._playbook_glu
    if _kernel_takes(x):
        return self.down_proj(_routed_gemv(self.gate_proj.group, x, glu=act, blocks=self._playbook_glu_blocks))
    from .kernel_swap import ACTIVATIONS
    return self.down_proj(ACTIVATIONS[act](self.gate_proj(x)) * self.up_proj(x))


def _passthrough(self, x, *args, **kwargs):
    return x


def _interpreted():
    from playbook.kernels._triton import INTERPRET
    return INTERPRET


def route(model, found, pdl=False, gated=False, glu=False, blocks=None):
    """Route found["linears"] to kernels.gemv and fold found["folds"]; returns counts. pdl: launch them with
    Programmatic Dependent Launch where the GPU has it (kernels.gemv.pdl_here; ignored elsewhere). gated: each
    of found["gated"]'s MLPs hands act(gate) * up to its down projection's gemv (no activation kernel). glu:
    each of found["glu"]'s MLPs has its fused gate+up gemv write act(gate) * up (no activation kernel either;
    an MLP that has it does not take the gated prologue too). blocks: tuned_blocks' list, the one-row kernel's
    blocks by shape and variant (a shape not in it takes the kernel's defaults)."""
    mods = dict(model.named_modules())
    keys = shape_keys(found)
    tuned = {(tuple(b["shape"]), b["variant"]): tuple(b["blocks"]) for b in blocks or []}
    glu_sites = found.get("glu", []) if glu else []
    glu_mlps = {site["mlp"] for site in glu_sites}
    gated_sites = [site for site in found.get("gated", []) if site["mlp"] not in glu_mlps] if gated else []
    for site in glu_sites:
        mlp = mods[site["mlp"]]
        mlp._playbook_glu = site["act"]
        mlp._playbook_glu_blocks = tuned.get((keys.get(site["gate_up"]), "glu"))
        mlp.forward = types.MethodType(_glu_forward, mlp)
    for site in gated_sites:
        mlp = mods[site["mlp"]]
        mlp._playbook_act = site["act"]
        mlp._playbook_gated_blocks = tuned.get((keys.get(site["down"]), "gated"))
        mlp.forward = types.MethodType(_gated_forward, mlp)
    for path in found["linears"]:
        lin = _owner(mods[path])
        lin._playbook_norm = None
        lin._playbook_pdl = bool(pdl)
        lin._playbook_blocks = tuned.get((keys[path], ""))
        lin.forward = types.MethodType(_linear_forward, lin)
    for fold in found["folds"]:
        norm = mods[fold["norm"]]
        norm._playbook_forward = norm.forward
        norm.forward = types.MethodType(_passthrough, norm)
        for path in fold["into"]:
            _owner(mods[path])._playbook_norm = (norm, fold["eps"], fold["offset"])
    return {"linears": len(found["linears"]), "norms_folded": len(found["folds"]),
            "gated": len(gated_sites), "glu": len(glu_sites), "left": len(found["left"])}


def unroute(model):
    """Undo route(): every routed projection back to its class's forward (F.linear, which Inductor compiles
    and tunes) and every folded norm back to its own forward, and forgets the knobs phase 5 routed it by.
    Returns how many projections it gave back."""
    model.__dict__.pop("_playbook_gemv_knobs", None)
    given = 0
    for mod in model.modules():
        for attr, blocks in (("_playbook_act", "_playbook_gated_blocks"), ("_playbook_glu", "_playbook_glu_blocks")):
            if attr in mod.__dict__:
                del mod.__dict__[attr]
                mod.__dict__.pop(blocks, None)
                mod.__dict__.pop("forward", None)
        if "_playbook_norm" in mod.__dict__:
            del mod._playbook_norm
            mod.__dict__.pop("_playbook_pdl", None)
            mod.__dict__.pop("_playbook_blocks", None)
            mod.__dict__.pop("forward", None)
            given += 1
        if "_playbook_forward" in mod.__dict__:
            own = mod.__dict__.pop("_playbook_forward")
            if getattr(own, "__func__", None) is type(mod).forward:
                mod.__dict__.pop("forward", None)          # its class's forward again, as before route()
            else:
                mod.forward = own                          # a forward another rewrite had set on it
    return given
