"""The HA hooks from C, C++ and Python under the real supervisor: the
example applications (examples/c_ha_app.c, cpp_ha_app.cpp, py_ha_app.py,
built by `make c-examples`) run by `mtipc-ha up` (the five roles): each
gets the role at once (active, epoch 1, what a node that is not paired
gives), says ready (the next starts only then: dependencies), heartbeats,
keeps running while the Monitor is killed and restarted (the hooks
reconnect), and stops on the node's SIGTERM, in reverse order.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
BIN = ROOT / "target" / "debug"
C_OUT = ROOT / "target" / "c"


def status(dom: Path) -> dict | None:  # type: ignore[type-arg]
    r = subprocess.run(
        [str(BIN / "mtipc"), "--domain", str(dom), "ha", "status", "--json"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if r.returncode != 0:
        return None
    return json.loads(r.stdout)  # type: ignore[no-any-return]


def wait_ready(dom: Path, names: list[str], timeout: float = 30.0) -> dict:  # type: ignore[type-arg]
    end = time.monotonic() + timeout
    while True:
        s = status(dom)
        if s is not None:
            states = {p["name"]: p["state"] for p in s["processes"]}
            if all(states.get(n) == "ready" for n in names):
                return s
        assert time.monotonic() < end, f"not all ready: {s}"
        time.sleep(0.05)


def log_of(dom: Path, name: str) -> str:
    r = subprocess.run(
        [str(BIN / "mtipc"), "--domain", str(dom), "ha", "log", name, "--lines", "100"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_c_cpp_and_python_applications_under_mtipc_ha_up(tmp_path: Path) -> None:
    for exe in (C_OUT / "c_ha_app", C_OUT / "cpp_ha_app", BIN / "mtipc-ha"):
        assert exe.is_file(), f"{exe} is missing: make c-examples and cargo build --bins first"
    dom = tmp_path / "dom"
    py_app = ROOT / "examples" / "py_ha_app.py"
    apps = {
        "c": [str(C_OUT / "c_ha_app"), "c", "50"],
        "cpp": [str(C_OUT / "cpp_ha_app"), "cpp", "50"],
        "py": [sys.executable, "-u", str(py_app), "py", "50"],
    }
    text = f'[node]\nname = "langs"\ndomain = "{dom}"\n\n'
    previous = None
    for name, cmd in apps.items():
        text += f"[[process]]\nname = \"{name}\"\ncommand = {json.dumps(cmd)}\n"
        text += 'ready = "notify"\nwatchdog_ms = 2000\nmonitor_ms = 100\n'
        if previous:
            text += f'depends_on = ["{previous}"]\n'
        text += "\n"
        previous = name
    config = tmp_path / "node.toml"
    config.write_text(text)
    with open(tmp_path / "stderr", "w") as err:
        node = subprocess.Popen([str(BIN / "mtipc-ha"), "up", str(config)], stdout=subprocess.DEVNULL, stderr=err)
    try:
        s = wait_ready(dom, list(apps))
        assert s["roles"]["split"] is True
        pids = {p["name"]: p["pid"] for p in s["processes"]}
        # Dependencies: each started only once the one before said ready.
        started = {p["name"]: p["started_unix_ms"] for p in s["processes"]}
        assert started["c"] <= started["cpp"] <= started["py"], started
        for name in apps:
            out = log_of(dom, name)
            assert f"{name}: role active, epoch 1" in out, out
            assert f"{name}: ready" in out, out
            assert "supervised: yes" in out, out

        # The Monitor killed: it is restarted; the applications' hooks
        # reconnect and keep heartbeating (watchdog 2 s), nobody restarts.
        monitor = s["roles"]["monitor"]
        os.kill(monitor, signal.SIGKILL)
        end = time.monotonic() + 10
        while True:
            s2 = status(dom)
            if s2 and s2["roles"]["monitor"] not in (None, monitor):
                break
            assert time.monotonic() < end, s2
            time.sleep(0.05)
        time.sleep(3)  # longer than watchdog_ms: heartbeats reach the new Monitor
        s3 = wait_ready(dom, list(apps))
        assert {p["name"]: p["pid"] for p in s3["processes"]} == pids
        assert all(p["restarts"] == 0 for p in s3["processes"]), s3
    finally:
        node.send_signal(signal.SIGTERM)
        code = node.wait(timeout=30)
    assert code == 0, (tmp_path / "stderr").read_text()
    for name in apps:
        assert f"{name}: SIGTERM, stopping" in log_of(dom, name)
    stops = [
        line.split("mtipc-ha: ")[1].split(":")[0]
        for line in (tmp_path / "stderr").read_text().splitlines()
        if "-> stopping" in line
    ]
    assert stops == ["py", "cpp", "c"], stops
