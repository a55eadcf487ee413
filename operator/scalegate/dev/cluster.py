"""A real local control plane: etcd, kube-apiserver and kube-controller-manager as
local processes, the way controller-runtime's envtest runs them, plus an admin
kubeconfig. No kubelet and no scheduler: workloads are API objects whose Pods never
run, which is all an operator that scales through the `scale` subresource needs.

State lives in one directory (pids, ports, PKI, logs, etcd data); `up` is idempotent,
`down` stops exactly the processes that `up` started and removes the state.
"""

from __future__ import annotations

import base64
import json
import os
import random
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from .build import Binaries, Log, default_cache_dir, ensure_binaries
from .pki import Pki, create_pki, pki_paths

SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
CONTEXT_NAME = "scalegate-dev"


class DevClusterError(RuntimeError):
    """The control plane could not be started or stopped; the message says why."""


@dataclass
class ProcessRecord:
    name: str
    pid: int
    binary: str
    log: str
    args: list[str] = field(default_factory=list)


@dataclass
class ClusterState:
    api_port: int
    etcd_client_port: int
    etcd_peer_port: int
    processes: list[ProcessRecord]
    started_at: float

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.api_port}"


def default_state_dir() -> Path:
    override = os.environ.get("SCALEGATE_DEV_CLUSTER_DIR")
    return Path(override).expanduser() if override else default_cache_dir() / "dev-cluster"


