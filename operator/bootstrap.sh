#!/usr/bin/env bash
# One entry point for a fresh machine: installs what scalegate needs, then runs it.
#   bash operator/bootstrap.sh demo    # the whole loop on a local control plane
#   bash operator/bootstrap.sh test    # the whole test suite (extra args go to pytest)
#   bash operator/bootstrap.sh lint    # layer contracts, ruff, mypy (CI runs it before the tests)
#   bash operator/bootstrap.sh setup   # only install
set -euo pipefail
cd "$(dirname "$0")/.."
action="${1:-setup}"; shift || true

install_system_packages() {
  local missing=()
  command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
  if [ "$(id -u)" = 0 ]; then
    # The dev node of the end-to-end tests (tests/e2e), which needs root anyway: podman
    # builds the image on a base that mmdebstrap makes, runc runs the containers, and a
    # C compiler builds the pause image. Without root those tests are skipped.
    command -v podman >/dev/null 2>&1 || missing+=(podman)
    command -v mmdebstrap >/dev/null 2>&1 || missing+=(mmdebstrap)
    command -v runc >/dev/null 2>&1 || missing+=(runc)
    command -v cc >/dev/null 2>&1 || missing+=(gcc libc6-dev)
  fi
  if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
      echo "scalegate needs: ${missing[*]} (Debian packages); install them or run as root" >&2
      exit 1
    fi
    echo "== installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    # The package may start a system Prometheus; scalegate starts its own on free ports.
    (systemctl stop prometheus prometheus-node-exporter >/dev/null 2>&1 || true)
  fi
  command -v go >/dev/null 2>&1 || { echo "Go (>= 1.26) is needed once, to build the local control plane" >&2; exit 1; }
}

install_python() {
  # Reinstall when pyproject.toml changed since the last install (new dependencies).
  local wanted
  wanted=$(sha256sum pyproject.toml | cut -d' ' -f1)
  if [ ! -x .venv/bin/python ] || [ "$(cat .venv/.scalegate-pyproject 2>/dev/null)" != "$wanted" ] \
      || ! .venv/bin/python -c "import scalegate, scalegate.dev, pytest, hypothesis, matplotlib" >/dev/null 2>&1; then
    echo "== creating .venv and installing scalegate with its test extras"
    python3 -m venv .venv
    .venv/bin/pip install -q --upgrade pip
    .venv/bin/pip install -q -e '.[test]'
    echo "$wanted" > .venv/.scalegate-pyproject
  fi
}

install_system_packages
install_python
case "$action" in
  setup) ;;
  demo) exec .venv/bin/scalegate demo "$@" ;;
  lint)
    # The layers (import-linter contracts in pyproject.toml), style and types.
    .venv/bin/lint-imports
    .venv/bin/ruff check operator/scalegate tests benchmarks
    .venv/bin/mypy ;;
  test)
    # Build the control plane first, with progress, so the tests do not look hung.
    .venv/bin/python -c "from scalegate.dev import ensure_binaries; ensure_binaries()"
    # And the dev node's kubelet, containerd and images (cached like the control plane;
    # a failure here is reported again, in full, by the end-to-end tests).
    .venv/bin/python -c "from scalegate.dev.node import prepare; prepare('.')" \
      || echo "== the dev node could not be prepared; tests/e2e will say why" >&2
    exec .venv/bin/python -m pytest "$@" ;;
  *) echo "usage: bash operator/bootstrap.sh [setup|demo|test|lint] [args]" >&2; exit 2 ;;
esac
