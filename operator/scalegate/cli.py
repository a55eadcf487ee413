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
