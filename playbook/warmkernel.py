"""The notebook kernels the chain runs its phases in, each started ahead of its phase.

    kernel = WarmKernel(run)             # started while the phase before runs: imports, build, compiler
    km = kernel.hand_over()              # papermill's kernel manager for the phase's notebook
    kernel.shutdown()

    first = WarmKernel.early(device)     # the command line, before its own imports: no run exists yet
    first.prepare(run)                   # the chain, once the run is opened

A kernel started ahead imports the playbook and torch, starts the GPU, builds the run's untouched workload
(each pipeline of the phase then starts from a copy of it) and loads the compiler stack with a two-op
compile into the run's compile cache, each step under the quiet lock's shared side, so a phase's timed
step never shares the cores with one and waits for at most one step (playbook/quiet.py); on a CPU run the
kernels ahead warm up one after another, in the order they were started. The first kernel of a GPU run
starts before the command line imports torch and opens the run, so its imports overlap the chain's.
"""
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The kernel's own start-up warnings (TCP without encryption, debugger streams) are not the user's work.
KERNEL_ARGS = ["--IPKernelApp.log_level=ERROR"]
LINGER_MS = 5000     # how long a queued preload may still take to reach its kernel once the channel is closed
# NOTE: split in two so the first kernel can import before the run exists. On the H200 (llama 1b, torch 2.11,
# 2026-12-02) the command line spent 8.4 s importing and opening the run before the chain started, and the
# baseline's kernel then took 11.1 s to start and 5.0 s more before its first cell: none of it overlapped.
IMPORTS = """from playbook.quiet import one_at_a_time, warming
with one_at_a_time({serial}):
    with warming():
        import torch
    with warming():
        import playbook.notebook, playbook.panel
        import matplotlib.pyplot    # for the phase's figures, under the kernel's own (inline) backend
        if torch.cuda.is_available():
            torch.cuda.init()
"""
# The untouched workload built from the command line's parameters, before the run exists (a new run's first
# kernel: PREPARE's build then finds it made). Parameters the run will refuse build nothing here.
EARLY_BUILD = """from playbook.quiet import warming
with warming():
    from playbook.pipeline import prebuild
    from playbook.runs import auto_workload, resolve_params
    try:
        _params = {params!r}
        _params["workload"], _params["preset"] = auto_workload(_params["workload"], _params["preset"],
                                                               _params["device"])
        _params = resolve_params(**_params)
    except Exception:
        _params = None
    if _params is not None:
        prebuild(_params)
    del _params
"""
PREPARE = """import os
os.environ[{lock_env!r}] = {lock!r}   # a kernel started before the run existed did not inherit it
from playbook.quiet import one_at_a_time, warming
with one_at_a_time({serial}):
    with warming():
        from playbook.pipeline import prebuild, warm_compiler
        from playbook.state import Run
        _run = Run.open({run_dir!r})
        _run.use_compile_cache()
    with warming():
        prebuild(_run.params)
    if {compile}:
        with warming():
            warm_compiler(_run.params["device"])
    del _run
"""


def kernel_env():
    """What every phase kernel inherits: the playbook importable, no progress bars (headless)."""
    parts = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != str(ROOT)]
    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + parts)      # once, however often it is called
    os.environ["PLAYBOOK_PROGRESS"] = "0"


class WarmKernel:
    """A fresh notebook kernel started ahead of its phase, importing the playbook and building the untouched
    workload (silently) while the phase before it runs, so a phase does not wait for a kernel's start.
    Each phase still gets a fresh process of its own; papermill runs the notebook in it and this object
    shuts it down. The preload is queued before the notebook's cells: they run after it, in order."""

    def __init__(self, run=None, ahead=True, server=None, serial=None):
        """ahead: started while another phase runs (its start is then hidden, and it warms the compiler
        up too); False for a kernel the next phase waits on at once (its warm-up would only delay it).
        server: a forkkernel.ForkServer the kernel is forked from (its imports done once), or None.
        run: the run it is for; None starts the imports only, and prepare(run) follows."""
        from jupyter_client.manager import AsyncKernelManager
        from jupyter_core.utils import run_sync

        from . import forkkernel
        self.km = forkkernel.kernel_manager(server) if server else AsyncKernelManager(kernel_name="python3")
        run_sync(self.km.start_kernel)(cwd=str(ROOT), extra_arguments=KERNEL_ARGS)
        self.kc = self.km.client()
        self.kc.start_channels()
        self.ahead = ahead
        if serial is None:        # the cores are the timed device's on a CPU run: one warm-up at a time
            serial = run is not None and run.params["device"] == "cpu"
        self.kc.execute(IMPORTS.format(serial=serial), silent=True, store_history=False)
        self.prepared = False
        if run is not None:
            self.prepare(run)

    @classmethod
    def early(cls, device, params=None):
        """The first phase's kernel, started before the command line's own imports (a GPU run: a CPU run's
        kernels fork from a server instead); None where it cannot start (the chain then starts one).
        params: a new run's parameters as the command line has them: its untouched workload is built at
        once, not after the run is opened (None for a resumed run, whose parameters are the run's)."""
        kernel_env()
        try:
            kernel = cls(ahead=False, serial=False)
        except Exception:  # noqa: BLE001  (no kernel here yet: the chain starts its own and reports why)
            return None
        if params is not None:
            kernel.kc.execute(EARLY_BUILD.format(params=dict(params)), silent=True, store_history=False)
        return kernel

    def prepare(self, run):
        """Queue the run's part of the warm-up: its lock, compile cache and untouched build."""
        from .quiet import LOCK_ENV
        lock = os.environ.get(LOCK_ENV, "")
        self.kc.execute(PREPARE.format(lock_env=LOCK_ENV, lock=lock, run_dir=str(run.path.resolve()),
                                       serial=run.params["device"] == "cpu", compile=self.ahead),
                        silent=True, store_history=False)
        self.prepared = True
        return self

    def hand_over(self):
        """The kernel manager for papermill (execute_notebook(km=...)), its preload channel closed. The shell
        socket is closed with a linger first: jupyter_client closes it with none, which drops a message not yet
        sent, and the first phase's kernel is handed over moments after its preload was queued."""
        shell = getattr(self.kc.shell_channel, "socket", None)
        if shell is not None:
            try:
                shell.close(linger=LINGER_MS)
            except Exception:  # noqa: BLE001  (a channel already gone: stop_channels below has nothing to drop)
                pass
        self.kc.stop_channels()
        return self.km

    def shutdown(self):
        from jupyter_core.utils import run_sync
        try:
            run_sync(self.km.shutdown_kernel)(now=True)
        except Exception:  # noqa: BLE001  (a kernel that already died has nothing left to stop)
            pass
