"""Phase 2's rewrite: attention through F.scaled_dot_product_attention, and the SDPA backend by measurement.

    hf = route_hf(model)                 # Hugging Face models: their attention-implementation switch
    sites = rewrite_eager(model)         # eager matmul -> (scale) -> (mask) -> softmax -> matmul, by FX
    table = measure_backends(model, args, kwargs, device)   # flash / efficient / cudnn / math, timed

The eager rewrite traces each module whose forward calls softmax (children kept as leaves), finds the
matmul-softmax-matmul chain and replaces it with one SDPA call that carries the model's own mask and
scale: a boolean `masked_fill(~m, -inf)` becomes attn_mask=m, an additive mask is passed as is, and the
scale is explicit (1.0 when the model does not scale), because SDPA's defaults would differ. It never
uses `is_causal=True`: with a KV cache (query length != key length) that flag is top-left aligned in
PyTorch and wrong for decode.
"""
import inspect
import math
import operator
import sys
import types

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

BACKENDS = {"flash": "FLASH_ATTENTION", "efficient": "EFFICIENT_ATTENTION", "cudnn": "CUDNN_ATTENTION",
            "math": "MATH"}


def backend_enum(name):
    return getattr(SDPBackend, BACKENDS[name])


def backends_here(device):
    """SDPA backends worth trying on this device (CPU has flash and math); on ROCm with amd-aiter, "aiter"
    (its flash attention for the calls it can take, SDPA for the rest; unverified on hardware here)."""
    from .aiter_ops import flash_available
    names = [n for n in BACKENDS if hasattr(SDPBackend, BACKENDS[n])]
    if device.type != "cuda":
        return [n for n in names if n in ("flash", "math")]
    return names + (["aiter"] if torch.version.hip and flash_available() else [])


def sdpa_context(name, fallback=False):
    """The context manager that forces one backend (nullcontext-like for None); "aiter" routes SDPA calls
    to aiter's flash attention where it applies (rewrites/aiter_ops.py). fallback=True puts the backend
    first and keeps the others after it, so a call it cannot take (an explicit mask for flash, which a
    compiled Hugging Face model can pass where its eager twin passed none) runs on the next one instead
    of failing: what a recipe uses. The probe of the backend table uses the strict form."""
    if name == "aiter":
        from .aiter_ops import AiterSDPA
        return AiterSDPA()
    every = list(SDPBackend.__members__.values())
    if not name:
        return sdpa_kernel(every)
    if not fallback:
        return sdpa_kernel([backend_enum(name)])
    order = [backend_enum(name)] + [b for b in every if b != backend_enum(name) and b != SDPBackend.ERROR]
    if "set_priority" in inspect.signature(sdpa_kernel).parameters:     # torch >= 2.6: the order is kept
        return sdpa_kernel(order, set_priority=True)
    return sdpa_kernel(order)


def backend_cache_key(name):
    """An Inductor post-grad pass that changes nothing and whose uuid names the forced SDPA backend.
    Inductor bakes the backend chosen while tracing into the graph, but its FX-graph cache key does not
    include that choice: on pi0 full a forced candidate "compiled" in 0.08 s and ran torch's own pick
    (cuDNN). A custom pass's uuid is part of the key, so graphs traced under different backends are
    cached apart and the cache stays on for the rest of the recipe."""
    from torch._inductor.custom_graph_pass import CustomGraphPass

    class BackendKey(CustomGraphPass):
        def __call__(self, graph):
            return None

        def uuid(self):
            return f"playbook-sdpa-backend-{name}"
    return BackendKey()


# ---- Hugging Face models: the attention-implementation switch -------------------------------------------

def hf_models(model):
    """Top-most Hugging Face PreTrainedModel instances inside model (model itself included). A model can hold
    one only once transformers has defined the class, so it is not imported here: that import alone took
    2.5 s of a tiny CPU phase's build, in every phase from attention on."""
    modeling = sys.modules.get("transformers.modeling_utils")
    if modeling is None:
        return []
    PreTrainedModel = modeling.PreTrainedModel
    found = []
    for path, m in model.named_modules():
        if isinstance(m, PreTrainedModel) and not any(path.startswith(p + ".") or p == "" for p, _ in found):
            found.append((path, m))
    return found


def set_attn_implementation(m, name):
    """An HF model's attention implementation, through its own setter where it has one, else on its config
    and every sub-config (older transformers, or a setter that checks a fixed list of names)."""
    if hasattr(m, "set_attn_implementation"):
        try:
            m.set_attn_implementation(name)
            return
        except (ValueError, KeyError):
            pass
    for cfg in [m.config] + [getattr(m.config, k) for k in vars(m.config)
                             if hasattr(getattr(m.config, k), "_attn_implementation")]:
        cfg._attn_implementation = name


