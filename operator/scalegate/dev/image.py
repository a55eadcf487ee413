"""scalegate's image, built without Docker and without a registry, for the dev node.

- The base: no registry is reachable, so the image that operator/Dockerfile starts `FROM`
  is made here: a minimal Debian with Python (mmdebstrap), imported into podman and
  tagged with the name the Dockerfile asks for, so `podman build --pull=never` finds it.
  Built once (about 2 minutes) and kept in scalegate's own podman storage.
- The image: `podman build --pull=never -f operator/Dockerfile .`, exactly the Dockerfile
  users build with Docker. pip inside the build reaches PyPI; where outgoing TLS is
  re-signed by a proxy (extra CAs in /usr/local/share/ca-certificates), the host's CA
  bundle is mounted into the build's RUN steps, never copied into the image.
- The pause image (the sandbox every Pod starts with): Kubernetes' own pause.c from the
  k8s.io/kubernetes module, compiled statically, in a `FROM scratch` image.
- Into the node: `podman save` and `ctr images import`.

podman runs with scalegate's configuration and storage (under the cache directory), not
the machine's: storage driver overlay, cgroup manager cgroupfs, runtime runc, host network,
and the ulimits a build process may not raise by itself here.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from .build import Log, _run_with_progress, default_cache_dir
from .versions import KUBERNETES_VERSION

IMAGE = "localhost/scalegate:dev"
"""What manifests/overlays/dev-node runs."""
PAUSE_IMAGE = "localhost/scalegate/pause:3.10"
"""The sandbox image; containerd's configuration names it (dev/node.py)."""
BASE_SUITE = "bookworm"
BASE_PACKAGES = ("python3", "python3-venv", "python3-pip", "python-is-python3", "ca-certificates")
DEBIAN_MIRROR = "http://deb.debian.org/debian"
HOST_EXTRA_CAS = Path("/usr/local/share/ca-certificates")
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")

CONTAINERS_CONF = """\
[containers]
# The host's network: builds reach PyPI without a bridge, NAT or firewall rules.
netns = "host"
# A build's processes may not raise their own limits here; these are what pip and numpy need.
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
log_driver = "k8s-file"

[engine]
cgroup_manager = "cgroupfs"
# crun refuses the hybrid cgroup layout of these machines; runc does not.
runtime = "runc"
events_logger = "file"
"""


class ImageError(RuntimeError):
    """An image could not be built or loaded; the message says what and where to look."""


def image_support() -> str | None:
    """None when images can be built here, else why not."""
    if os.geteuid() != 0:
        return "not root: podman builds here with root's storage and runc"
    missing = [tool for tool in ("podman", "mmdebstrap", "runc") if not shutil.which(tool)]
    if missing:
        return f"{', '.join(missing)} not installed (Debian: apt-get install {' '.join(missing)})"
    return None


