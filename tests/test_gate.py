import json
import subprocess
import sys

import pytest

from playbook.gate import gate, p50_from_run, p50_from_text
from playbook.runs import open_run
from test_state import phase


@pytest.mark.parametrize("text,value", [
    ("warmup\nP50:   25.3 ms\n", 25.3),
    ('{"p50": 12.5, "p95": 14}', 12.5),
    ("p50 1.0\nnoise\np50=2.5 ms\ndone", 2.5),
    ("nothing here", None),
])
def test_p50_from_text(text, value):
    assert p50_from_text(text) == value


def test_gate_exit_codes():
    lines = []
    assert gate(25.0, 23.7, out=lines.append) == 0
    assert gate(25.0, 26.0, baseline_ms=52.0, out=lines.append) == 1
    assert "above by 1.000 ms" in lines[-1] and "+4.0%" in lines[-1]
    assert gate(25.0, None, out=lines.append) == 2


def cli(*args):
    return subprocess.run([sys.executable, "-m", "playbook", *args], capture_output=True, text=True)


def test_gate_cli_p50_run_and_command(tmp_path, run_params):
    assert cli("gate", "--target-ms", "2", "--p50-ms", "1.5").returncode == 0
    assert cli("gate", "--target-ms", "1", "--p50-ms", "1.5").returncode == 1
    run = open_run(str(tmp_path / "r"), **run_params)
    run.write_phase(phase(0, "baseline", p50=3.0))
    run.write_phase(phase(7, "verify", p50=0.9))
    assert p50_from_run(run.path) == 0.9 and p50_from_run(run.path, "baseline") == 3.0
    assert cli("gate", "--target-ms", "1", "--run", str(run.path)).returncode == 0
    assert cli("gate", "--target-ms", "1", "--run", str(run.path), "--phase", "baseline").returncode == 1
    cmd = f"{sys.executable} -c \"print('{json.dumps({'p50': 0.5})}')\""
    assert cli("gate", "--target-ms", "1", "--benchmark-cmd", cmd).returncode == 0
    assert cli("gate", "--target-ms", "1", "--benchmark-cmd", f"{sys.executable} -c \"print('hi')\"").returncode == 2
