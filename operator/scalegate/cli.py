"""`scalegate ...`: entry points, wiring only."""

from __future__ import annotations

import argparse
import json
import os
import sys

from . import __version__


def _dev_tooling_missing(err: ImportError) -> int:
    """Development tooling (local control plane, local Prometheus, demo) is an extra."""
    print(f"error: {err.name or err} is not installed: the development tooling comes with "
          "pip install 'scalegate[dev]' (bash operator/bootstrap.sh installs it)", file=sys.stderr)
    return 1


def _dev_cluster(args: argparse.Namespace) -> int:
    try:
        from .dev import BuildError, DevCluster, DevClusterError
    except ImportError as err:
        return _dev_tooling_missing(err)

    from .dev.image import ImageError
    from .dev.node import API_PORT, DevNode, NodeError

    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    if args.action == "up" and args.node:
        # The port that manifests/overlays/dev-node assumes, unless one is asked for.
        os.environ.setdefault("SCALEGATE_DEV_CLUSTER_PORT", str(API_PORT))
    cluster = DevCluster(log=log)
    try:
        if args.action == "up":
            cluster.up(timeout=args.timeout)
            if args.node:
                DevNode(cluster, log=log).up()
            print(cluster.env())
        elif args.action == "down":
            node = DevNode(cluster, log=log)
            if node.read_state() is not None:
                node.down()  # first: it undoes its changes to the machine
            cluster.down()
        elif args.action == "env":
            if cluster.read_state() is None:
                print("dev cluster is not running; start it with `scalegate dev-cluster up`", file=sys.stderr)
                return 1
            print(cluster.env())
        elif args.action == "status":
            status = cluster.status()
            status["node"] = DevNode(cluster, log=log).status()
            print(json.dumps(status, indent=2))
            return 0 if status.get("running") and status.get("ready") else 1
    except (BuildError, DevClusterError, NodeError, ImageError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


def _image(args: argparse.Namespace) -> int:
    from pathlib import Path

    try:
        from .dev import DevCluster, image
        from .dev.node import DevNode, NodeError
    except ImportError as err:
        return _dev_tooling_missing(err)

    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    context = Path(args.context)
    if not (context / "operator" / "Dockerfile").exists():
        print(f"error: {context.resolve()} is not a scalegate checkout (no operator/Dockerfile); "
              "run from its root or pass --context", file=sys.stderr)
        return 2
    try:
        node = DevNode(DevCluster(log=log), log=log)
        if args.load and node.read_state() is None:
            print("error: no dev node runs; start one with `scalegate dev-cluster up --node`", file=sys.stderr)
            return 1
        print(image.build_image(context, log=log, tag=args.tag))
        if args.load:
            image.load_into_node(node, [args.tag], log=log)
    except (image.ImageError, NodeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


def _operator(args: argparse.Namespace) -> int:
    import logging
    import os

    import kopf

    from . import handlers  # noqa: F401  (importing it registers the kopf handlers)
    from .leases import LeaseTimings
    from .settings import OperatorSettings, SettingsError, bind_address, process_identity, resolve

    try:
        settings = resolve(OperatorSettings, vars(args))
        LeaseTimings(settings.leader_elect_lease_duration, settings.leader_elect_renew_deadline,
                     settings.leader_elect_retry_period)
    except (SettingsError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if settings.kubeconfig:
        os.environ["KUBECONFIG"] = settings.kubeconfig  # kopf's login and ours read the same file
    kopf.configure(verbose=args.verbose, log_format=kopf.LogFormat.JSON if args.log_format == "json"
                   else kopf.LogFormat.FULL)
    logging.getLogger("scalegate").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    if not args.verbose:
        # kopf logs every watch event it hands to a handler; our own log has each outcome.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    health = bind_address(settings.health_probe_bind_address)
    namespaces = args.namespace or []
    kopf.run(
        # No kopf peering: with several replicas, scalegate's own Lease decides which one
        # acts (--leader-elect), and every replica keeps watching, so a standby is warm.
        standalone=True,
        clusterwide=not namespaces,
        namespaces=namespaces,
        # kopf's own guess of an identity asks for a user name, which a uid without a
        # passwd entry (the image's) does not have.
        # kopf types it as its own NewType(str), which it does not export.
        identity=process_identity(),  # type: ignore[arg-type]
        liveness_endpoint=f"http://{health[0]}:{health[1]}/healthz" if health else None,
        memo=kopf.Memo(settings=settings),
    )
    return 0


def _kube(kubeconfig: str | None):
    from .kube import Kube, api_client

    return Kube(api_client(kubeconfig), component="scalegate-forecaster")


def _forecaster_settings(args: argparse.Namespace):
    from .settings import ForecasterSettings, resolve

    return resolve(ForecasterSettings, vars(args))


def _prometheus(settings):
    from .forecast.prometheus import PrometheusSettings, PrometheusSource

    return PrometheusSource(PrometheusSettings.of(settings))


def _forecast_once(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .forecaster import Forecaster
    from .model import manifest_yaml

    settings = _forecaster_settings(args)
    namespace, _, name = args.policy.rpartition("/")
    namespace = namespace or args.namespace or "default"
    kube = _kube(settings.kubeconfig)
    body = kube.get_policy(namespace, name)
    if body is None:
        print(f"error: ScalingPolicy {namespace}/{name} not found", file=sys.stderr)
        return 1
    output_dir = Path(args.output_dir) if args.output_dir else None
    forecaster = Forecaster(kube=kube, source=_prometheus(settings), output=args.output, output_dir=output_dir)
    result = forecaster.run_policy(body)
    if args.output == "yaml" and result.proposal is not None:
        if output_dir is None:
            print(manifest_yaml(result.proposal), end="")
        else:
            print(f"wrote {output_dir / namespace / (result.proposal['metadata']['name'] + '.yaml')}",
                  file=sys.stderr)
    print(f"{namespace}/{name}: {result.outcome} ({result.reason}): {result.message}", file=sys.stderr)
    return 0 if result.outcome in ("proposed", "unchanged", "skipped") else 2


def _forecaster_loop(args: argparse.Namespace) -> int:
    import logging
    import os
    import signal
    import threading

    # One BLAS thread per fitting process (before numpy loads): the pool already has a
    # process per core, and more threads would only compete for the same cores.
    for variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(variable, "1")
    from . import metrics
    from .forecaster import Forecaster, default_pool, run_forever
    from .leases import LeaseTimings
    from .settings import SettingsError, bind_address, process_identity
    from .shards import ShardKeeper

    try:
        settings = _forecaster_settings(args)
        metrics_address = bind_address(settings.metrics_bind_address)
        if settings.shards < 0:
            raise SettingsError(f"--shards must be 0 (no sharding) or more, got {settings.shards}")
        shard_timings = LeaseTimings(settings.shard_lease_duration, settings.shard_renew_deadline,
                                     settings.shard_retry_period)
    except (SettingsError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(name)s [%(levelname)s] %(message)s")
    log = logging.getLogger("scalegate.forecaster")
    if metrics_address:
        metrics.serve(metrics_address[1], metrics_address[0])
    # SIGTERM (a Pod being stopped) ends the loop after the round in progress, so no
    # proposal is left half-written; a second signal exits at once.
    stopping = threading.Event()

    def on_signal(signum, _frame) -> None:
        if stopping.is_set():
            raise SystemExit(128 + signum)
        log.info("signal %d: stopping after the current round", signum)
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    pool = default_pool()
    kube = _kube(settings.kubeconfig)
    forecaster = Forecaster(kube=kube, source=_prometheus(settings), pool=pool,
                            refit_interval=settings.refit_interval_seconds,
                            status_refresh=settings.status_refresh_seconds)
    log.info("forecaster started as %s; Prometheus at %s", forecaster.identity, settings.prometheus_url)
    keeper = None
    if settings.shards:
        # Several replicas share the policies: this one forecasts the shards it holds, and
        # checks, before each write about a policy, that it still holds its shard.
        lease_namespace = settings.shard_namespace or os.environ.get("POD_NAMESPACE") or "scalegate"
        keeper = ShardKeeper(kube, lease_namespace, process_identity(), settings.shards, shard_timings).start()
        forecaster.may_write = keeper.holds_policy
        log.info("sharding: %d shards, Leases in %s, replica %s", settings.shards, lease_namespace,
                 process_identity())
    try:
        run_forever(forecaster, args.namespace, stop=stopping, shards=keeper)
    finally:
        if keeper is not None:
            keeper.stop(release=True)  # the other replicas take this one's shards at once
        pool.shutdown(wait=False, cancel_futures=True)
    log.info("forecaster stopped")
    return 0


def _demo(args: argparse.Namespace) -> int:
    try:
        from .dev import demo
    except ImportError as err:
        return _dev_tooling_missing(err)

    def log(message: str) -> None:
        print(message, flush=True)

    if args.action == "down":
        return demo.down(log=log)
    try:
        return demo.up(kubeconfig=args.kubeconfig, dev_cluster=args.dev_cluster, approve=args.approve, log=log)
    except Exception as err:  # say what failed and how to clean up, not a traceback
        print(f"error: {err}\nrun `scalegate demo down` to clean up what was started", file=sys.stderr)
        return 1


def _backtest(args: argparse.Namespace) -> int:
    from .forecast import backtest_cli

    parser = argparse.ArgumentParser(prog="scalegate")
    backtest_cli.register(parser.add_subparsers(dest="command"))
    real = parser.parse_args(["backtest", *args.rest])
    return real.func(real)


def _add_prometheus_flags(parser: argparse.ArgumentParser) -> None:
    from .settings import add_prometheus_flags

    add_prometheus_flags(parser)
    parser.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, else ~/.kube/config, "
                        "else in-cluster)")


def _flag_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is neither true nor false")


def _add_lease_timing_flags(group, prefix: str, env: str, lease: str) -> None:
    """The three timings of holding a Lease, named and defaulted as kube-controller-manager's."""
    group.add_argument(f"{prefix}-lease-duration", type=float, metavar="SECONDS",
                       help=f"how long another replica waits, after it last saw {lease} renewed, before taking "
                            f"it over (env {env}_LEASE_DURATION; default 15)")
    group.add_argument(f"{prefix}-renew-deadline", type=float, metavar="SECONDS",
                       help=f"the holder stops acting this long after the start of its last successful renewal of "
                            f"{lease} (env {env}_RENEW_DEADLINE; default 10)")
    group.add_argument(f"{prefix}-retry-period", type=float, metavar="SECONDS",
                       help=f"between attempts to acquire or renew {lease} (env {env}_RETRY_PERIOD; default 2)")


def _add_leader_election_flags(op: argparse.ArgumentParser) -> None:
    """The operator's leader election (issue 16): flags named as kube-controller-manager's."""
    le = op.add_argument_group("leader election", "Several replicas may run; only the one holding the Lease acts.")
    le.add_argument("--leader-elect", nargs="?", const=True, type=_flag_bool, metavar="BOOL",
                    help="act only while holding the leader Lease (env SCALEGATE_LEADER_ELECT; default false: one "
                         "operator needs no Lease; manifests/ sets it)")
    _add_lease_timing_flags(le, "--leader-elect", "SCALEGATE_LEADER_ELECT", "the Lease")
    le.add_argument("--leader-elect-lease-name", metavar="NAME",
                    help="the Lease's name (env SCALEGATE_LEADER_ELECT_LEASE_NAME; default scalegate-operator)")
    le.add_argument("--leader-elect-namespace", metavar="NS",
                    help="the Lease's namespace (env SCALEGATE_LEADER_ELECT_NAMESPACE; default: the Pod's, "
                         "$POD_NAMESPACE, else scalegate)")


def _add_shard_flags(fl: argparse.ArgumentParser) -> None:
    """The forecaster's shards (issue 16): several replicas share the policies."""
    sh = fl.add_argument_group("shards", "Several replicas share the policies by a stable hash of NAMESPACE/NAME; "
                               "each shard is held through its own Lease.")
    sh.add_argument("--shards", type=int, metavar="N",
                    help="shards to split the policies into; every replica must be given the same number; 0: no "
                         "sharding, this process forecasts every policy and needs no Lease "
                         "(env SCALEGATE_FORECASTER_SHARDS; default 0; manifests/ sets 8)")
    _add_lease_timing_flags(sh, "--shard", "SCALEGATE_SHARD", "a shard's Lease")
    sh.add_argument("--shard-namespace", metavar="NS",
                    help="namespace of the shard Leases (env SCALEGATE_SHARD_NAMESPACE; default: the Pod's, "
                         "$POD_NAMESPACE, else scalegate)")


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
    dev.add_argument("--node", action="store_true",
                     help="up: also a real node (containerd + kubelet, built once) that runs Pods on the "
                          "host's network; needs root (down always stops it)")
    dev.set_defaults(func=_dev_cluster)

    im = sub.add_parser("image", help="build scalegate's image with podman (no Docker) and load it into the dev node",
                        description="Build operator/Dockerfile with podman (--pull=never, on a locally built "
                                    "Debian base) and optionally load it into the dev node.")
    im.add_argument("action", choices=["build"])
    im.add_argument("--load", action="store_true", help="load it into the dev node (`dev-cluster up --node`)")
    im.add_argument("--tag", default="localhost/scalegate:dev", help="image name (default: what "
                    "manifests/overlays/dev-node runs)")
    im.add_argument("--context", default=".", help="the scalegate checkout to build (default: .)")
    im.set_defaults(func=_image)

    op = sub.add_parser("operator", help="run the operator (applies approved proposals)",
                        description="Watch ScalingProposals and apply approved ones within their "
                                    "ScalingPolicy's bounds. Same as `kopf run -m scalegate.handlers`.")
    scope = op.add_mutually_exclusive_group()
    scope.add_argument("-n", "--namespace", action="append", metavar="NS",
                       help="watch only this namespace (repeatable; globs allowed)")
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="watch all namespaces (default)")
    op.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, else ~/.kube/config, "
                    "else in-cluster)")
    op.add_argument("--workers", type=int, help="proposals reconciled at once (env SCALEGATE_WORKERS; default 16)")
    op.add_argument("--retention", dest="retention_seconds", type=float, metavar="SECONDS",
                    help="delete terminal proposals this long after they finished; 0 keeps them "
                         "(env SCALEGATE_RETENTION_SECONDS; default 7 days)")
    op.add_argument("--gc-interval", dest="gc_interval_seconds", type=float, metavar="SECONDS",
                    help="how often old terminal proposals are swept (env SCALEGATE_GC_INTERVAL_SECONDS; "
                         "default 3600)")
    op.add_argument("--metrics-bind-address", metavar="HOST:PORT",
                    help="where /metrics listens; 0 disables (default :8000, every address)")
    op.add_argument("--health-probe-bind-address", metavar="HOST:PORT",
                    help="where /healthz (liveness and readiness) listens; 0 disables (default :8080)")
    _add_leader_election_flags(op)
    op.add_argument("--log-format", choices=["json", "plain"], default="plain", help="log format (default plain)")
    op.add_argument("-v", "--verbose", action="store_true")
    op.set_defaults(func=_operator)

    fc = sub.add_parser("forecast", help="one forecast round for one policy",
                        description="Forecast one ScalingPolicy's load and propose (or print) a change.")
    fc.add_argument("policy", metavar="[NAMESPACE/]POLICY")
    fc.add_argument("--once", action="store_true", help="one round (the only mode; kept for clarity)")
    fc.add_argument("-n", "--namespace", help="namespace of the policy (default: from NAMESPACE/POLICY, else default)")
    fc.add_argument("--output", choices=["create", "yaml"], default="create",
                    help="create the proposal in the cluster (default) or write it as YAML for GitOps")
    fc.add_argument("--output-dir", help="with --output yaml: write NAMESPACE/NAME.yaml files here instead of stdout")
    _add_prometheus_flags(fc)
    fc.set_defaults(func=_forecast_once)

    fl = sub.add_parser("forecaster", help="run the forecaster loop (every policy on its interval)")
    fl.add_argument("-n", "--namespace", help="only policies in this namespace (default: all)")
    fl.add_argument("--metrics-bind-address", metavar="HOST:PORT",
                    help="where /metrics listens; 0 disables (default :8001, every address)")
    fl.add_argument("--refit-interval", dest="refit_interval_seconds", type=float, metavar="SECONDS",
                    help="refit a policy's model at least this often (at most its horizon); rounds between reuse "
                         "the kept forecast unless the load breaks it; 0 refits every round "
                         "(env SCALEGATE_REFIT_INTERVAL_SECONDS; default 3600)")
    fl.add_argument("--status-refresh", dest="status_refresh_seconds", type=float, metavar="SECONDS",
                    help="rewrite a policy's status at least this often while its verdict is unchanged (how old "
                         "lastForecastTime may be); 0 writes it every round "
                         "(env SCALEGATE_STATUS_REFRESH_SECONDS; default 3600)")
    _add_shard_flags(fl)
    fl.add_argument("-v", "--verbose", action="store_true")
    _add_prometheus_flags(fl)
    fl.set_defaults(func=_forecaster_loop)

    dm = sub.add_parser("demo", help="the whole loop on a local control plane (or the current cluster)",
                        description="Start a control plane (unless a cluster is configured), a Prometheus with "
                                    "recorded load, the operator and one forecast round; print how to approve.")
    dm.add_argument("action", nargs="?", choices=["up", "down"], default="up")
    dm.add_argument("--kubeconfig", help="use this cluster instead of the current one or a local control plane")
    dm.add_argument("--dev-cluster", action="store_true", help="always use the local control plane")
    dm.add_argument("--approve", action="store_true", help="also approve the proposal as you and wait until applied")
    dm.set_defaults(func=_demo)

    _register_optional(sub)
    return parser


def _register_optional(sub) -> None:
    """Subcommands that live in their own modules register themselves here."""
    # Imported only for `backtest`, so the operator does not load pandas and statsmodels.
    bt = sub.add_parser("backtest", add_help=False, help="replay a recorded load series and compare scalegate "
                        "with baseline scalers")
    bt.set_defaults(func=_backtest)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if args.command != "backtest" and rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    args.rest = rest
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
