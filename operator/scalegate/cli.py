"""`scalegate ...`: entry points, wiring only."""

from __future__ import annotations

import argparse
import json
import sys

from . import __version__


def _dev_cluster(args: argparse.Namespace) -> int:
    from .devcluster import BuildError, DevCluster, DevClusterError

    cluster = DevCluster(log=lambda msg: print(msg, file=sys.stderr, flush=True))
    try:
        if args.action == "up":
            cluster.up(timeout=args.timeout)
            print(cluster.env())
        elif args.action == "down":
            cluster.down()
        elif args.action == "env":
            if cluster.read_state() is None:
                print("dev cluster is not running; start it with `scalegate dev-cluster up`", file=sys.stderr)
                return 1
            print(cluster.env())
        elif args.action == "status":
            status = cluster.status()
            print(json.dumps(status, indent=2))
            return 0 if status.get("running") and status.get("ready") else 1
    except (BuildError, DevClusterError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


def _operator(args: argparse.Namespace) -> int:
    import logging
    import os

    import kopf

    from . import handlers

    if args.kubeconfig:
        os.environ["KUBECONFIG"] = args.kubeconfig  # kopf's login and ours read the same file
    kopf.configure(verbose=args.verbose, log_format=kopf.LogFormat.JSON if args.log_format == "json"
                   else kopf.LogFormat.FULL)
    logging.getLogger("scalegate").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    settings = handlers.OperatorSettings(
        workers=args.workers, retention_seconds=args.retention, gc_interval_seconds=args.gc_interval,
        metrics_port=args.metrics_port, kubeconfig=args.kubeconfig)
    namespaces = args.namespace or []
    kopf.run(
        standalone=True,  # one replica; a second one would need kopf peering
        clusterwide=not namespaces,
        namespaces=namespaces,
        liveness_endpoint=args.liveness or None,
        memo=kopf.Memo(settings=settings),
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scalegate",
        description="Forecast-driven, human-approved scaling for Kubernetes workloads.",
    )
    parser.add_argument("--version", action="version", version=f"scalegate {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    dev = sub.add_parser("dev-cluster", help="a real local control plane (etcd + kube-apiserver)",
                         description="Run a real local Kubernetes control plane as local processes.")
    dev.add_argument("action", choices=["up", "down", "env", "status"])
    dev.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for readiness (up)")
    dev.set_defaults(func=_dev_cluster)

    op = sub.add_parser("operator", help="run the operator (applies approved proposals)",
                        description="Watch ScalingProposals and apply approved ones within their "
                                    "ScalingPolicy's bounds. Same as `kopf run -m scalegate.handlers`.")
    scope = op.add_mutually_exclusive_group()
    scope.add_argument("-n", "--namespace", action="append", metavar="NS",
                       help="watch only this namespace (repeatable; globs allowed)")
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="watch all namespaces (default)")
    op.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster, else $KUBECONFIG)")
    op.add_argument("--workers", type=int, default=16, help="proposals reconciled at once (default 16)")
    op.add_argument("--retention", type=float, default=7 * 86400, metavar="SECONDS",
                    help="delete terminal proposals this long after they finished; 0 keeps them (default 7 days)")
    op.add_argument("--gc-interval", type=float, default=3600, metavar="SECONDS",
                    help="how often old terminal proposals are swept (default 3600)")
    op.add_argument("--metrics-port", type=int, default=8000, help="port for /metrics; 0 disables (default 8000)")
    op.add_argument("--liveness", default="http://0.0.0.0:8080/healthz",
                    help="liveness endpoint URL; empty disables (default http://0.0.0.0:8080/healthz)")
    op.add_argument("--log-format", choices=["json", "plain"], default="plain", help="log format (default plain)")
    op.add_argument("-v", "--verbose", action="store_true")
    op.set_defaults(func=_operator)

    _register_optional(sub)
    return parser


def _register_optional(sub) -> None:
    """Subcommands that live in their own modules register themselves here."""
    try:  # TEMPORARY while the forecaster lands; removed before the first CI run
        from .forecast import backtest_cli
    except ImportError:
        return
    backtest_cli.register(sub)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
