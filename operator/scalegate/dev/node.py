"""A real node for the dev cluster: containerd and a kubelet as local processes, so the
image runs as Pods the way a user's cluster runs it (ServiceAccount token mounted,
probes, SIGTERM, a uid without a passwd entry), without Docker.

The node has no scheduler, no Pod network and no kube-proxy: Pods name the node
(`nodeName`) and use the host's network, and everything they talk to is on 127.0.0.1
(manifests/overlays/dev-node). The kubelet registers no address (it refuses a loopback
node IP, and any other address of this machine is not for tests), so nothing ever dials
the node from outside loopback.

Both binaries are built once from their Go modules and cached, like the control plane:
the kubelet in the same scratch module as kube-apiserver (sharing its build cache),
containerd in its own. Running a node changes the machine; `up` writes down, before it
starts anything, what it is about to change, and `down` undoes exactly that: the
containers and their processes, mounts, the kubelet's cgroups, the kernel settings the
kubelet adjusts, and every directory it created outside its state directory.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from .build import (
    BuildError,
    Log,
    _binary_reports,
    _kube_ldflags,
    _require_go,
    _run_with_progress,
    build_kubernetes,
    default_cache_dir,
    kubectl_path,
    kubernetes_binary,
)
from .cluster import DevCluster, DevClusterError, ProcessRecord, _pid_is, _reap, _tail, free_port, write_kubeconfig
from .image import PAUSE_IMAGE, ensure_pause_image
from .pki import issue_client_cert
from .versions import KUBERNETES_VERSION

CONTAINERD_VERSION = "v2.4.2"
"""containerd 2.x: the CRI that kubelet 1.37 needs (Debian's containerd 1.6 is too old)."""
CONTAINERD_COMMANDS = ("containerd", "ctr", "containerd-shim-runc-v2")
NODE_NAME = "scalegate-dev-node"
API_PORT = 6443
"""The API server port that manifests/overlays/dev-node assumes (`dev-cluster up --node`
asks for it unless SCALEGATE_DEV_CLUSTER_PORT names another)."""
CRI_NAMESPACE = "k8s.io"

# What the kubelet sets when it starts (pkg/kubelet/cm: setupKernelTunables), to restore.
KUBELET_SYSCTLS = ("vm/overcommit_memory", "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops",
                   "kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes")
# Paths outside the state directory that the kubelet or containerd create whatever they
# are told (hard-coded in their sources): removed by `down` when `up` found them absent.
HARDCODED_PATHS = ("/var/lib/kubelet", "/var/log/containers", "/var/log/pods", "/run/containerd",
                   "/var/run/nri", "/opt/containerd")
CGROUP_ROOT = "/sys/fs/cgroup"
KUBEPODS = "kubepods"


class NodeError(RuntimeError):
    """The node could not be started or stopped; the message says why."""


# -- build ------------------------------------------------------------------------------
@dataclass(frozen=True)
class NodeBinaries:
    kubelet: Path
    containerd_dir: Path
    """containerd, ctr and containerd-shim-runc-v2: containerd finds the shim on PATH
    under exactly that name, so the three live in one directory per version."""

    @property
    def containerd(self) -> Path:
        return self.containerd_dir / "containerd"

    @property
    def ctr(self) -> Path:
        return self.containerd_dir / "ctr"

    @property
    def shim(self) -> Path:
        return self.containerd_dir / "containerd-shim-runc-v2"


def build_kubelet(cache_dir: Path, log: Log, version: str = KUBERNETES_VERSION) -> Path:
    """The kubelet `version`, built once in the control plane's scratch module (same
    dependencies, same build cache: about a minute after kube-apiserver) and cached."""
    binary = kubernetes_binary(cache_dir, "kubelet", version)
    if _binary_reports(binary, version):
        return binary
    workdir = cache_dir / "build" / f"kubernetes-{version}"
    if not (workdir / "go.mod").exists():
        build_kubernetes(cache_dir, log, version)  # lays out the scratch module
    go = _require_go()
    log(f"building kubelet {version} from Go modules (once; log: {workdir / 'build.log'})")
    tmp = binary.with_suffix(".tmp")
    _run_with_progress([go, "build", "-o", str(tmp), "-ldflags", _kube_ldflags(version),
                        "k8s.io/kubernetes/cmd/kubelet"],
                       workdir, workdir / "build.log", f"compiling kubelet {version}", log)
    tmp.replace(binary)
    return binary


def _containerd_reports(directory: Path, version: str) -> bool:
    for command in CONTAINERD_COMMANDS:
        binary = directory / command
        if not binary.exists():
            return False
        args = ["-v"] if command.startswith("containerd-shim") else ["--version"]
        try:
            out = subprocess.run([str(binary), *args], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return False
        if version not in out.stdout + out.stderr:
            return False
    return True


def build_containerd(cache_dir: Path, log: Log, version: str = CONTAINERD_VERSION) -> Path:
    """containerd, ctr and the runc shim `version`, built once from their Go module and
    cached in one directory. Static (CGO_ENABLED=0), without the btrfs snapshotter (the
    one part that needs C headers); runc itself is Debian's."""
    directory = cache_dir / "bin" / f"containerd-{version}"
    if _containerd_reports(directory, version):
        return directory
    go = _require_go()
    workdir = cache_dir / "build" / f"containerd-{version}"
    workdir.mkdir(parents=True, exist_ok=True)
    log_file = workdir / "build.log"
    log(f"building containerd {version} from Go modules (once; log: {log_file})")
    module = "github.com/containerd/containerd/v2"
    (workdir / "go.mod").write_text(
        f"module scalegate.local/containerd-build\n\ngo 1.26.0\n\nrequire {module} {version}\n")
    imports = "\n".join(f'\t_ "{module}/cmd/{command}"' for command in CONTAINERD_COMMANDS)
    (workdir / "tools.go").write_text(f"//go:build tools\n\npackage tools\n\nimport (\n{imports}\n)\n")
    _run_with_progress([go, "mod", "tidy"], workdir, log_file, "resolving containerd modules", log)
    staging = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    ldflags = f"-s -w -X {module}/version.Version={version}"
    for command in CONTAINERD_COMMANDS:
        _run_with_progress(["env", "CGO_ENABLED=0", go, "build", "-tags", "no_btrfs", "-o", str(staging / command),
                            "-ldflags", ldflags, f"{module}/cmd/{command}"],
                           workdir, log_file, f"compiling {command} {version}", log)
    shutil.rmtree(directory, ignore_errors=True)
    staging.replace(directory)  # a killed build never leaves a half-filled directory
    return directory


def ensure_node_binaries(cache_dir: Path | None = None, log: Log = print) -> NodeBinaries:
    cache_dir = cache_dir or default_cache_dir()
    return NodeBinaries(kubelet=build_kubelet(cache_dir, log), containerd_dir=build_containerd(cache_dir, log))


def prepare(repo: Path | str = ".", cache_dir: Path | None = None, log: Log = print) -> bool:
    """Build, or find cached, everything the dev node's tests need: the kubelet,
    containerd, the base, pause and scalegate images. False (and why, in the log) where
    this machine cannot run a node, so that callers go on without it."""
    from .image import ensure_images, image_support

    reason = node_support() or image_support()
    if reason:
        log(f"no dev node on this machine ({reason}); its end-to-end tests will be skipped")
        return False
    ensure_node_binaries(cache_dir, log)
    ensure_images(Path(repo), cache_dir, log)
    return True


# -- can this machine run a node? -------------------------------------------------------
def node_support() -> str | None:
    """None when this machine can run the dev node, else why not (tests skip with it)."""
    if not Path("/proc/self/mountinfo").exists():
        return "not Linux: the kubelet and containerd need Linux namespaces and cgroups"
    if os.geteuid() != 0:
        return "not root: the kubelet and containerd mount filesystems and create cgroups"
    if not shutil.which("runc"):
        return "runc is not installed (Debian: apt-get install runc)"
    if "overlay" not in Path("/proc/filesystems").read_text():
        return "the kernel has no overlay filesystem, which containerd's snapshotter needs"
    return _cgroups_unusable()


def _cgroup_hierarchies() -> list[Path]:
    """The directories where the kubelet (cgroupfs driver) creates its `kubepods` cgroup:
    every mounted hierarchy (v1 controllers, the named systemd one, the unified v2 one)."""
    hierarchies = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        fstype = right.split(" ", 1)[0]
        mount_point = _unescape(left.split(" ")[4])
        if fstype in ("cgroup", "cgroup2") and mount_point.startswith(CGROUP_ROOT):
            hierarchies.append(Path(mount_point))
    return sorted(set(hierarchies))


def _cgroups_unusable() -> str | None:
    hierarchies = _cgroup_hierarchies()
    if not hierarchies:
        return f"no cgroup hierarchy is mounted under {CGROUP_ROOT}"
    names = {h.name for h in hierarchies}
    if hierarchies != [Path(CGROUP_ROOT)] and not {"cpu", "memory", "pids"} <= names:
        return f"cgroup v1 without the cpu, memory and pids controllers (mounted: {', '.join(sorted(names))})"
    probe = hierarchies[0] / f"scalegate-probe-{os.getpid()}"
    try:
        probe.mkdir()
        probe.rmdir()
    except OSError as err:
        return f"cgroups are not writable here ({probe.parent}: {err.strerror})"
    return None


def _unescape(path: str) -> str:
    """Mount points in /proc/self/mountinfo escape space, tab, newline and backslash in octal."""
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        path = path.replace(code, char)
    return path


def mounts_under(*roots: Path) -> list[str]:
    """Mount points at or below any of `roots`, deepest first (the order to unmount in)."""
    prefixes = [str(root).rstrip("/") for root in roots]
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        mount_point = _unescape(line.split(" ")[4])
        if any(mount_point == p or mount_point.startswith(p + "/") for p in prefixes):
            found.append(mount_point)
    return sorted(set(found), key=lambda m: (m.count("/"), len(m)), reverse=True)


def kubelet_path_env(path: str | None = None) -> str:
    """PATH for the kubelet without iptables on it. Its iptables chains only serve
    kube-proxy (a hint of the iptables mode, a guard for NodePorts on loopback), which the
    dev node does not run, and with iptables-nft they leave tables behind that iptables
    cannot remove; without iptables the kubelet says so and leaves the firewall alone."""
    kept = [d for d in (path if path is not None else os.environ.get("PATH", "")).split(os.pathsep)
            if d and not Path(d, "iptables").exists()]
    return os.pathsep.join(kept)


# -- configuration ----------------------------------------------------------------------
def containerd_config(*, root: Path, runtime_dir: Path, cni_dir: Path, runc: str) -> str:
    """containerd's configuration: everything it keeps under `root` (images, snapshots) or
    `runtime_dir` (sockets, container state), nothing in /etc, /opt or /run/containerd."""
    return f"""\
version = 3
root = '{root}'
state = '{runtime_dir / "containerd"}'
imports = []
# opt creates /opt/containerd; NRI listens on /var/run/nri: the dev node needs neither.
disabled_plugins = ['io.containerd.internal.v1.opt', 'io.containerd.nri.v1.nri']

[plugins]
  [plugins.'io.containerd.cri.v1.images']
    snapshotter = 'overlayfs'
    [plugins.'io.containerd.cri.v1.images'.pinned_images]
      # Built locally and imported: no registry is reachable.
      sandbox = '{PAUSE_IMAGE}'
  [plugins.'io.containerd.cri.v1.runtime']
    # runc may not lower its own oom_score_adj here ("can't get final child's PID from pipe").
    restrict_oom_score_adj = true
    cdi_spec_dirs = []
    [plugins.'io.containerd.cri.v1.runtime'.containerd]
      default_runtime_name = 'runc'
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
        runtime_type = 'io.containerd.runc.v2'
        [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
          BinaryName = '{runc}'
          Root = '{runtime_dir / "runc"}'
          # The kubelet's cgroup driver: cgroupfs (no systemd on these machines).
          SystemdCgroup = false
    [plugins.'io.containerd.cri.v1.runtime'.cni]
      # No Pod network: an empty configuration directory. Pods use the host's network.
      bin_dirs = ['{cni_dir / "bin"}']
      conf_dir = '{cni_dir / "net.d"}'
  [plugins.'io.containerd.grpc.v1.cri']
    stream_server_address = '127.0.0.1'
    stream_server_port = '0'
  [plugins.'io.containerd.server.v1.grpc']
    address = '{runtime_dir / "containerd.sock"}'
  [plugins.'io.containerd.server.v1.ttrpc']
    address = '{runtime_dir / "containerd.sock.ttrpc"}'
  [plugins.'io.containerd.shim.v1.manager']
    # Shim sockets are named by a 64-character hash: the directory must be short.
    socket_dir = '{runtime_dir / "s"}'
"""


def kubelet_config(*, runtime_socket: Path, port: int, healthz_port: int, client_ca: Path, pod_logs: Path) -> dict:
    """The KubeletConfiguration: on 127.0.0.1 only, requests authenticated by the cluster's
    CA or a token and authorized by the API server (no anonymous access, no read-only port)."""
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
        # Hybrid cgroup v1 machines: kubelet 1.35+ refuses cgroup v1 unless told otherwise.
        "failCgroupV1": False,
        "cgroupDriver": "cgroupfs",
        "containerRuntimeEndpoint": f"unix://{runtime_socket}",
        "address": "127.0.0.1", "port": port, "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1", "healthzPort": healthz_port,
        "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": True},
                           "x509": {"clientCAFile": str(client_ca)}},
        "authorization": {"mode": "Webhook"},
        "podLogsDir": str(pod_logs),
        "failSwapOn": False,
        # A dev machine's disk may be fuller than a node's; evict only when it is truly full,
        # and never collect images: the loaded ones cannot be pulled again.
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "nodefs.inodesFree": "1%",
                         "imagefs.available": "1%", "imagefs.inodesFree": "1%"},
        "imageGCHighThresholdPercent": 100, "imageGCLowThresholdPercent": 99,
        "maxPods": 30,
        "rotateCertificates": False, "serverTLSBootstrap": False,
    }