def sdpa_refusal(m):
    """Why transformers will not run this HF model's attention through SDPA, or None: its class says it has no
    SDPA path (Gemma 2, whose logits are soft-capped), or a config of it soft-caps the attention logits, which
    SDPA cannot do (transformers' sdpa_attention_forward raises on a softcap)."""
    if getattr(type(m), "_supports_sdpa", None) is False:
        return f"{type(m).__name__} has no SDPA attention in transformers (its class sets _supports_sdpa = False)"
    for cfg in [m.config] + [v for v in vars(m.config).values() if hasattr(v, "_attn_implementation")]:
        cap = getattr(cfg, "attn_logit_softcapping", None)
        if cap:
            return f"its attention soft-caps the logits (attn_logit_softcapping={cap:g}), which SDPA cannot do"
    return None


def route_hf(model, dry_run=False, only=None):
    """Switch every HF model inside (those at the paths in `only`, if given) to "sdpa"; returns [{path, was,
    now}], and `why` where a model stays as it was because SDPA cannot take it (sdpa_refusal). dry_run: report
    only."""
    out = []
    for path, m in hf_models(model):
        if only is not None and path not in only:
            continue
        was = m.config._attn_implementation
        why = sdpa_refusal(m) if was != "sdpa" else None
        if why:
            out.append({"path": path, "was": was, "now": was, "why": why})
            continue
        now = was
        if was != "sdpa" and not dry_run:
            set_attn_implementation(m, "sdpa")
            now = m.config._attn_implementation
        out.append({"path": path, "was": was, "now": "sdpa" if dry_run else now})
    return out


# ---- eager attention written out: an FX rewrite ---------------------------------------------------------

class _LeafTracer(fx.Tracer):
    """Traces one module's own forward: children stay calls, and buffers become graph inputs (FX would
    otherwise run `self.k_cache.repeat_interleave(...)` at trace time and freeze its value)."""

    def is_leaf_module(self, m, qualname):
        return True

    def getattr(self, attr, attr_val, parameter_proxy_cache):
        if isinstance(attr_val, torch.Tensor) and not isinstance(attr_val, nn.Parameter):
            for name, buf in self.root.named_buffers():
                if attr_val is buf:
                    if name not in parameter_proxy_cache:
                        parameter_proxy_cache[name] = self.create_proxy("get_attr", name, (), {})
                    return parameter_proxy_cache[name]
        return super().getattr(attr, attr_val, parameter_proxy_cache)


def _frozen_constants(graph):
    """Tensors FX computed at trace time from real data: a rewrite of such a graph would replay stale values."""
    return [n.target for n in graph.nodes if n.op == "get_attr" and str(n.target).startswith("_tensor_constant")]


def _is(node, *targets):
    if node is None or not isinstance(node, fx.Node):
        return False
    if node.op == "call_function":
        return node.target in targets or getattr(node.target, "__name__", None) in {
            t if isinstance(t, str) else getattr(t, "__name__", "") for t in targets}
    if node.op == "call_method":
        return node.target in {t for t in targets if isinstance(t, str)}
    return False


_CASTS = ("float", "to", "type_as", "half", "bfloat16", "contiguous")


def _skip_casts(node, up=True):
    """Walk through dtype casts (and eval-mode dropout): up to the producer, or down to the one user."""
    while True:
        if up and _is(node, *_CASTS, F.dropout, "dropout"):
            node = node.args[0]
        elif not up and len(node.users) == 1 and _is(next(iter(node.users)), *_CASTS, F.dropout, "dropout"):
            node = next(iter(node.users))
        else:
            return node


def _const(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool)


_SCALAR_OPS = (operator.pow, operator.floordiv, operator.truediv, operator.mul, operator.add, operator.sub,
               operator.getitem, getattr, math.sqrt, float, int)


def _is_scalar_expr(node, depth=0):
    """A node computing a Python number from shapes and constants only (e.g. head_dim ** -0.5)."""
    if not isinstance(node, fx.Node) or depth > 12:
        return False
    if node.op == "call_method" and node.target in ("size", "dim"):
        return True
    if node.op != "call_function" or node.target not in _SCALAR_OPS:
        return False
    if node.target is getattr:
        return node.args[1] in ("shape", "ndim")
    if node.target is operator.getitem and isinstance(node.args[0], fx.Node) and \
            node.args[0].op == "call_function" and node.args[0].target is getattr:
        return node.args[0].args[1] == "shape"
    return all(_const(a) or _is_scalar_expr(a, depth + 1) for a in node.args)


