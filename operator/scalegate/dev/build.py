"""Build etcd and the Kubernetes control-plane binaries from their Go modules.

Everything comes through the Go module proxy: no release tarballs, no images. Each
component is built in its own scratch module (etcd and Kubernetes pin different
versions of shared dependencies), once, and cached under the cache directory keyed by
version, so later runs only check that the binary is there and reports its version.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .versions import ETCD_VERSION, KUBERNETES_VERSION, staging_version

Log = Callable[[str], None]


class BuildError(RuntimeError):
    """A binary could not be built; the message says what and how to see why."""


@dataclass(frozen=True)
class Binaries:
    etcd: Path
    kube_apiserver: Path
    kube_controller_manager: Path
    kubectl: Path


def default_cache_dir() -> Path:
    override = os.environ.get("SCALEGATE_CACHE_DIR")
    if override:
        return Path(override).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base) / "scalegate"


def _go_env() -> dict[str, str]:
    env = dict(os.environ)
    # Build with the installed toolchain: a toolchain download is not a module.
    env["GOTOOLCHAIN"] = "local"
    env["GOFLAGS"] = "-mod=mod -buildvcs=false"
    return env


def _require_go() -> str:
    go = shutil.which("go")
    if not go:
        raise BuildError(
            "the Go toolchain ('go') is not on PATH: it is needed once, to build etcd and "
            "kube-apiserver from their modules. Install Go >= 1.26 and try again."
        )
    return go


def _tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(text[-lines:])


def _run_with_progress(cmd: list[str], cwd: Path, log_file: Path, what: str, log: Log) -> None:
    """Run a long command, appending its output to log_file and reporting elapsed time."""
    started = time.monotonic()
    done = threading.Event()

    def ticker() -> None:
        while not done.wait(30):
            log(f"  ... still {what} ({time.monotonic() - started:.0f}s elapsed)")

    thread = threading.Thread(target=ticker, daemon=True)
    thread.start()
    try:
        with open(log_file, "ab") as out:
            out.write(f"\n$ {' '.join(cmd)}\n".encode())
            out.flush()
            proc = subprocess.run(cmd, cwd=cwd, env=_go_env(), stdout=out, stderr=subprocess.STDOUT)
    finally:
        done.set()
        thread.join()
    if proc.returncode != 0:
        raise BuildError(
            f"{what} failed (exit {proc.returncode}); last lines of {log_file}:\n{_tail(log_file)}"
        )
    log(f"  {what}: done in {time.monotonic() - started:.0f}s")


def _binary_reports(binary: Path, expected: str) -> bool:
    if not binary.exists():
        return False
    args = ["version", "--client"] if binary.name.startswith("kubectl") else ["--version"]
    try:
        out = subprocess.run([str(binary), *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return expected.lstrip("v") in (out.stdout + out.stderr)


def _staging_modules(go: str, kubernetes_version: str, workdir: Path) -> list[str]:
    """The k8s.io/* modules that k8s.io/kubernetes requires at v0.0.0 (its staging tree)."""
    out = subprocess.run(
        [go, "mod", "download", "-json", f"k8s.io/kubernetes@{kubernetes_version}"],
        cwd=workdir, env=_go_env(), capture_output=True, text=True,
    )
    if out.returncode != 0:
        raise BuildError(f"could not fetch k8s.io/kubernetes@{kubernetes_version}: {out.stderr.strip()}")
    gomod = Path(json.loads(out.stdout)["GoMod"]).read_text()
    modules = []
    for line in gomod.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0].startswith("k8s.io/") and parts[1] == "v0.0.0":
            modules.append(parts[0])
    if not modules:
        raise BuildError("found no staging modules in k8s.io/kubernetes's go.mod; its layout changed")
    return modules


def _kube_ldflags(version: str) -> str:
    major, minor = version.lstrip("v").split(".")[:2]
    pkg = "k8s.io/component-base/version"
    return " ".join([
        "-s -w",
        f"-X {pkg}.gitVersion={version}",
        f"-X {pkg}.gitMajor={major}",
        f"-X {pkg}.gitMinor={minor}",
        f"-X {pkg}.gitTreeState=clean",
        f"-X {pkg}.buildDate=1970-01-01T00:00:00Z",
    ])


KUBERNETES_COMMANDS = ("kube-apiserver", "kube-controller-manager", "kubectl")


def kubernetes_binary(cache_dir: Path, command: str, version: str = KUBERNETES_VERSION) -> Path:
    return cache_dir / "bin" / f"{command}-{version}"


def build_kubernetes(cache_dir: Path, log: Log, version: str = KUBERNETES_VERSION) -> dict[str, Path]:
    """kube-apiserver, kube-controller-manager and a matching kubectl for `version`,
    built once and cached."""
    bin_dir = cache_dir / "bin"
    wanted = [(kubernetes_binary(cache_dir, cmd, version), f"cmd/{cmd}") for cmd in KUBERNETES_COMMANDS]
    built = {Path(cmd).name: path for path, cmd in wanted}
    missing = [(path, cmd) for path, cmd in wanted if not _binary_reports(path, version)]
    if not missing:
        return built

    go = _require_go()
    workdir = cache_dir / "build" / f"kubernetes-{version}"
    workdir.mkdir(parents=True, exist_ok=True)
    bin_dir.mkdir(parents=True, exist_ok=True)
    log_file = workdir / "build.log"
    log(f"building Kubernetes {version} control plane from Go modules (once; log: {log_file})")

    # A module with replace directives cannot be `go install`ed, so require it from a
    # scratch module that replaces each staging module with its published version.
    (workdir / "go.mod").write_text(
        f"module scalegate.local/kubernetes-build\n\ngo 1.26.0\n\nrequire k8s.io/kubernetes {version}\n")
    staging = _staging_modules(go, version, workdir)
    replaces = "\n".join(f"\t{m} => {m} {staging_version(version)}" for m in staging)
    (workdir / "go.mod").write_text(
        "module scalegate.local/kubernetes-build\n\ngo 1.26.0\n\n"
        f"require k8s.io/kubernetes {version}\n\nreplace (\n{replaces}\n)\n"
    )
    imports = "\n".join(f'\t_ "k8s.io/kubernetes/{cmd}"' for _, cmd in wanted)
    (workdir / "tools.go").write_text(f"//go:build tools\n\npackage tools\n\nimport (\n{imports}\n)\n")
    _run_with_progress([go, "mod", "tidy"], workdir, log_file, "resolving Kubernetes modules", log)
    for path, cmd in missing:
        tmp = path.with_suffix(".tmp")
        _run_with_progress(
            [go, "build", "-o", str(tmp), "-ldflags", _kube_ldflags(version), f"k8s.io/kubernetes/{cmd}"],
            workdir, log_file, f"compiling {Path(cmd).name} {version}", log,
        )
        tmp.replace(path)  # atomic: a killed build never leaves a half-written binary
    return built


def build_etcd(cache_dir: Path, log: Log, version: str = ETCD_VERSION) -> Path:
    """etcd `version`, built once from go.etcd.io/etcd/server/v3 and cached."""
    binary = cache_dir / "bin" / f"etcd-{version}"
    if _binary_reports(binary, version):
        return binary
    go = _require_go()
    workdir = cache_dir / "build" / f"etcd-{version}"
    workdir.mkdir(parents=True, exist_ok=True)
    binary.parent.mkdir(parents=True, exist_ok=True)
    log_file = workdir / "build.log"
    log(f"building etcd {version} from Go modules (once; log: {log_file})")
    (workdir / "go.mod").write_text(
        f"module scalegate.local/etcd-build\n\ngo 1.26.0\n\nrequire go.etcd.io/etcd/server/v3 {version}\n"
    )
    (workdir / "main.go").write_text(
        'package main\n\nimport (\n\t"os"\n\n\t"go.etcd.io/etcd/server/v3/etcdmain"\n)\n\n'
        "func main() { etcdmain.Main(os.Args) }\n"
    )
    _run_with_progress([go, "mod", "tidy"], workdir, log_file, "resolving etcd modules", log)
    tmp = binary.with_suffix(".tmp")
    _run_with_progress([go, "build", "-o", str(tmp), "-ldflags", "-s -w", "."], workdir, log_file,
                       f"compiling etcd {version}", log)
    tmp.replace(binary)
    return binary


def ensure_binaries(cache_dir: Path | None = None, log: Log = print) -> Binaries:
    cache_dir = cache_dir or default_cache_dir()
    etcd = build_etcd(cache_dir, log)
    kube = build_kubernetes(cache_dir, log)
    return Binaries(etcd=etcd, kube_apiserver=kube["kube-apiserver"],
                    kube_controller_manager=kube["kube-controller-manager"], kubectl=kube["kubectl"])


def kubectl_path(cache_dir: Path | None = None) -> str:
    """The kubectl built with the control plane (matching its version), else the one on PATH."""
    built = kubernetes_binary(cache_dir or default_cache_dir(), "kubectl")
    if built.exists():
        return str(built)
    return shutil.which("kubectl") or "kubectl"