# -- state ------------------------------------------------------------------------------
@dataclass
class NodeState:
    node_name: str
    runtime_dir: str
    kubelet_port: int
    healthz_port: int
    processes: list[ProcessRecord] = field(default_factory=list)
    sysctls: dict[str, str] = field(default_factory=dict)
    """Values of KUBELET_SYSCTLS before the kubelet started."""
    created_paths: list[str] = field(default_factory=list)
    """HARDCODED_PATHS that did not exist before `up`."""
    created_cgroups: list[str] = field(default_factory=list)
    """`kubepods` cgroups that did not exist before `up`."""
    started_at: float = 0.0


def default_node_dir(cluster: DevCluster) -> Path:
    """Beside the cluster's state directory, never inside it: the cluster's `down` removes
    its directory, which must not reach into the node's mounts."""
    return cluster.state_dir.with_name(cluster.state_dir.name + "-node")


def _runtime_dir(node_dir: Path) -> Path:
    """Sockets and container state: short paths (a unix socket path has 107 bytes at most)
    on the machine's tmpfs, one per node directory."""
    digest = hashlib.sha256(str(node_dir.resolve()).encode()).hexdigest()[:10]
    base = Path("/run") if os.access("/run", os.W_OK) else Path("/tmp")
    return base / f"scalegate-node-{digest}"