def stop_process(process: subprocess.Popen | None, grace: float) -> None:
    """SIGTERM a child process, SIGKILL it if it is still running after ``grace`` seconds, and reap it."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=30)


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A free loopback port below the kernel's ephemeral range. A port the kernel hands out
    for outgoing connections could be taken by one while its server restarts (fault tests
    restart the API server on the same port), so listeners stay out of that range."""
    low, _high = _ephemeral_range()
    candidates = list(range(max(1024, low - 20000), low))
    random.shuffle(candidates)
    for port in candidates[:200]:
        # Not one handed out already: etcd's two ports are chosen before either is bound.
        if port not in _HANDED_OUT and not port_in_use(port):
            _HANDED_OUT.add(port)
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:  # a crowded machine: any port
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def _pid_is(pid: int, binary: str) -> bool:
    """True when `pid` is alive and runs `binary` (guards against pid reuse)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, UnicodeDecodeError):
        return False
    state = stat.rsplit(")", 1)[-1].split()[0]
    return cmdline == binary and state != "Z"


def _threads_alive(pid: int, binary: str) -> bool:
    """True while any thread of `pid` runs (a zombie leader may have live threads)."""
    if _pid_is(pid, binary):
        return True
    try:
        zombie = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] == "Z"
        return zombie and len(os.listdir(f"/proc/{pid}/task")) > 1
    except (OSError, IndexError):
        return False


def _listen_ports(name: str, state: ClusterState) -> list[int]:
    """The ports `restart` gives a process again (the others are chosen afresh)."""
    return {"kube-apiserver": [state.api_port],
            "etcd": [state.etcd_client_port, state.etcd_peer_port]}.get(name, [])


def _tail(path: str | Path, lines: int = 25) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class DevCluster:
    """The local control plane rooted at `state_dir`."""

    def __init__(self, state_dir: Path | None = None, cache_dir: Path | None = None, log: Log = print):
        self.state_dir = Path(state_dir) if state_dir else default_state_dir()
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        self.log = log
        self._children: dict[int, subprocess.Popen] = {}  # processes this object started

    # -- paths -------------------------------------------------------------------------
    @property
    def state_file(self) -> Path:
        return self.state_dir / "state.json"

    @property
    def kubeconfig(self) -> Path:
        return self.state_dir / "kubeconfig"

    @property
    def pki(self) -> Pki:
        return pki_paths(self.state_dir / "pki")

    @property
    def audit_log(self) -> Path:
        """The API server's audit log (JSON lines): every write to a workload's replicas
        and to scalegate's objects, by whom, with the response code. Tests count scale
        writes here, a witness that is not the operator's own record."""
        return self.state_dir / "audit.log"

    def audit_events(self) -> list[dict]:
        try:
            lines = self.audit_log.read_text().splitlines()
        except FileNotFoundError:
            return []
        events = []
        for line in lines:
            try:
                events.append(json.loads(line))
            except ValueError:  # a line being written right now
                continue
        return events

    # -- state -------------------------------------------------------------------------
    def read_state(self) -> ClusterState | None:
        try:
            raw = json.loads(self.state_file.read_text())
            raw["processes"] = [ProcessRecord(**p) for p in raw["processes"]]
            return ClusterState(**raw)
        except FileNotFoundError:
            return None
        except (ValueError, TypeError, KeyError):
            self.log(f"state file {self.state_file} is unreadable; treating it as stale")
            return ClusterState(0, 0, 0, [], 0.0)

    def _write_state(self, state: ClusterState) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(state), indent=2))
        tmp.replace(self.state_file)

    def alive(self, state: ClusterState) -> dict[str, bool]:
        return {p.name: _pid_is(p.pid, p.binary) for p in state.processes}

    # -- readiness ---------------------------------------------------------------------
    def _ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.pki.ca_cert))
        ctx.load_cert_chain(str(self.pki.admin_cert), str(self.pki.admin_key))
        return ctx

    def is_ready(self, state: ClusterState, timeout: float = 3.0) -> bool:
        try:
            with urllib.request.urlopen(f"{state.server}/readyz", context=self._ssl_context(),
                                        timeout=timeout) as resp:
                return resp.status == 200
        except (urllib.error.URLError, OSError, ssl.SSLError):
            return False

    # -- commands ----------------------------------------------------------------------
    def up(self, timeout: float = 180.0) -> ClusterState:
        """Start the control plane unless it already runs; return its state when ready."""
        state = self.read_state()
        if state is not None:
            alive = self.alive(state)
            if alive and all(alive.values()) and self.is_ready(state):
                self.log(f"dev cluster already running at {state.server} (KUBECONFIG={self.kubeconfig})")
                return state
            found = ", ".join(f"{name}={'up' if up else 'gone'}" for name, up in alive.items())
            self.log(f"found state from an earlier run that is not healthy ({found or 'no processes'}); "
                     "cleaning it up and starting afresh")
            self.down(quiet=True)

        binaries = ensure_binaries(self.cache_dir, self.log)
        started = time.monotonic()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        pki = create_pki(self.state_dir / "pki")
        requested = os.environ.get("SCALEGATE_DEV_CLUSTER_PORT")
        api_port = int(requested) if requested else free_port()
        if port_in_use(api_port):
            raise DevClusterError(
                f"port {api_port} on 127.0.0.1 is already in use; stop what uses it "
                "or choose another with SCALEGATE_DEV_CLUSTER_PORT"
            )
        state = ClusterState(api_port=api_port, etcd_client_port=free_port(), etcd_peer_port=free_port(),
                             processes=[], started_at=time.time())
        try:
            self._start_etcd(binaries, state)
            self._write_state(state)
            self._start_apiserver(binaries, pki, state)
            self._write_state(state)
            self._write_kubeconfig(pki, state)
            self._wait_ready(state, timeout)
            self._start_controller_manager(binaries, pki, state)
            self._write_state(state)
        except BaseException:
            self.down(quiet=True, keep_logs=True)
            raise
        self.log(f"dev cluster ready at {state.server} in {time.monotonic() - started:.1f}s; "
                 f"export KUBECONFIG={self.kubeconfig}")
        return state

    def down(self, quiet: bool = False, keep_logs: bool = False) -> None:
        """Stop the processes `up` started (by pid, verified) and remove the state."""
        state = self.read_state()
        if state is None:
            if not quiet:
                self.log("dev cluster is not running (no state)")
            return
        # Reverse order: controllers, then the API server, then its storage.
        for proc in reversed(state.processes):
            self._stop(proc)
        if keep_logs:
            for sub in ("etcd-data", "pki"):
                _rmtree(self.state_dir / sub)
            self.state_file.unlink(missing_ok=True)
        else:
            _rmtree(self.state_dir)
        if not quiet:
            self.log(f"dev cluster stopped; removed {self.state_dir}")

    def restart(self, names: tuple[str, ...] = ("kube-apiserver",), kill: bool = True,
                timeout: float = 120.0) -> ClusterState:
        """Stop the named processes (SIGKILL, like a crash, unless `kill` is False) and
        start them again with the same arguments, on the same ports and data; for fault
        tests. Waits until the API server is ready again."""
        state = self.read_state()
        if state is None:
            raise DevClusterError("dev cluster is not running")
        order = [p for p in state.processes if p.name in names]
        for proc in reversed(order):
            if kill and _pid_is(proc.pid, proc.binary):
                os.kill(proc.pid, signal.SIGKILL)
                self._wait_gone(proc, timeout=30)
            else:
                self._stop(proc)
        # Its sockets close only when the last of its threads has exited; the new process
        # binds the same ports, so wait until they are free.
        self._wait_ports_free([port for proc in order for port in _listen_ports(proc.name, state)])
        for proc in order:
            state.processes.remove(proc)
            self._spawn(proc.name, Path(proc.binary), proc.args, state)
        self._write_state(state)
        self._wait_ready(state, timeout)
        return state

    def status(self) -> dict:
        state = self.read_state()
        if state is None:
            return {"running": False, "stateDir": str(self.state_dir)}
        alive = self.alive(state)
        return {
            "running": bool(alive) and all(alive.values()),
            "ready": self.is_ready(state),
            "server": state.server,
            "kubeconfig": str(self.kubeconfig),
            "stateDir": str(self.state_dir),
            "etcd": f"http://127.0.0.1:{state.etcd_client_port}",
            "processes": [{"name": p.name, "pid": p.pid, "alive": alive[p.name], "log": p.log}
                          for p in state.processes],
        }

    def env(self) -> str:
        return f"export KUBECONFIG={self.kubeconfig}"

    # -- processes ---------------------------------------------------------------------
    def _spawn(self, name: str, binary: Path, args: list[str], state: ClusterState) -> ProcessRecord:
        log_path = self.state_dir / f"{name}.log"
        with open(log_path, "ab") as out:
            proc = subprocess.Popen(
                [str(binary), *args], stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,  # outlives the CLI that started it; not killed by its Ctrl-C
                cwd=self.state_dir,
            )
        self._children[proc.pid] = proc
        record = ProcessRecord(name=name, pid=proc.pid, binary=str(binary), log=str(log_path), args=list(args))
        state.processes.append(record)
        return record

    def _check_alive(self, record: ProcessRecord) -> None:
        child = self._children.get(record.pid)
        # Our own child: poll() is exact, while /proc may lag just after exec.
        exited = child.poll() is not None if child else not _pid_is(record.pid, record.binary)
        if exited:
            tail = _tail(record.log)
            hint = ""
            if "address already in use" in tail:
                hint = " (a port it needs is taken; run `scalegate dev-cluster down` or free the port)"
            raise DevClusterError(f"{record.name} exited during start{hint}; last lines of {record.log}:\n{tail}")

    def _start_etcd(self, binaries: Binaries, state: ClusterState) -> None:
        client = f"http://127.0.0.1:{state.etcd_client_port}"
        peer = f"http://127.0.0.1:{state.etcd_peer_port}"
        record = self._spawn("etcd", binaries.etcd, [
            "--name=scalegate-dev",
            f"--data-dir={self.state_dir / 'etcd-data'}",
            f"--listen-client-urls={client}", f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}", f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=scalegate-dev={peer}",
            "--unsafe-no-fsync",  # a throwaway dev store: durability is not worth the latency
            "--quota-backend-bytes=4294967296",
            "--log-level=warn",
        ], state)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            self._check_alive(record)
            try:
                with urllib.request.urlopen(f"{client}/health", timeout=2) as resp:
                    if b'"health":"true"' in resp.read():
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        raise DevClusterError(f"etcd did not become healthy in 30s; last lines of {record.log}:\n{_tail(record.log)}")

    def _start_apiserver(self, binaries: Binaries, pki: Pki, state: ClusterState) -> None:
        self._spawn("kube-apiserver", binaries.kube_apiserver, [
            f"--etcd-servers=http://127.0.0.1:{state.etcd_client_port}",
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
            # A loopback advertise address is only allowed without the endpoint reconciler.
            "--endpoint-reconciler-type=none",
            f"--secure-port={state.api_port}",
            f"--tls-cert-file={pki.serving_cert}", f"--tls-private-key-file={pki.serving_key}",
            f"--client-ca-file={pki.ca_cert}",
            "--authorization-mode=RBAC",
            f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
            f"--service-account-key-file={pki.sa_pub}",
            f"--service-account-signing-key-file={pki.sa_key}",
            "--service-cluster-ip-range=10.96.0.0/24",
            # The default plugin set already includes ValidatingAdmissionPolicy; naming it
            # keeps the guarantee explicit should defaults change.
            "--enable-admission-plugins=ValidatingAdmissionPolicy,NamespaceLifecycle,ServiceAccount",
            f"--cert-dir={self.state_dir / 'pki'}",
            "--profiling=false",
            f"--audit-policy-file={self._write_audit_policy()}",
            f"--audit-log-path={self.audit_log}",
            "--audit-log-format=json", "--audit-log-mode=blocking", "--audit-log-maxsize=200",
            "--v=1",
        ], state)

    def _write_audit_policy(self) -> Path:
        """Metadata of every write to replicas (scale subresources and the workloads
        themselves) and to scalegate's objects; nothing else, so the log stays small."""
        path = self.state_dir / "audit-policy.yaml"
        path.write_text(yaml.safe_dump({
            "apiVersion": "audit.k8s.io/v1", "kind": "Policy", "omitStages": ["RequestReceived"],
            "rules": [
                {"level": "Metadata", "verbs": ["create", "update", "patch", "delete"],
                 "resources": [
                     {"group": "apps", "resources": ["deployments", "deployments/scale", "statefulsets",
                                                     "statefulsets/scale", "replicasets", "replicasets/scale"]},
                     {"group": "scalegate.io", "resources": ["scalingproposals", "scalingproposals/status",
                                                             "scalingpolicies", "scalingpolicies/status"]},
                 ]},
                {"level": "None"},
            ]}))
        return path

    def _start_controller_manager(self, binaries: Binaries, pki: Pki, state: ClusterState) -> None:
        # Garbage collection (owner references), namespace deletion and the workload
        # controllers make the dev cluster behave like a real one for the operator.
        record = self._spawn("kube-controller-manager", binaries.kube_controller_manager, [
            f"--kubeconfig={self.kubeconfig}",
            f"--authentication-kubeconfig={self.kubeconfig}",
            f"--authorization-kubeconfig={self.kubeconfig}",
            "--bind-address=127.0.0.1", f"--secure-port={free_port()}",
            "--leader-elect=false",
            f"--service-account-private-key-file={pki.sa_key}",
            f"--root-ca-file={pki.ca_cert}",
            f"--cluster-signing-cert-file={pki.ca_cert}", f"--cluster-signing-key-file={pki.ca_key}",
            # No nodes here: the node and volume controllers would only log complaints.
            "--controllers=*,-nodeipam,-nodelifecycle,-persistentvolume-binder,-attachdetach,"
            "-persistentvolume-expander,-ttl",
            "--v=1",
        ], state)
        time.sleep(0.5)
        self._check_alive(record)

    def _wait_ready(self, state: ClusterState, timeout: float) -> None:
        apiserver = next(p for p in state.processes if p.name == "kube-apiserver")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for proc in state.processes:
                self._check_alive(proc)
            if self.is_ready(state):
                return
            time.sleep(0.3)
        raise DevClusterError(f"kube-apiserver not ready after {timeout:.0f}s; "
                              f"last lines of {apiserver.log}:\n{_tail(apiserver.log)}")

    def _stop(self, proc: ProcessRecord, grace: float = 10.0) -> None:
        if not _pid_is(proc.pid, proc.binary):
            self._wait_gone(proc, timeout=grace)
            return
        try:
            os.kill(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        if self._wait_gone(proc, timeout=grace):
            return
        try:
            os.kill(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self._wait_gone(proc, timeout=grace)

    def _wait_gone(self, proc: ProcessRecord, timeout: float) -> bool:
        """Wait until every thread of `proc` has exited (and reap it if it is our child).
        A zombie group leader is not enough: its other threads may still hold its sockets."""
        child = self._children.get(proc.pid)
        if child is not None:
            try:
                child.wait(timeout=timeout)  # returns once the whole thread group is gone
            except subprocess.TimeoutExpired:
                return False
            self._children.pop(proc.pid, None)
            return True
        deadline = time.monotonic() + timeout
        while _threads_alive(proc.pid, proc.binary):
            _reap(proc.pid)
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        _reap(proc.pid)
        return True

    def _wait_ports_free(self, ports: list[int], timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while busy := [port for port in ports if port_in_use(port)]:
            if time.monotonic() >= deadline:
                raise DevClusterError(f"port(s) {busy} on 127.0.0.1 still in use {timeout:.0f}s after "
                                      "the process that held them stopped; free them and restart")
            time.sleep(0.1)

    # -- kubeconfig --------------------------------------------------------------------
    def _write_kubeconfig(self, pki: Pki, state: ClusterState) -> None:
        write_kubeconfig(self.kubeconfig, state.server, pki.ca_cert, "scalegate-dev-admin",
                         client_cert=pki.admin_cert, client_key=pki.admin_key)


def write_kubeconfig(path: Path, server: str, ca_cert: Path, user: str, *, client_cert: Path | None = None,
                     client_key: Path | None = None, token: str | None = None) -> Path:
    """A self-contained kubeconfig (credentials embedded) for one user."""
    def b64(p: Path) -> str:
        return base64.b64encode(p.read_bytes()).decode()

    credentials: dict[str, str] = {}
    if token:
        credentials["token"] = token
    if client_cert and client_key:
        credentials["client-certificate-data"] = b64(client_cert)
        credentials["client-key-data"] = b64(client_key)
    config = {
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": CONTEXT_NAME, "cluster": {"server": server, "certificate-authority-data": b64(ca_cert)}}],
        "users": [{"name": user, "user": credentials}],
        "contexts": [{"name": CONTEXT_NAME, "context": {"cluster": CONTEXT_NAME, "user": user}}],
        "current-context": CONTEXT_NAME,
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(config, sort_keys=False))
    tmp.chmod(0o600)
    tmp.replace(path)
    return path


def _reap(pid: int) -> None:
    """Collect the exit status if `pid` is our child, so it does not linger as a zombie."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def _rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)
