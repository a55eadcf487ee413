"""Settings of both components, from one path: defaults, then the environment (the
ConfigMap `scalegate-config` reaches the Pods as environment variables), then flags.

Each field names its environment variable in its metadata; the command line defines its
flags with default None, so "not given" is told apart from "given as the default".
Ground floor: no I/O besides reading the environment it is handed.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import socket
from dataclasses import dataclass, field
from typing import Any, Mapping, TypeVar

Settings = TypeVar("Settings")


class SettingsError(ValueError):
    """A setting has a value it cannot take; the message names the setting and the value."""


def _env(name: str | None) -> dict[str, Any]:
    return {"env": name}


@dataclass(frozen=True)
class OperatorSettings:
    """`scalegate operator`."""

    workers: int = field(default=16, metadata=_env("SCALEGATE_WORKERS"))
    """Proposals reconciled at once; each holds a thread while it talks to the API server."""
    retention_seconds: float = field(default=7 * 86400, metadata=_env("SCALEGATE_RETENTION_SECONDS"))
    """Terminal proposals older than this are deleted (0 keeps them forever)."""
    gc_interval_seconds: float = field(default=3600, metadata=_env("SCALEGATE_GC_INTERVAL_SECONDS"))
    """How often terminal proposals are swept for deletion."""
    metrics_bind_address: str = field(default=":8000", metadata=_env("SCALEGATE_METRICS_BIND_ADDRESS"))
    """HOST:PORT for /metrics (":8000" is every address; "0" disables)."""
    health_probe_bind_address: str = field(default=":8080", metadata=_env("SCALEGATE_HEALTH_PROBE_BIND_ADDRESS"))
    """HOST:PORT for /healthz, the liveness and readiness probe ("0" disables)."""
    kubeconfig: str | None = field(default=None, metadata=_env("SCALEGATE_KUBECONFIG"))
    """Kubeconfig to use; None: $KUBECONFIG, else ~/.kube/config, else in-cluster (kube.load_config)."""
    leader_elect: bool = field(default=False, metadata=_env("SCALEGATE_LEADER_ELECT"))
    """Act only while holding the leader Lease, so that several replicas can run and one acts
    (manifests/ turns it on). Off by default, as in controller-runtime: one operator run by
    hand, in the demo or in tests then needs no Lease RBAC and, after a crash, does not wait
    for its predecessor's Lease to expire."""
    leader_elect_lease_duration: float = field(default=15.0, metadata=_env("SCALEGATE_LEADER_ELECT_LEASE_DURATION"))
    """Seconds a standby waits, after it last saw the Lease renewed, before it takes over."""
    leader_elect_renew_deadline: float = field(default=10.0, metadata=_env("SCALEGATE_LEADER_ELECT_RENEW_DEADLINE"))
    """Seconds after the start of its last successful renewal that a leader stops acting."""
    leader_elect_retry_period: float = field(default=2.0, metadata=_env("SCALEGATE_LEADER_ELECT_RETRY_PERIOD"))
    """Seconds between attempts to acquire or renew the Lease."""
    leader_elect_lease_name: str = field(default="scalegate-operator",
                                         metadata=_env("SCALEGATE_LEADER_ELECT_LEASE_NAME"))
    """Name of the leader Lease (the operator's Role may update only this one)."""
    leader_elect_namespace: str | None = field(default=None, metadata=_env("SCALEGATE_LEADER_ELECT_NAMESPACE"))
    """Namespace of the leader Lease; None: the Pod's ($POD_NAMESPACE), else scalegate."""


@dataclass(frozen=True)
class ForecasterSettings:
    """`scalegate forecaster` and `scalegate forecast`."""

    prometheus_url: str = field(default="http://localhost:9090", metadata=_env("SCALEGATE_PROMETHEUS_URL"))
    """Prometheus base URL."""
    prometheus_token_file: str | None = field(default=None, metadata=_env("SCALEGATE_PROMETHEUS_TOKEN_FILE"))
    """File with a bearer token for Prometheus (re-read by each process at start)."""
    prometheus_ca_file: str | None = field(default=None, metadata=_env("SCALEGATE_PROMETHEUS_CA_FILE"))
    """CA bundle to verify Prometheus' certificate."""
    prometheus_insecure: bool = field(default=False, metadata=_env("SCALEGATE_PROMETHEUS_INSECURE"))
    """Do not verify Prometheus' certificate (testing only)."""
    prometheus_timeout: float = field(default=30.0, metadata=_env("SCALEGATE_PROMETHEUS_TIMEOUT_SECONDS"))
    """Seconds per Prometheus query."""
    metrics_bind_address: str = field(default=":8001", metadata=_env("SCALEGATE_FORECASTER_METRICS_BIND_ADDRESS"))
    """HOST:PORT for /metrics ("0" disables)."""
    refit_interval_seconds: float = field(default=3600.0, metadata=_env("SCALEGATE_REFIT_INTERVAL_SECONDS"))
    """Longest time a policy's fit is kept, at most its horizon; rounds between re-score the kept
    forecast instead of refitting (`forecast.refit`). 0 refits every round."""
    status_refresh_seconds: float = field(default=3600.0, metadata=_env("SCALEGATE_STATUS_REFRESH_SECONDS"))
    """Longest a policy's status goes unwritten while its verdict (ForecastReady, lastProposal)
    is unchanged, i.e. how old its lastForecastTime may be (`forecaster.status_write_needed`).
    0 writes it every round."""
    shards: int = field(default=0, metadata=_env("SCALEGATE_FORECASTER_SHARDS"))
    """Shards the policies are split into, each held by one replica through its own Lease
    (`shards.py`); 0 turns sharding off: this process forecasts every policy and needs no
    Lease (one forecaster run by hand, in the demo or in tests). manifests/ sets 8. Every
    replica must be given the same number."""
    shard_lease_duration: float = field(default=15.0, metadata=_env("SCALEGATE_SHARD_LEASE_DURATION"))
    """Seconds a replica waits, after it last saw a shard's Lease renewed, before it takes the shard over."""
    shard_renew_deadline: float = field(default=10.0, metadata=_env("SCALEGATE_SHARD_RENEW_DEADLINE"))
    """Seconds after the start of its last successful renewal that a replica stops writing for a shard."""
    shard_retry_period: float = field(default=2.0, metadata=_env("SCALEGATE_SHARD_RETRY_PERIOD"))
    """Seconds between rounds of acquiring, renewing and releasing shard Leases."""
    shard_namespace: str | None = field(default=None, metadata=_env("SCALEGATE_SHARD_NAMESPACE"))
    """Namespace of the shard Leases; None: the Pod's ($POD_NAMESPACE), else scalegate."""
    kubeconfig: str | None = field(default=None, metadata=_env("SCALEGATE_KUBECONFIG"))
    """Kubeconfig to use; None: $KUBECONFIG, else ~/.kube/config, else in-cluster (kube.load_config)."""


