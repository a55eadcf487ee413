"""The dev node's pure parts: what it tells containerd and the kubelet, where it lets them
write, which iptables it hides, and which image the Dockerfile builds from."""

from __future__ import annotations

import time
import tomllib
from pathlib import Path

from harness import REPO

from scalegate.dev import image
from scalegate.dev.image import PAUSE_IMAGE, dockerfile_bases
from scalegate.dev.node import _unescape, containerd_config, kubelet_config, kubelet_path_env


def _paths(value) -> list[str]:
    if isinstance(value, dict):
        return [p for v in value.values() for p in _paths(v)]
    if isinstance(value, list):
        return [p for v in value for p in _paths(v)]
    return [value] if isinstance(value, str) and value.startswith("/") else []


def test_containerd_keeps_everything_in_its_own_directories(tmp_path: Path):
    root, runtime, cni = tmp_path / "root", Path("/run/scalegate-node-x"), tmp_path / "cni"
    config = tomllib.loads(containerd_config(root=root, runtime_dir=runtime, cni_dir=cni, runc="/usr/sbin/runc"))
    assert config["root"] == str(root) and config["state"] == str(runtime / "containerd")
    outside = [p for p in _paths(config) if not p.startswith((str(root), str(runtime), str(cni), "/usr/sbin/runc"))]
    assert outside == []
    assert {"io.containerd.internal.v1.opt", "io.containerd.nri.v1.nri"} <= set(config["disabled_plugins"])
    cri = config["plugins"]["io.containerd.cri.v1.runtime"]
    assert cri["restrict_oom_score_adj"] is True
    assert cri["containerd"]["runtimes"]["runc"]["options"]["SystemdCgroup"] is False
    assert config["plugins"]["io.containerd.cri.v1.images"]["pinned_images"]["sandbox"] == PAUSE_IMAGE
    # A shim socket is the directory plus a 64-character hash: it must fit in 107 bytes.
    assert len(config["plugins"]["io.containerd.shim.v1.manager"]["socket_dir"]) + 1 + 64 <= 107


def test_kubelet_listens_on_loopback_and_authenticates_every_request(tmp_path: Path):
    config = kubelet_config(runtime_socket=Path("/run/x/containerd.sock"), port=20250, healthz_port=20248,
                            client_ca=tmp_path / "ca.crt", pod_logs=tmp_path / "logs")
    assert (config["address"], config["healthzBindAddress"], config["readOnlyPort"]) == ("127.0.0.1", "127.0.0.1", 0)
    assert config["authentication"]["anonymous"]["enabled"] is False
    assert config["authorization"]["mode"] == "Webhook"
    assert (config["cgroupDriver"], config["failCgroupV1"]) == ("cgroupfs", False)
    assert config["imageGCHighThresholdPercent"] == 100  # loaded images cannot be pulled again


def test_kubelet_path_leaves_out_iptables_only(tmp_path: Path):
    sbin, bin_ = tmp_path / "sbin", tmp_path / "bin"
    for directory, tool in ((sbin, "iptables"), (bin_, "mount")):
        directory.mkdir()
        (directory / tool).write_text("")
    assert kubelet_path_env(f"{sbin}:{bin_}") == str(bin_)


def test_mountinfo_escapes_are_read_back():
    assert _unescape(r"/var/lib/with\040space\134and\011tab") == "/var/lib/with space\\and\ttab"


def test_the_base_is_tagged_as_what_the_dockerfile_builds_from(tmp_path: Path):
    assert dockerfile_bases(REPO / "operator" / "Dockerfile") == ["python:3.11.14-slim-bookworm"]
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("FROM --platform=linux/amd64 debian:12 AS build\nFROM build AS test\n"
                          "FROM scratch\nfrom alpine:3\n")
    assert dockerfile_bases(dockerfile) == ["debian:12", "alpine:3"]


class _RecordingPodman:
    """Podman's calls recorded, the images each build tags kept by name."""

    def __init__(self, home: Path):
        self.home, self.tags, self.calls = home, {}, []

    def image_id(self, ref: str) -> str:
        return self.tags[ref]

    def long(self, args, what, cwd) -> None:
        self.calls.append(tuple(args))
        self.tags[args[args.index("-t") + 1]] = f"sha256:{len(self.calls)}"

    def run(self, *args, **kwargs):
        self.calls.append(args)


def test_a_build_tags_each_stage_and_removes_only_what_earlier_builds_left(monkeypatch, tmp_path: Path):
    podman = _RecordingPodman(tmp_path)
    monkeypatch.setattr(image, "Podman", lambda cache_dir, log: podman)
    monkeypatch.setattr(image, "ensure_base", lambda podman, names: None)
    started = int(time.time())
    built = image.build_image(REPO, log=lambda message: None)
    assert built == podman.tags[image.IMAGE]
    # The build stage is tagged, so the prune keeps it as the next build's layer cache.
    assert image.dockerfile_stages(REPO / "operator" / "Dockerfile") == ["build"]
    assert image.stage_tag(image.IMAGE, "build") in podman.tags
    builds = [c for c in podman.calls if c[0] == "build"]
    assert [c[c.index("--target") + 1] for c in builds if "--target" in c] == ["build"]
    # Then untagged images older than this build go; this build's own stay.
    prunes = [c for c in podman.calls if c[:2] == ("image", "prune")]
    assert podman.calls[-1] in prunes and len(prunes) == 1
    until = int(prunes[0][prunes[0].index("--filter") + 1].removeprefix("until="))
    assert started <= until <= int(time.time())