class DevNode:
    """The node (containerd + kubelet) of the dev cluster `cluster`, state in `node_dir`."""

    def __init__(self, cluster: DevCluster, node_dir: Path | None = None, cache_dir: Path | None = None,
                 log: Log = print):
        self.cluster = cluster
        self.node_dir = Path(node_dir) if node_dir else default_node_dir(cluster)
        self.cache_dir = Path(cache_dir) if cache_dir else cluster.cache_dir
        self.log = log
        self.runtime_dir = _runtime_dir(self.node_dir)
        self._binaries: NodeBinaries | None = None
        self._containerd_dir: Path | None = None  # where ctr and the shim are, once known
        self._children: dict[int, subprocess.Popen] = {}  # processes this object started

    # -- paths -------------------------------------------------------------------------
    @property
    def state_file(self) -> Path:
        return self.node_dir / "state.json"

    @property
    def socket(self) -> Path:
        return self.runtime_dir / "containerd.sock"

    @property
    def kubelet_root(self) -> Path:
        return self.node_dir / "kubelet"

    @property
    def pod_logs(self) -> Path:
        return self.node_dir / "pod-logs"

    @property
    def binaries(self) -> NodeBinaries:
        """Built (once) on first use."""
        if self._binaries is None:
            self._binaries = ensure_node_binaries(self.cache_dir, self.log)
            self._containerd_dir = self._binaries.containerd_dir
        return self._binaries

    def _containerd_binaries(self, state: NodeState | None = None) -> Path:
        """ctr's and the shim's directory: the running containerd's (`down` never builds)."""
        if self._containerd_dir is None:
            record = next((p for p in (state.processes if state else []) if p.name == "containerd"), None)
            self._containerd_dir = Path(record.binary).parent if record else self.binaries.containerd_dir
        return self._containerd_dir

    def read_state(self) -> NodeState | None:
        try:
            raw = json.loads(self.state_file.read_text())
            raw["processes"] = [ProcessRecord(**p) for p in raw["processes"]]
            return NodeState(**raw)
        except FileNotFoundError:
            return None
        except (ValueError, TypeError, KeyError) as err:
            raise NodeError(f"node state {self.state_file} is unreadable ({err}); "
                            "undo by hand what it recorded, then remove it") from None

    def _write_state(self, state: NodeState) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(state), indent=2))
        tmp.replace(self.state_file)

    # -- commands ----------------------------------------------------------------------
    def up(self, timeout: float = 120.0) -> NodeState:
        """Start containerd and the kubelet for the running dev cluster, unless they run;
        return once the node is registered and its kubelet healthy."""
        reason = node_support()
        if reason:
            raise NodeError(f"this machine cannot run the dev node: {reason}")
        cluster_state = self.cluster.read_state()
        if cluster_state is None:
            raise NodeError("the dev cluster is not running; start it first (`scalegate dev-cluster up`)")
        state = self.read_state()
        if state is not None:
            if all(_pid_is(p.pid, p.binary) for p in state.processes) and self._kubelet_healthy(state):
                self.log(f"dev node {state.node_name} already running ({self.node_dir})")
                return state
            self.log("found an earlier dev node that is not healthy; undoing it and starting afresh")
            self.down(quiet=True)
        self._refuse_a_second_kubelet()
        binaries = self.binaries
        pause_archive = ensure_pause_image(self.cache_dir, self.log)  # the sandbox every Pod starts in
        started = time.monotonic()
        state = NodeState(node_name=NODE_NAME, runtime_dir=str(self.runtime_dir),
                          kubelet_port=free_port(), healthz_port=free_port(), started_at=time.time())
        # What the node will change, written down before anything changes it.
        state.sysctls = {name: _read_sysctl(name) for name in KUBELET_SYSCTLS}
        state.created_paths = [p for p in HARDCODED_PATHS if not os.path.lexists(p)]
        state.created_cgroups = [str(h / KUBEPODS) for h in _cgroup_hierarchies() if not (h / KUBEPODS).exists()]
        for directory in (self.node_dir, self.runtime_dir):
            directory.mkdir(parents=True, exist_ok=True)
        self._write_state(state)
        try:
            self._start_containerd(binaries, state)
            self._write_state(state)
            self.import_image(pause_archive)
            self._forget_node()  # an earlier node's object would pass for this one's registration
            self._authorize_kubelet()
            self._start_kubelet(binaries, state)
            self._write_state(state)
            self._wait_registered(state, timeout)
        except BaseException:
            self.down(quiet=True, keep_logs=True)
            raise
        self.log(f"dev node {NODE_NAME} ready in {time.monotonic() - started:.1f}s "
                 f"(kubelet on 127.0.0.1:{state.kubelet_port}; Pod logs in {self.pod_logs})")
        if cluster_state.api_port != API_PORT:
            self.log(f"note: the API server listens on {cluster_state.api_port}, not {API_PORT} as "
                     "manifests/overlays/dev-node assumes: set KUBERNETES_SERVICE_PORT in the ConfigMap "
                     "scalegate/scalegate-config to it")
        return state

    def down(self, quiet: bool = False, keep_logs: bool = False) -> None:
        """Stop the node and undo what `up` recorded; safe to repeat, and after a failed `up`."""
        state = self.read_state()
        if state is None:
            if not quiet:
                self.log("dev node is not running (no state)")
            return
        problems: list[str] = []
        self._containerd_binaries(state)
        kubelet = [p for p in state.processes if p.name == "kubelet"]
        for proc in kubelet:  # first, so it restarts nothing that is being removed
            _stop(proc, grace=10)
        self._remove_containers(state)
        for proc in state.processes:
            if proc.name != "kubelet":
                _stop(proc, grace=10)
        self._kill_leftovers(state)
        for mount_point in mounts_under(self.node_dir, Path(state.runtime_dir)):
            if subprocess.run(["umount", mount_point], capture_output=True).returncode != 0:
                if subprocess.run(["umount", "-l", mount_point], capture_output=True).returncode != 0:
                    problems.append(f"could not unmount {mount_point}")
        for cgroup in state.created_cgroups:
            problems += _remove_cgroup_tree(Path(cgroup))
        for name, value in state.sysctls.items():
            if value and _read_sysctl(name) != value:
                try:
                    Path("/proc/sys", name).write_text(value)
                except OSError as err:
                    problems.append(f"could not restore {name.replace('/', '.')}={value}: {err.strerror}")
        for path in state.created_paths:
            _remove(Path(path))
        if "/var/log/containers" not in state.created_paths:
            _remove_links_into(Path("/var/log/containers"), self.pod_logs)
        self._forget_node()
        still_mounted = mounts_under(self.node_dir, Path(state.runtime_dir))
        if still_mounted:  # removing files there would reach into the mounted filesystems
            raise NodeError("the dev node stopped, but these are still mounted, so its directories stay: "
                            + ", ".join(still_mounted) + ("\n  " + "\n  ".join(problems) if problems else ""))
        _remove(Path(state.runtime_dir))
        if keep_logs:
            for entry in self.node_dir.iterdir():
                if entry.suffix != ".log":
                    _remove(entry)
        else:
            _remove(self.node_dir)
        if problems:
            raise NodeError("the dev node stopped, but not everything could be undone:\n  " + "\n  ".join(problems))
        if not quiet:
            self.log(f"dev node stopped; machine restored; removed {self.node_dir}")

    def status(self) -> dict:
        state = self.read_state()
        if state is None:
            return {"running": False, "nodeDir": str(self.node_dir)}
        return {
            "running": all(_pid_is(p.pid, p.binary) for p in state.processes),
            "healthy": self._kubelet_healthy(state), "node": state.node_name, "nodeDir": str(self.node_dir),
            "podLogs": str(self.pod_logs),
            "processes": [{"name": p.name, "pid": p.pid, "alive": _pid_is(p.pid, p.binary), "log": p.log}
                          for p in state.processes],
        }

    # -- images ------------------------------------------------------------------------
    def ctr(self, *args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
        """`ctr` against this node's containerd, in the namespace the kubelet uses."""
        ctr = self._containerd_binaries() / "ctr"
        proc = subprocess.run([str(ctr), "--address", str(self.socket), "--namespace", CRI_NAMESPACE,
                               *args], capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise NodeError(f"ctr {' '.join(args)} failed: {proc.stderr.strip()[-1500:]}")
        return proc

    def import_image(self, archive: Path) -> None:
        """Load an image archive (`podman save`) into the node, where Pods find it by name."""
        self.ctr("images", "import", "--snapshotter", "overlayfs", str(archive))

    def images(self) -> list[str]:
        return [line for line in self.ctr("images", "list", "--quiet").stdout.splitlines() if line]

    # -- processes ---------------------------------------------------------------------
    def _spawn(self, name: str, binary: Path, args: list[str], state: NodeState, env: dict) -> ProcessRecord:
        log_path = self.node_dir / f"{name}.log"
        with open(log_path, "ab") as out:
            proc = subprocess.Popen([str(binary), *args], stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True, cwd=self.node_dir, env=env)
        self._children[proc.pid] = proc
        record = ProcessRecord(name=name, pid=proc.pid, binary=str(binary), log=str(log_path), args=list(args))
        state.processes.append(record)
        return record

    def _check_alive(self, record: ProcessRecord) -> None:
        child = self._children.get(record.pid)
        # Our own child: poll() is exact, while /proc may still show the parent just after fork.
        exited = child.poll() is not None if child else not _pid_is(record.pid, record.binary)
        if exited:
            raise NodeError(f"{record.name} exited during start; last lines of {record.log}:\n{_tail(record.log)}")

    def _start_containerd(self, binaries: NodeBinaries, state: NodeState) -> None:
        cni = self.node_dir / "cni"
        for directory in (cni / "bin", cni / "net.d", self.node_dir / "containerd"):
            directory.mkdir(parents=True, exist_ok=True)
        config = self.node_dir / "containerd.toml"
        config.write_text(containerd_config(root=self.node_dir / "containerd", runtime_dir=self.runtime_dir,
                                            cni_dir=cni, runc=shutil.which("runc") or "runc"))
        env = dict(os.environ, PATH=f"{binaries.containerd_dir}{os.pathsep}{os.environ.get('PATH', '')}")
        record = self._spawn("containerd", binaries.containerd, ["--config", str(config)], state, env)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            self._check_alive(record)
            if self.socket.exists() and self.ctr("version", check=False, timeout=10).returncode == 0:
                return
            time.sleep(0.2)
        raise NodeError(f"containerd did not answer in 30s; last lines of {record.log}:\n{_tail(record.log)}")

    def _authorize_kubelet(self) -> None:
        """The kubelet's identity: a client certificate for system:node:NAME in
        system:nodes, bound to the built-in ClusterRole system:node (the dev cluster
        authorizes with RBAC only, without the Node authorizer)."""
        user = f"system:node:{NODE_NAME}"
        cert, key = issue_client_cert(self.cluster.pki, user, ("system:nodes",), self.node_dir)
        cluster_state = self.cluster.read_state()
        if cluster_state is None:
            raise NodeError("the dev cluster stopped while its node was starting")
        write_kubeconfig(self.node_dir / "kubelet.kubeconfig", cluster_state.server, self.cluster.pki.ca_cert, user,
                         client_cert=cert, client_key=key)
        binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                   "metadata": {"name": NODE_NAME, "labels": {"app.kubernetes.io/part-of": "scalegate-dev-node"}},
                   "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:node"},
                   "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]}
        self._kubectl("apply", "-f", "-", input=json.dumps(binding))

    def _start_kubelet(self, binaries: NodeBinaries, state: NodeState) -> None:
        self.kubelet_root.mkdir(parents=True, exist_ok=True)
        self.pod_logs.mkdir(parents=True, exist_ok=True)
        config = self.node_dir / "kubelet.yaml"
        config.write_text(yaml.safe_dump(kubelet_config(
            runtime_socket=self.socket, port=state.kubelet_port, healthz_port=state.healthz_port,
            client_ca=self.cluster.pki.ca_cert, pod_logs=self.pod_logs), sort_keys=False))
        path = kubelet_path_env()
        if not shutil.which("mount", path=path):
            raise NodeError("`mount` is not on PATH apart from the directory that holds iptables; "
                            "the kubelet needs mount and not iptables")
        self._spawn("kubelet", binaries.kubelet, [
            f"--config={config}",
            f"--kubeconfig={self.node_dir / 'kubelet.kubeconfig'}",
            f"--root-dir={self.kubelet_root}",
            f"--cert-dir={self.kubelet_root / 'pki'}",  # else /var/lib/kubelet/pki
            f"--hostname-override={NODE_NAME}",
            # Refused as a node address (loopback), which is the point: the node publishes
            # no address, so no one reaches it but over 127.0.0.1.
            "--node-ip=127.0.0.1",
            "--v=1",
        ], state, dict(os.environ, PATH=path))

    def _kubelet_healthy(self, state: NodeState) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{state.healthz_port}/healthz", timeout=3) as resp:
                return resp.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def _wait_registered(self, state: NodeState, timeout: float) -> None:
        kubelet = next(p for p in state.processes if p.name == "kubelet")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for proc in state.processes:
                self._check_alive(proc)
            if self._kubelet_healthy(state) and self._node_registered():
                return
            time.sleep(0.5)
        raise NodeError(f"the kubelet did not register node {NODE_NAME} in {timeout:.0f}s; "
                        f"last lines of {kubelet.log}:\n{_tail(kubelet.log)}")

    def _node_registered(self) -> bool:
        return self._kubectl("get", "node", NODE_NAME, check=False).returncode == 0

    def _kubectl(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run([kubectl_path(self.cache_dir), f"--kubeconfig={self.cluster.kubeconfig}", *args],
                              input=input, capture_output=True, text=True, timeout=60)
        if check and proc.returncode != 0:
            raise NodeError(f"kubectl {' '.join(args)} failed: {proc.stderr.strip()}")
        return proc

    def _refuse_a_second_kubelet(self) -> None:
        """One kubelet per machine: two would share the kubepods cgroups."""
        for hierarchy in _cgroup_hierarchies():
            busy = _cgroup_processes(hierarchy / KUBEPODS)
            if busy:
                raise NodeError(f"another kubelet's Pods run on this machine ({hierarchy / KUBEPODS} holds "
                                f"{len(busy)} processes); stop that node first (`scalegate dev-cluster down`)")

    # -- teardown ----------------------------------------------------------------------
    def _remove_containers(self, state: NodeState) -> None:
        """Every task and container of this containerd, killed and deleted while it still
        answers: the shims exit with their last task."""
        containerd = next((p for p in state.processes if p.name == "containerd"), None)
        if containerd is None or not _pid_is(containerd.pid, containerd.binary) or not self.socket.exists():
            return
        tasks = self.ctr("tasks", "list", "--quiet", check=False, timeout=30).stdout.split()
        for task in tasks:
            self.ctr("tasks", "kill", "--all", "--signal", "SIGKILL", task, check=False, timeout=30)
        deadline = time.monotonic() + 15
        for task in tasks:
            while self.ctr("tasks", "delete", task, check=False, timeout=30).returncode != 0:
                if time.monotonic() > deadline or task not in self.ctr("tasks", "list", "--quiet", check=False).stdout:
                    break
                time.sleep(0.2)
        for container in self.ctr("containers", "list", "--quiet", check=False, timeout=30).stdout.split():
            self.ctr("containers", "delete", container, check=False, timeout=30)

    def _kill_leftovers(self, state: NodeState) -> None:
        """Processes the node started that outlived containerd: shims of this containerd
        (its binary, its socket) and anything left in the kubepods cgroups it created."""
        shim = str(self._containerd_binaries(state) / "containerd-shim-runc-v2")
        for pid in _pids():
            try:
                exe = os.readlink(f"/proc/{pid}/exe")
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if exe == shim and str(self.socket).encode() in cmdline:
                _kill(pid)
        for cgroup in state.created_cgroups:
            for pid in _cgroup_processes(Path(cgroup)):
                _kill(pid)

    def _forget_node(self) -> None:
        """The Node object and the kubelet's binding, while the API server still answers."""
        if self.cluster.read_state() is None or not self.cluster.kubeconfig.exists():
            return
        self._kubectl("delete", "node", NODE_NAME, "--ignore-not-found", "--wait=false", check=False)
        self._kubectl("delete", "clusterrolebinding", NODE_NAME, "--ignore-not-found", check=False)


# -- helpers ----------------------------------------------------------------------------
def _read_sysctl(name: str) -> str:
    try:
        return Path("/proc/sys", name).read_text().strip()
    except OSError:
        return ""


def _stop(proc: ProcessRecord, grace: float) -> None:
    """SIGTERM the recorded process (if it is still the one recorded), SIGKILL after `grace`."""
    if not _pid_is(proc.pid, proc.binary):
        return
    try:
        os.kill(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        _reap(proc.pid)
        if not _pid_is(proc.pid, proc.binary):
            return
        time.sleep(0.1)
    _kill(proc.pid)


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        _reap(pid)
        try:
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] == "Z":
                break  # a zombie of another parent: gone as far as the machine is concerned
        except OSError:
            break
        time.sleep(0.05)


def _pids() -> list[int]:
    return [int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()]


def _cgroup_processes(cgroup: Path) -> list[int]:
    if not cgroup.is_dir():
        return []
    pids: list[int] = []
    for procs in cgroup.rglob("cgroup.procs"):
        try:
            pids += [int(line) for line in procs.read_text().split()]
        except (OSError, ValueError):
            continue
    return pids


def _remove_cgroup_tree(cgroup: Path) -> list[str]:
    """rmdir a cgroup and its children, deepest first (cgroup directories hold no files
    that can be deleted: rmdir is the only way, and only once they hold no process)."""
    if not cgroup.is_dir():
        return []
    children = sorted((d for d in cgroup.rglob("*") if d.is_dir()), key=lambda d: len(d.parts), reverse=True)
    problems = []
    for directory in [*children, cgroup]:
        for attempt in range(50):
            try:
                directory.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError as err:
                if attempt == 49:
                    problems.append(f"could not remove cgroup {directory}: {err.strerror}")
                time.sleep(0.1)
    return problems


def _remove_links_into(directory: Path, target: Path) -> None:
    """The kubelet's symlinks in a shared directory (/var/log/containers) that point into
    this node's Pod logs."""
    if not directory.is_dir():
        return
    for entry in directory.iterdir():
        try:
            if entry.is_symlink() and str(Path(os.readlink(entry))).startswith(str(target)):
                entry.unlink()
        except OSError:
            continue


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    elif path.exists():
        shutil.rmtree(path, ignore_errors=True)


__all__ = [
    "API_PORT", "CONTAINERD_VERSION", "DevNode", "NODE_NAME", "NodeBinaries", "NodeError", "NodeState",
    "PAUSE_IMAGE", "BuildError", "DevClusterError", "ensure_node_binaries", "node_support",
]
