"""Forked notebook kernels: one process imports torch and the playbook once, and each phase's kernel is a
fork of it, so a phase does not pay for those imports again (about 5 s of CPU a kernel on a 2-core machine,
taken from the phase running beside it).

    server = ForkServer.start()                 # the chain, once: `python -m playbook.forkkernel serve SOCKET PID`
    km = kernel_manager(server)                 # an AsyncKernelManager whose kernel is a fork
    ...
    server.stop()

Each phase still gets a fresh process of its own: the fork happens before anything of the phase runs, and
the server only imports: it runs no model, never initialises CUDA and starts no Python thread (importing
torch leaves one idle native thread, as in every process a DataLoader forks its workers from), so every
fork starts from the same clean state. The kernel manager launches a small launcher (`python -m playbook.forkkernel launch SOCKET PID -f CONN`,
standard library only) that hands its stdin/stdout/stderr, working folder, environment and arguments to the
server, which forks; the child becomes the ipykernel those arguments name. The launcher stands for the
kernel towards jupyter_client: a signal sent to it (interrupt, terminate) is passed on to the child, its
exit code is the child's, and when the launcher dies (a kill) the server kills the child.

Used for CPU runs on Linux, where the imports compete with the phase for the cores (`enabled()`); a CUDA
process cannot fork once CUDA is initialised, and macOS's system frameworks are not fork-safe, so both keep
ordinary kernels.
"""
import json
import os
import select
import signal
import socket
import sys
import time

# imported by the server before it forks (none initialises CUDA or starts a Python thread); each is optional
PRELOAD = ("torch", "torch._dynamo", "torch._inductor.compile_fx", "ipykernel.kernelapp",
           "playbook.notebook", "playbook.panel", "playbook.pipeline", "playbook.state")
READY_S = 120          # how long a launcher waits for the server's imports before starting an ordinary kernel


def enabled(device):
    """Forked kernels for this run: a CPU run on Linux, unless PLAYBOOK_FORK_KERNELS=0."""
    return (device == "cpu" and sys.platform.startswith("linux") and hasattr(socket, "send_fds")
            and os.environ.get("PLAYBOOK_FORK_KERNELS", "1") != "0")


# ---- the server: imports once, then forks a kernel for each launcher that connects ----

def serve(path, parent):
    """parent: the chain's pid, from its command line (a chain that died before this line ran is noticed)."""
    import importlib
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001  (a missing extra is imported by the kernel itself, as usual)
            pass
    tmp = f"{path}.tmp"
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    srv.bind(tmp)
    srv.listen(8)
    os.rename(tmp, path)          # the path appears only once the server accepts
    children = {}                 # launcher connection -> child pid
    while True:
        ready, _, _ = select.select([srv, *children], [], [], 0.2)
        for conn in ready:
            if conn is srv:
                launcher, _ = srv.accept()
                try:
                    pid = _fork(launcher, srv, children)
                except Exception:  # noqa: BLE001  (a bad request: that launcher fails, the server goes on)
                    launcher.close()
                    continue
                if pid:
                    children[launcher] = pid
                continue
            data = conn.recv(4096)
            pid = children[conn]
            if not data:          # the launcher died (killed): so does its kernel
                _kill(pid, signal.SIGKILL)
                continue
            for line in data.decode().split("\n"):
                if line.startswith("signal "):
                    _kill(pid, int(line.split()[1]))
        for conn, pid in list(children.items()):
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                code = os.waitstatus_to_exitcode(status)
                try:
                    conn.send(json.dumps({"exit": code}).encode())
                except OSError:
                    pass
                conn.close()
                del children[conn]
        if os.getppid() != parent:    # the chain is gone: nothing left to serve
            for pid in children.values():
                _kill(pid, signal.SIGKILL)
            return


def _kill(pid, sig):
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _fork(launcher, srv, children):
    msg, fds, _, _ = socket.recv_fds(launcher, 1 << 20, 3)
    if len(fds) != 3 or not msg:
        launcher.close()
        return None
    request = json.loads(msg.decode())
    pid = os.fork()
    if pid:
        for fd in fds:
            os.close(fd)
        launcher.send(json.dumps({"pid": pid}).encode())
        return pid
    # the child: the launcher's stdio, folder, environment and arguments, then the kernel
    code = 1
    try:
        srv.close()
        for conn in [launcher, *children]:
            conn.close()
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        sys.path[0] = request["cwd"]
        # ipykernel read JPY_PARENT_PID when the server imported it: the kernel's parent is the server,
        # watched as a launched kernel watches its launcher (it exits when the server is gone)
        sys.argv = [*request["argv"], f"--IPKernelApp.parent_handle={os.getppid()}"]
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD):
            signal.signal(sig, signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL)
        from ipykernel import kernelapp
        kernelapp.launch_new_instance()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:  # noqa: BLE001  (reported on the launcher's stderr, then the child exits)
        import traceback
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