def add_prometheus_flags(parser: argparse.ArgumentParser, url_help: str | None = None) -> None:
    """The flags of ForecasterSettings' Prometheus fields, for `scalegate forecast`,
    `scalegate forecaster` and `kubectl scalegate explain` alike. Their defaults are None
    ("not given"): `resolve` fills in the environment's value, then the built-in default."""
    env = {spec.name: spec.metadata.get("env") for spec in dataclasses.fields(ForecasterSettings)}
    default = ForecasterSettings()
    parser.add_argument("--prometheus-url", metavar="URL", help=url_help or (
        f"Prometheus base URL (env {env['prometheus_url']}; default {default.prometheus_url})"))
    parser.add_argument("--prometheus-token-file", metavar="FILE",
                        help=f"file with a bearer token for Prometheus (env {env['prometheus_token_file']})")
    parser.add_argument("--prometheus-ca-file", metavar="FILE",
                        help=f"CA bundle to verify Prometheus' certificate (env {env['prometheus_ca_file']})")
    parser.add_argument("--prometheus-insecure", action="store_true", default=None,
                        help=f"do not verify Prometheus' certificate, testing only "
                             f"(env {env['prometheus_insecure']})")
    parser.add_argument("--prometheus-timeout", type=float, metavar="SECONDS",
                        help=f"seconds per query (env {env['prometheus_timeout']}; "
                             f"default {default.prometheus_timeout:g})")


_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off", ""}


def _convert(raw: str, kind: Any, where: str) -> Any:
    text = raw.strip()
    try:
        if kind in (int, "int"):
            return int(text)
        if kind in (float, "float"):
            value = float(text)
            if value != value or value in (float("inf"), float("-inf")):
                raise ValueError
            return value
        if kind in (bool, "bool"):
            if text.lower() in _TRUE:
                return True
            if text.lower() in _FALSE:
                return False
            raise ValueError
    except ValueError:
        raise SettingsError(f"{where}={raw!r} is not a valid {getattr(kind, '__name__', kind)}") from None
    return text or None if "None" in str(kind) else text


def resolve(cls: type[Settings], flags: Mapping[str, Any] | None = None,
            environ: Mapping[str, str] | None = None) -> Settings:
    """Defaults, overridden by the environment, overridden by flags that were given
    (None means not given). Unknown keys in `flags` are ignored: argparse namespaces
    carry more than settings."""
    environ = os.environ if environ is None else environ
    flags = flags or {}
    values: dict[str, Any] = {}
    for spec in dataclasses.fields(cls):  # type: ignore[arg-type]
        name = spec.metadata.get("env")
        if flags.get(spec.name) is not None:
            values[spec.name] = flags[spec.name]
        elif name and name in environ:
            values[spec.name] = _convert(environ[name], spec.type, name)
    settings = cls(**values)
    for address_field in ("metrics_bind_address", "health_probe_bind_address"):
        if hasattr(settings, address_field):
            bind_address(getattr(settings, address_field), address_field)  # refuse a bad one at start
    return settings


def bind_address(value: str, where: str = "bind address") -> tuple[str, int] | None:
    """"HOST:PORT", ":PORT" (every address) or "0" (disabled) to (host, port) or None."""
    text = (value or "").strip()
    if text in ("", "0"):
        return None
    host, sep, port = text.rpartition(":")
    if not sep:
        raise SettingsError(f"{where} {value!r} must be HOST:PORT, :PORT or 0")
    host = host.strip("[]") or "0.0.0.0"
    try:
        number = int(port)
    except ValueError:
        raise SettingsError(f"{where} {value!r}: {port!r} is not a port number") from None
    if not 0 < number < 65536:
        raise SettingsError(f"{where} {value!r}: port {number} is out of range")
    return host, number


def process_identity() -> str:
    """Who this process is, for kopf's peering records and logs: the Pod's name (downward
    API, POD_NAME) or the host name and pid. Never a passwd look-up: the image's uid has
    no passwd entry, and getpass.getuser() raises there."""
    pod = os.environ.get("POD_NAME") or os.environ.get("POD_ID")
    return pod or f"{socket.gethostname()}/{os.getpid()}"