def _scale_arg(graph, factors):
    """The SDPA scale from the matched factors: a float, or nodes multiplying them out at run time."""
    number = 1.0
    for f in factors:
        if _const(f):
            number *= f
    out = number
    for f in factors:
        if not _const(f):
            kind, n = f
            out = graph.call_function(operator.mul if kind == "mul" else operator.truediv, (out, n))
    return out


def _match(softmax):
    """From a softmax node, the pieces of one attention: q, k (untransposed), v, mask, scale, last node."""
    dim = softmax.kwargs.get("dim", softmax.args[1] if len(softmax.args) > 1 else None)
    if dim not in (-1, 3):
        return None
    node = _skip_casts(softmax.args[0])
    mask = None
    if _is(node, "masked_fill", torch.masked_fill):
        scores, fill_where, value = node.args[0], node.args[1], node.args[2]
        if not (_const(value) and math.isinf(value) and value < 0) and not (_const(value) and value <= -1e4):
            return None
        mask = ("not", fill_where)
        node = scores
    elif _is(node, operator.add, torch.add, "add") and len(node.args) == 2:
        a, b = node.args
        scores, mask = (a, b) if _is(_skip_casts(a), operator.truediv, operator.mul, torch.matmul, "matmul",
                                     operator.matmul) else (b, a)
        mask = ("add", mask)
        node = scores
    node = _skip_casts(node)
    scale = []                              # factors: numbers, or ("mul"|"div", scalar node)
    while _is(node, operator.truediv, operator.mul, torch.mul, torch.div, "mul", "div"):
        a, b = node.args[0], node.args[1]
        div = _is(node, operator.truediv, torch.div, "div")
        if _const(b) or _is_scalar_expr(b):
            scale.append((1.0 / b if div else b) if _const(b) else ("div" if div else "mul", b))
            node = a
        elif not div and (_const(a) or _is_scalar_expr(a)):
            scale.append(a if _const(a) else ("mul", a))
            node = b
        else:
            return None
        node = _skip_casts(node)
    if not _is(node, torch.matmul, operator.matmul, "matmul"):
        return None
    q, kt = node.args[0], node.args[1]
    if _is(kt, "transpose", torch.transpose) and set(kt.args[1:3]) in ({-2, -1}, {2, 3}):
        k = kt.args[0]
    elif _is(kt, "mT"):
        k = kt.args[0]
    else:
        return None
    down = _skip_casts(softmax, up=False)
    if len(down.users) != 1:
        return None
    pv = next(iter(down.users))
    if not (_is(pv, torch.matmul, operator.matmul, "matmul") and pv.args[0] is down):
        return None
    return {"q": q, "k": k, "v": pv.args[1], "mask": mask, "scale": scale, "out": pv, "scores": node}


def _sdpa_kwargs(attn_mask, scale):
    """The SDPA call's keywords: the model's own mask and scale, never is_causal (erratum 1)."""
    return {"attn_mask": attn_mask, "scale": scale}


def _rewrite_graph(gm):
    graph, found = gm.graph, 0
    for node in list(graph.nodes):
        if not _is(node, F.softmax, torch.softmax, "softmax"):
            continue
        m = _match(node)
        if m is None:
            continue
        with graph.inserting_before(m["out"]):
            attn_mask = None
            if m["mask"] is not None:
                kind, mnode = m["mask"]
                if kind == "not":
                    attn_mask = (mnode.args[0] if _is(mnode, operator.invert, torch.logical_not, "logical_not",
                                                      "bitwise_not") else graph.call_function(torch.logical_not,
                                                                                              (mnode,)))
                else:
                    attn_mask = mnode
            new = graph.call_function(F.scaled_dot_product_attention, (m["q"], m["k"], m["v"]),
                                      _sdpa_kwargs(attn_mask, _scale_arg(graph, m["scale"])))
        m["out"].replace_all_uses_with(new)
        _drop_dead(graph, m["out"])
        found += 1
    if found:
        graph.lint()
        gm.recompile()
    return found


def _drop_dead(graph, node):
    """Remove node and the producers that only it used (the old scores/softmax chain), nothing else."""
    stack = [node]
    while stack:
        n = stack.pop()
        if n.op in ("placeholder", "output", "get_attr") or n.users or n.target in ("index_copy_", "copy_"):
            continue
        inputs = [a for a in n.all_input_nodes]
        graph.erase_node(n)
        stack.extend(inputs)


def _calls_softmax(mod):
    try:
        src = inspect.getsource(type(mod).forward)
    except (OSError, TypeError):
        return False
    return "softmax" in src