class Podman:
    """podman with scalegate's own configuration and storage under `cache_dir/podman`."""

    def __init__(self, cache_dir: Path | None = None, log: Log = print):
        self.cache_dir = cache_dir or default_cache_dir()
        self.home = self.cache_dir / "podman"
        self.log = log
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / "containers.conf").write_text(CONTAINERS_CONF)
        (self.home / "storage.conf").write_text(
            f'[storage]\ndriver = "overlay"\ngraphroot = "{self.home / "storage"}"\n'
            f'runroot = "{self.home / "run"}"\n')

    @property
    def env(self) -> dict[str, str]:
        return {"CONTAINERS_CONF": str(self.home / "containers.conf"),
                "CONTAINERS_STORAGE_CONF": str(self.home / "storage.conf")}

    def command(self, *args: str) -> list[str]:
        """A podman command line with this configuration (through env, so that it can run
        under the build log's progress reporting)."""
        return ["env", *(f"{k}={v}" for k, v in self.env.items()), "podman", *args]

    def run(self, *args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run(self.command(*args), capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
        if check and proc.returncode != 0:
            raise ImageError(f"podman {' '.join(args)} failed: {proc.stderr.strip()[-2000:]}")
        return proc

    def exists(self, ref: str) -> bool:
        return self.run("image", "exists", ref, check=False).returncode == 0

    def image_id(self, ref: str) -> str:
        return self.run("image", "inspect", "--format", "{{.Id}}", ref).stdout.strip()

    def long(self, args: list[str], what: str, cwd: Path) -> None:
        """A long podman command, its output in build.log, with progress."""
        from .build import BuildError

        try:
            _run_with_progress(self.command(*args), cwd, self.home / "build.log", what, self.log)
        except BuildError as err:
            raise ImageError(str(err)) from None


# -- the base ---------------------------------------------------------------------------
def _froms(dockerfile: Path) -> list[tuple[str, str | None]]:
    """Each FROM line's image and stage name (None when unnamed)."""
    froms = []
    for line in dockerfile.read_text().splitlines():
        match = re.match(r"\s*FROM\s+(?:--\S+\s+)*(\S+)(?:\s+AS\s+(\S+))?", line, re.IGNORECASE)
        if match:
            froms.append((match.group(1), match.group(2)))
    return froms


def dockerfile_bases(dockerfile: Path) -> list[str]:
    """The images a Dockerfile builds FROM (not its own stages, not scratch)."""
    stages: set[str] = set()
    bases: list[str] = []
    for image, stage in _froms(dockerfile):
        if image != "scratch" and image not in stages and image not in bases:
            bases.append(image)
        if stage:
            stages.add(stage)
    return bases


def dockerfile_stages(dockerfile: Path) -> list[str]:
    """The named stages before the last, the one the image is."""
    return [stage for _image, stage in _froms(dockerfile)[:-1] if stage]


def stage_tag(tag: str, stage: str) -> str:
    repository, _, version = tag.rpartition(":")
    return f"{repository}-stage-{stage}:{version}"


def base_tag() -> str:
    """Names what the base holds, so a change of suite, packages or mirror builds anew."""
    digest = hashlib.sha256(json.dumps([BASE_SUITE, BASE_PACKAGES, DEBIAN_MIRROR]).encode()).hexdigest()[:12]
    return f"localhost/scalegate-base:{BASE_SUITE}-{digest}"


def ensure_base(podman: Podman, names: list[str]) -> str:
    """The local Debian base, built once, tagged as each of `names` (the Dockerfile's FROM)."""
    tag = base_tag()
    if not podman.exists(tag):
        if not shutil.which("mmdebstrap"):
            raise ImageError("mmdebstrap is not installed (Debian: apt-get install mmdebstrap); it builds "
                             "the base image, since no registry is reachable")
        podman.log(f"building the base image {tag}: Debian {BASE_SUITE} minbase with "
                   f"{', '.join(BASE_PACKAGES)} (once; log: {podman.home / 'build.log'})")
        with tempfile.TemporaryDirectory(dir=podman.home) as scratch:
            tarball = Path(scratch) / "base.tar"
            from .build import BuildError

            try:
                _run_with_progress(["mmdebstrap", "--quiet", "--variant=minbase",
                                    f"--include={','.join(BASE_PACKAGES)}", BASE_SUITE, str(tarball), DEBIAN_MIRROR],
                                   Path(scratch),
                                   podman.home / "build.log", "bootstrapping Debian", podman.log)
            except BuildError as err:
                raise ImageError(str(err)) from None
            podman.run("import", "--change", 'CMD ["python3"]', str(tarball), tag, timeout=900)
    for name in names:
        podman.run("tag", tag, name)
    return tag


# -- the pause image --------------------------------------------------------------------
def _pause_source() -> Path:
    """build/pause/linux/pause.c of the Kubernetes release the node runs (its module is
    in the Go module cache since the control plane was built)."""
    with tempfile.TemporaryDirectory() as outside_any_module:  # no go.mod to read or change
        proc = subprocess.run(["go", "mod", "download", "-json", f"k8s.io/kubernetes@{KUBERNETES_VERSION}"],
                              cwd=outside_any_module, capture_output=True, text=True,
                              env=dict(os.environ, GOTOOLCHAIN="local"), timeout=900)
    if proc.returncode != 0:
        raise ImageError(f"could not fetch k8s.io/kubernetes@{KUBERNETES_VERSION}: {proc.stderr.strip()}")
    source = Path(json.loads(proc.stdout)["Dir"]) / "build" / "pause" / "linux" / "pause.c"
    if not source.exists():
        raise ImageError(f"{source} is missing: the Kubernetes module's layout changed")
    return source


def pause_archive_path(cache_dir: Path) -> Path:
    return cache_dir / "images" / f"pause-{PAUSE_IMAGE.rsplit(':', 1)[1]}-{KUBERNETES_VERSION}.tar"


def ensure_pause_image(cache_dir: Path | None = None, log: Log = print) -> Path:
    """The pause image as an archive to import, built once and cached."""
    cache_dir = cache_dir or default_cache_dir()
    archive = pause_archive_path(cache_dir)
    if archive.exists():
        return archive
    podman = Podman(cache_dir, log)
    if not podman.exists(PAUSE_IMAGE):
        compiler = shutil.which("cc") or shutil.which("gcc")
        if not compiler:
            raise ImageError("a C compiler (cc) is needed once, to build the pause image")
        log(f"building the pause image {PAUSE_IMAGE} from Kubernetes' pause.c")
        with tempfile.TemporaryDirectory() as context:
            binary = Path(context) / "pause"
            version = f"-DVERSION={PAUSE_IMAGE.rsplit(':', 1)[1]}-scalegate"
            compiled = subprocess.run([compiler, "-Os", "-Wall", "-Werror", "-static", version, "-o", str(binary),
                                       str(_pause_source())], capture_output=True, text=True)
            if compiled.returncode != 0:
                raise ImageError(f"compiling pause.c failed (static libc needed: Debian's libc6-dev):\n"
                                 f"{compiled.stderr.strip()}")
            subprocess.run(["strip", str(binary)], capture_output=True)
            # As Kubernetes' own pause image: the binary alone, as nobody.
            (Path(context) / "Containerfile").write_text(
                'FROM scratch\nCOPY pause /pause\nUSER 65535:65535\nENTRYPOINT ["/pause"]\n')
            podman.run("build", "--pull=never", "--quiet", "-t", PAUSE_IMAGE, context)
    return save(podman, PAUSE_IMAGE, archive)


# -- scalegate's image ------------------------------------------------------------------
def build_image(repo: Path, cache_dir: Path | None = None, log: Log = print, tag: str = IMAGE) -> str:
    """`podman build --pull=never -f operator/Dockerfile` of the checkout at `repo`;
    returns the image id. Layers are cached: an unchanged tree builds in seconds."""
    podman = Podman(cache_dir, log)
    dockerfile = repo / "operator" / "Dockerfile"
    ensure_base(podman, dockerfile_bases(dockerfile))
    build = ["build", "--pull=never", "-f", str(dockerfile)]
    if any(HOST_EXTRA_CAS.glob("*.crt")) and HOST_CA_BUNDLE.exists():
        # Outgoing TLS is re-signed here: trust it inside the build's RUN steps only.
        build += ["--volume", f"{HOST_CA_BUNDLE}:{HOST_CA_BUNDLE}:ro"]
    log(f"building {tag} from {dockerfile} with podman (log: {podman.home / 'build.log'})")
    started = int(time.time())
    # Each earlier stage is tagged too, so that it is kept as the next build's layer cache
    # and what an earlier build left untagged can go.
    for stage in dockerfile_stages(dockerfile):
        podman.long([*build, "--target", stage, "-t", stage_tag(tag, stage), str(repo)],
                    f"building stage {stage}", repo)
    podman.long([*build, "-t", tag, str(repo)], f"building {tag}", repo)
    # A build of a changed tree leaves the images it replaces untagged: about 0.6 GB each.
    podman.run("image", "prune", "--force", "--filter", f"until={started}", check=False)
    return podman.image_id(tag)


def save(podman: Podman, ref: str, archive: Path) -> Path:
    """`podman save` of `ref` to `archive` (replaced atomically)."""
    archive.parent.mkdir(parents=True, exist_ok=True)
    tmp = archive.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)  # podman refuses to overwrite
    podman.run("save", "--quiet", "-o", str(tmp), ref, timeout=900)
    tmp.replace(archive)
    return archive


def load_into_node(node, refs: list[str], cache_dir: Path | None = None, log: Log = print) -> None:
    """Save each image from podman and import it into the dev node's containerd (a
    `scalegate.dev.node.DevNode` that is up)."""
    podman = Podman(cache_dir, log)
    with tempfile.TemporaryDirectory(dir=podman.home) as scratch:
        for ref in refs:
            archive = save(podman, ref, Path(scratch) / "image.tar")
            log(f"loading {ref} into the dev node")
            node.import_image(archive)
            archive.unlink()


def ensure_images(repo: Path, cache_dir: Path | None = None, log: Log = print) -> None:
    """Everything the dev node's Pods need, built or found cached: base, pause, scalegate."""
    ensure_pause_image(cache_dir, log)
    build_image(repo, cache_dir, log)
