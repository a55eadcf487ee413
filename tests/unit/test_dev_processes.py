"""The dev cluster's process handling: a stopped process is gone only when its last thread
is, since the fault tests restart the API server and etcd on the same ports."""

from __future__ import annotations

import platform
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scalegate.dev import cluster
from scalegate.dev.cluster import DevCluster, ProcessRecord, _pid_is, free_port, port_in_use

# The main thread leaves with the exit system call (one thread, not the group), as a Go
# program's leader may exit before its other threads: the leader is a zombie while a
# thread still holds the listening socket.
_SYS_EXIT = {"x86_64": 60, "aarch64": 93}.get(platform.machine())
_HOLDER = """
import ctypes, socket, sys, threading, time
sock = socket.socket()
sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
sock.bind(("127.0.0.1", int(sys.argv[1])))
sock.listen()
threading.Thread(target=time.sleep, args=(float(sys.argv[2]),)).start()
ctypes.CDLL(None).syscall(int(sys.argv[3]), 0)
"""


@pytest.mark.skipif(_SYS_EXIT is None, reason="the exit system call's number is known for x86_64 and aarch64")
def test_a_process_is_gone_only_when_its_last_thread_has_released_its_port(tmp_path: Path):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(port), "2", str(_SYS_EXIT)])
    dev = DevCluster(state_dir=tmp_path, log=lambda message: None)
    dev._children[proc.pid] = proc
    record = ProcessRecord(name="holder", pid=proc.pid, binary=sys.executable, log=str(tmp_path / "log"), args=[])
    deadline = time.monotonic() + 10
    while _pid_is(proc.pid, sys.executable) and time.monotonic() < deadline:
        time.sleep(0.02)
    # The leader has exited; a thread of it still holds the port.
    assert not _pid_is(proc.pid, sys.executable)
    assert port_in_use(port)
    assert dev._wait_gone(record, timeout=30)
    assert not port_in_use(port)


def test_free_port_never_hands_out_a_port_twice(monkeypatch):
    # etcd's client and peer ports are both chosen before either is bound. Unshuffled, the
    # candidates come in order, so a repeat would be the very next draw.
    monkeypatch.setattr(cluster.random, "shuffle", lambda candidates: None)
    ports = [free_port() for _ in range(5)]
    assert len(set(ports)) == len(ports)
