"""Forked notebook kernels (playbook/forkkernel.py): each kernel is a fork of one process that imported torch
and the playbook, and behaves towards jupyter_client as a launched kernel does."""
import os
import signal
import time

import pytest
from jupyter_core.utils import run_sync

from playbook import forkkernel

pytestmark = pytest.mark.skipif(not forkkernel.enabled("cpu"), reason="forked kernels: Linux CPU runs only")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def server():
    srv = forkkernel.ForkServer.start(ROOT)
    yield srv
    srv.stop()


def start(server, cwd, **env):
    km = forkkernel.kernel_manager(server)
    run_sync(km.start_kernel)(cwd=str(cwd), env={**os.environ, **env},
                              extra_arguments=["--IPKernelApp.log_level=ERROR"])
    kc = km.blocking_client()
    kc.start_channels()
    kc.wait_for_ready(timeout=120)
    return km, kc


def execute(kc, code, timeout=60):
    """(the cell's variable `out` as text, error name or None): read from the shell's reply, which
    comes after the cell ran, whatever the order of its output messages."""
    reply = kc.execute(code, user_expressions={"out": "out"}, reply=True, timeout=timeout)
    content = reply["content"]
    if content["status"] != "ok":
        return None, content.get("ename")
    value = content["user_expressions"]["out"]
    return value["data"]["text/plain"].strip("'\""), None


def gone(pid, wait_s=5.0):
    """True once no process has this pid (within wait_s)."""
    end = time.monotonic() + wait_s
    while time.monotonic() < end:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def stop(km, kc):
    kc.stop_channels()
    run_sync(km.shutdown_kernel)(now=False)


def test_a_kernel_is_a_fork_with_the_launchers_folder_environment_and_stdio(server, tmp_path):
    km, kc = start(server, tmp_path, PLAYBOOK_TEST_MARK="forked")
    out, error = execute(kc, "import os, sys; out = ' '.join(map(str, (os.getppid(), os.getcwd(), "
                             "os.environ['PLAYBOOK_TEST_MARK'], 'playbook.notebook' in sys.modules, "
                             "'torch' in sys.modules)))")
    assert error is None
    ppid, cwd, mark, notebook, torch_ = out.split()
    assert int(ppid) == server.proc.pid                 # forked by the server, not launched
    assert (cwd, mark, notebook, torch_) == (str(tmp_path), "forked", "True", "True")
    out, error = execute(kc, "import torch; out = float(torch.arange(4.0).sum())")
    assert (out, error) == ("6.0", None)                # torch works after the fork
    launcher, child = km.provisioner.process.pid, int(execute(kc, "import os; out = os.getpid()")[0])
    stop(km, kc)
    assert gone(child) and gone(launcher)               # the kernel shut down, and its launcher with it


def test_an_interrupt_reaches_the_forked_kernel(server, tmp_path):
    km, kc = start(server, tmp_path)
    msg_id = kc.execute("import time; time.sleep(60)", stop_on_error=False)
    time.sleep(1.0)
    t0 = time.monotonic()
    run_sync(km.interrupt_kernel)()
    error = None
    while True:
        msg = kc.get_iopub_msg(timeout=30)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        if msg["msg_type"] == "error":
            error = msg["content"]["ename"]
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            break
    assert error == "KeyboardInterrupt"
    assert time.monotonic() - t0 < 10
    assert execute(kc, "out = 1 + 1") == ("2", None)   # the kernel lives on
    stop(km, kc)


def test_killing_the_launcher_kills_its_kernel(server, tmp_path):
    km, kc = start(server, tmp_path)
    child = int(execute(kc, "import os; out = os.getpid()")[0])
    kc.stop_channels()
    km.provisioner.process.send_signal(signal.SIGKILL)
    assert gone(child), "the forked kernel outlived its killed launcher"
    run_sync(km.shutdown_kernel)(now=True)


def test_without_a_server_the_launcher_starts_an_ordinary_kernel(tmp_path):
    srv = forkkernel.ForkServer.start(ROOT)
    srv.stop()                                          # died before it listened
    km, kc = start(srv, tmp_path)
    out, error = execute(kc, "import os, sys; out = str((os.getppid() != %d, 'playbook.notebook' in sys.modules))"
                         % srv.proc.pid)
    assert (out, error) == ("(True, False)", None)     # launched, nothing preloaded: a kernel of its own
    stop(km, kc)


def test_forked_kernels_are_for_cpu_runs_and_can_be_turned_off(monkeypatch):
    assert not forkkernel.enabled("cuda")
    monkeypatch.setenv("PLAYBOOK_FORK_KERNELS", "0")
    assert not forkkernel.enabled("cpu")


def test_the_server_goes_when_the_chain_that_started_it_dies():
    import subprocess
    import sys
    code = ("import os, time\nfrom playbook import forkkernel\n"
            "s = forkkernel.ForkServer.start()\nprint(s.proc.pid, flush=True)\nos._exit(0)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    pid = int(done.stdout.split()[-1])                  # its chain died during its imports
    assert gone(pid, wait_s=60)


def test_a_server_that_does_not_fork_leaves_an_ordinary_kernel(tmp_path):
    import socket
    import threading
    import types
    path = str(tmp_path / "refusing.sock")
    refusing = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    refusing.bind(path)
    refusing.listen(1)

    def refuse():                                        # takes the request, then hangs up without forking
        conn, _ = refusing.accept()
        conn.recv(1 << 20)
        conn.close()
    threading.Thread(target=refuse, daemon=True).start()
    fake = forkkernel.ForkServer(types.SimpleNamespace(pid=os.getpid()), path)
    km, kc = start(fake, tmp_path)
    out, error = execute(kc, "import os, sys; out = str((os.getppid() == %d, 'playbook.notebook' in sys.modules))"
                         % os.getpid())
    assert (out, error) == ("(True, False)", None)      # the launcher itself became the kernel: nothing preloaded
    stop(km, kc)
    refusing.close()