def rewrite_eager(model, only=None):
    """Rewrite eager attention modules' forward in place; returns the module paths rewritten.
    only: rewrite just these paths (a recipe replays the sites it recorded)."""
    hf_paths = [p for p, _ in hf_models(model)]      # handled by their own switch (route_hf)
    done = []
    for path, mod in list(model.named_modules()):
        if only is not None and path not in only:
            continue
        if any(p == "" or path == p or path.startswith(p + ".") for p in hf_paths):
            continue
        if isinstance(mod, fx.GraphModule) or not _calls_softmax(mod):
            continue
        try:
            graph = _LeafTracer().trace(mod)
        except Exception:
            continue                        # not traceable by FX: left as it is
        if _frozen_constants(graph):
            continue                        # FX froze a tensor computed from real data: unsafe to rewrite
        gm = fx.GraphModule(mod, graph, class_name=type(mod).__name__ + "SDPA")
        if _rewrite_graph(gm):
            # The module stays where it is (same class, children, state_dict); only its forward becomes the
            # rewritten graph's code, which reads the same submodules and buffers by name.
            mod.forward = types.MethodType(type(gm).forward, mod)
            done.append(path)
    return done


# ---- the backend, by measurement ------------------------------------------------------------------------

def record_sdpa_calls(model, args, kwargs=None):
    """One eager call; every F.scaled_dot_product_attention call's inputs (cloned) and flags."""
    from torch.overrides import TorchFunctionMode
    calls = []

    class Recorder(TorchFunctionMode):
        def __torch_function__(self, func, types, a=(), kw=None):
            kw = kw or {}
            if func is F.scaled_dot_product_attention:
                calls.append(([x.clone() if isinstance(x, torch.Tensor) else x for x in a],
                              {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in kw.items()}))
            return func(*a, **kw)

    with torch.no_grad(), Recorder():
        model(*args, **(kwargs or {}))
    return calls


def describe_call(call):
    a, kw = call
    q, k = a[0], a[1]
    mask = kw.get("attn_mask", a[3] if len(a) > 3 else None)
    return {"q": list(q.shape), "k": list(k.shape), "dtype": str(q.dtype).replace("torch.", ""),
            "mask": None if mask is None else f"{str(mask.dtype).replace('torch.', '')}{list(mask.shape)}",
            "is_causal": bool(kw.get("is_causal", False)), "enable_gqa": bool(kw.get("enable_gqa", False))}


def torch_picks(calls):
    """The backends torch's SDPA picks by itself for the recorded calls, every backend allowed
    (torch._fused_sdp_choice, the dispatcher's own choice, which Inductor's lowering makes too), as this
    module's names; None when torch cannot say for some call. Forcing a backend torch already picks for
    every call changes nothing, so it is not worth a build."""
    picks = set()
    names = {getattr(SDPBackend, v): k for k, v in BACKENDS.items() if hasattr(SDPBackend, v)}
    for a, kw in calls:
        extra = {k: kw[k] for k in ("attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa") if k in kw}
        try:
            with sdpa_context(None):
                got = SDPBackend(torch._fused_sdp_choice(*a[:6], **extra))     # a mask may come positionally
        except Exception:  # noqa: BLE001  (an argument this torch's chooser does not take: cannot say)
            return None
        if got not in names:
            return None
        picks.add(names[got])
    return picks


def measure_backends(calls, device, iters=50, warmup=5):
    """Time every distinct recorded call under each backend; [{backend, us, ok, error}], fastest first.
    us: the step's total for all calls (each distinct shape times how often it occurs)."""
    from .. import bench
    distinct = {}
    for c in calls:
        key = str(describe_call(c))
        distinct.setdefault(key, [c, 0])[1] += 1
    rows = []
    for name in [None] + backends_here(device):
        row = {"backend": name or "default", "us": 0.0, "ok": True, "error": None}
        if name == "aiter":
            from .aiter_ops import flash_applies
            took = sum(n for (a, kw), n in distinct.values() if flash_applies(a[0], a[1], kw.get("attn_mask"),
                                                                              kw.get("dropout_p", 0.0), kw.get("is_causal", False)))
            row["note"] = f"aiter flash attention takes {took} of {len(calls)} calls; the rest (explicit masks) stay on SDPA"
        try:
            for (a, kw), n in distinct.values():
                with sdpa_context(name):
                    F.scaled_dot_product_attention(*a, **kw)     # raises if the backend cannot run it
                    t = bench.time_step(lambda: F.scaled_dot_product_attention(*a, **kw), device,
                                        iters=iters, warmup=warmup)
                row["us"] += t.p50_ms * 1e3 * n
            row["us"] = round(row["us"], 2)
        except Exception as e:
            row.update(ok=False, us=None, error=str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__)
        rows.append(row)
    return sorted(rows, key=lambda r: (not r["ok"], r["us"] if r["us"] is not None else 0))
