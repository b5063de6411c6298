"""Manual CUDA graph capture over static input buffers, and the ROCm Dynamo RNG patch.

    graph = GraphStep(compiled_model, args, kwargs)    # warm-up on a side stream, then capture
    out = graph(*new_args)                             # copy inputs into the static buffers, replay
    step = graph.bind(args, kwargs)                    # the same, with the input tree walked once
    loop.forward = LazyGraph(loop.forward)             # capture a submodule's forward on its first call

Inductor's own graph modes (`reduce-overhead`, `triton.cudagraphs`) are never used: they crashed on
our H200 and stall on ROCm. Compile with mode "default" and capture the compiled callable here instead.
"""
import torch

from .compare import flatten


def _clone_tree(x):
    if isinstance(x, torch.Tensor):
        return x.clone()
    if isinstance(x, (list, tuple)):
        return type(x)(_clone_tree(v) for v in x)
    if isinstance(x, dict):
        return {k: _clone_tree(v) for k, v in x.items()}
    return x


class GraphStep:
    """One captured call of fn on static copies of (args, kwargs); replays copy new inputs in first."""

    def __init__(self, fn, args, kwargs, warmup=3, pool=None):
        # The graph reads fn's parameters by address: it keeps fn (the model) alive for as long as it lives. Kept
        # only through a step bound to it (benchmarks/tuning_variants.py kept each build's step alone), the model
        # was freed, and the next build's weights took its memory: replays read them, or an address no longer
        # mapped (pi0 full, H200, 2026-12-03: an illegal memory access in the first timed replay after 4 builds).
        self.fn = fn
        self.static_args, self.static_kwargs = _clone_tree(tuple(args)), _clone_tree(dict(kwargs))
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.no_grad(), torch.cuda.stream(side):
            for _ in range(warmup):
                fn(*self.static_args, **self.static_kwargs)
        torch.cuda.current_stream().wait_stream(side)
        torch.cuda.current_stream().synchronize()
        self.pool = pool if pool is not None else torch.cuda.graph_pool_handle()
        self.graph = torch.cuda.CUDAGraph()
        with torch.no_grad(), torch.cuda.graph(self.graph, pool=self.pool):
            self.static_out = fn(*self.static_args, **self.static_kwargs)
        torch.cuda.current_stream().synchronize()

    def bind(self, args, kwargs):
        """A no-argument step that copies these inputs into the static buffers and replays: the input
        tree is walked once here, not on every call (the step is what the timer measures)."""
        pairs = list(zip(_leaves(self.static_args, self.static_kwargs), _leaves(args, kwargs)))

        def step():
            for dst, src in pairs:
                dst.copy_(src, non_blocking=True)
            self.graph.replay()
            return self.static_out
        return step

    def __call__(self, *args, **kwargs):
        return self.bind(args, kwargs)()


class LazyGraph:
    """A forward captured on its first call (whatever inputs the caller builds), replayed after that:
    the hot loop of a step captured alone, its caller left eager (the source's "Step A")."""

    def __init__(self, fn, warmup=3):
        self.fn, self.warmup, self.graph = fn, warmup, None

    def __call__(self, *args, **kwargs):
        if self.graph is None:
            self.graph = GraphStep(self.fn, args, kwargs, warmup=self.warmup)
        return self.graph(*args, **kwargs)


def _leaves(args, kwargs):
    return flatten({"a": list(args), "k": dict(kwargs)}).values()


def patch_dynamo_rng():
    """The source's ROCm patch: Dynamo's convert_frame saves/restores the CUDA RNG state around every
    compile, which is illegal while a stream is capturing. Guard both calls with a capture check.
    Applied through torch.cuda, where torch._dynamo.convert_frame looks the functions up at call time."""
    import torch._dynamo.convert_frame  # noqa: F401  (the module whose calls this guards)
    if getattr(torch.cuda.get_rng_state, "playbook_guarded", False):
        return
    get_state, set_state = torch.cuda.get_rng_state, torch.cuda.set_rng_state

    def guarded_get(device="cuda"):
        return None if torch.cuda.is_current_stream_capturing() else get_state(device)

    def guarded_set(new_state, device="cuda"):
        if new_state is not None and not torch.cuda.is_current_stream_capturing():
            set_state(new_state, device)

    guarded_get.playbook_guarded = True
    torch.cuda.get_rng_state, torch.cuda.set_rng_state = guarded_get, guarded_set