# ---- the launcher: what jupyter_client starts, standing for the forked kernel ----

def launch(path, server_pid, argv):
    conn = _connect(path, server_pid)
    if conn is None:
        _ordinary_kernel(argv, "no fork server (it failed, or took too long)")

    def forward(sig, _frame):
        try:
            conn.send(f"signal {sig}".encode())
        except OSError:
            pass
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(sig, forward)
    request = {"cwd": os.getcwd(), "env": dict(os.environ),
               "argv": [os.path.join(os.path.dirname(sys.executable), "ipykernel_launcher"), *argv]}
    socket.send_fds(conn, [json.dumps(request).encode()], [0, 1, 2])
    forked = False
    while True:
        try:
            data = conn.recv(4096)
        except InterruptedError:
            continue
        if not data:
            if not forked:        # the server closed before it forked: the kernel is started as Jupyter would
                _ordinary_kernel(argv, "the fork server did not fork")
            return 1
        msg = json.loads(data.decode())
        forked = forked or "pid" in msg
        if "exit" in msg:
            return msg["exit"]


def _ordinary_kernel(argv, why):
    """This launcher becomes an ordinary ipykernel (its process replaced), with the reason on stderr."""
    print(f"forkkernel: {why}; starting an ordinary kernel", file=sys.stderr)
    os.execv(sys.executable, [sys.executable, "-m", "ipykernel_launcher", *argv])


def _connect(path, server_pid):
    """A connection to the server, once it listens; None when it died or READY_S passed first."""
    end = time.monotonic() + READY_S
    while time.monotonic() < end:
        if os.path.exists(path):
            conn = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            try:
                conn.connect(path)
                return conn
            except OSError:
                conn.close()
                return None
        try:
            os.kill(server_pid, 0)
        except ProcessLookupError:
            return None
        time.sleep(0.05)
    return None


# ---- the chain's side ----

class ForkServer:
    """The server process of one chain. stop() ends it; a kernel it forked that is still alive exits when it
    sees its server gone (ipykernel's parent poller), and its launcher with it."""

    def __init__(self, proc, path):
        self.proc, self.socket = proc, path

    @classmethod
    def start(cls, root=None):
        """A server started at once in `root` (the folder kernels start in; the repository's by default).
        Nothing waits for it here: a launcher waits for its imports, or starts an ordinary kernel if it dies."""
        import subprocess
        import tempfile
        # a socket path is limited to about 100 bytes: a short one in the temp folder
        path = os.path.join(tempfile.mkdtemp(prefix="playbook-fork-"), "kernels.sock")
        root = root or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        proc = subprocess.Popen([sys.executable, "-m", "playbook.forkkernel", "serve", path, str(os.getpid())],
                                cwd=str(root), stdin=subprocess.DEVNULL)
        return cls(proc, path)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        try:
            os.unlink(self.socket)
            os.rmdir(os.path.dirname(self.socket))
        except OSError:
            pass


def kernel_manager(server):
    """An AsyncKernelManager (kernel "python3") whose kernel is forked from `server`."""
    from jupyter_client.manager import AsyncKernelManager

    class ForkedKernelManager(AsyncKernelManager):
        def format_kernel_cmd(self, extra_arguments=None):
            cmd = super().format_kernel_cmd(extra_arguments)
            if "ipykernel_launcher" not in cmd:       # not the stock Python kernel: start it as it says
                return cmd
            rest = cmd[cmd.index("ipykernel_launcher") + 1:]
            return [sys.executable, "-m", "playbook.forkkernel", "launch", server.socket, str(server.proc.pid), *rest]

    return ForkedKernelManager(kernel_name="python3")


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"]:
        serve(sys.argv[2], int(sys.argv[3]))
    elif sys.argv[1:2] == ["launch"]:
        sys.exit(launch(sys.argv[2], int(sys.argv[3]), sys.argv[4:]))
    else:
        sys.exit("usage: python -m playbook.forkkernel serve SOCKET CHAIN_PID\n"
                 "       python -m playbook.forkkernel launch SOCKET SERVER_PID -f CONNECTION_FILE ...")
