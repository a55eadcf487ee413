"""`kubectl scalegate`: look at, decide on and explain ScalingProposals.

kubectl finds this as `kubectl-scalegate` on PATH and passes every argument after the
plugin name; its own global flags are not passed on (and kubectl refuses flags before a
plugin's name), so --kubeconfig, --context and -n are read here, anywhere on the line.

    kubectl scalegate list [-A | -n NS] [-l SELECTOR] [-o wide|yaml|json|name]
    kubectl scalegate show NAME
    kubectl scalegate approve NAME [--reason TEXT] [--ref URL]
    kubectl scalegate approve --all [-l SELECTOR] [--yes] [--reason TEXT] [--ref URL]
    kubectl scalegate reject NAME [--reason TEXT]
    kubectl scalegate explain NAME [--plot FILE.png] [--prometheus-url URL [--prometheus-token-file FILE]
                                   [--prometheus-ca-file FILE] [--prometheus-insecure] [--prometheus-timeout S]]

Exit status: 0 done, 1 refused or failed (one line on stderr says why; for `approve --all`,
any one refused), 2 usage.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from typing import Any, Callable, Mapping, TypeVar

from ..kube import ConfigError, Conflict, Connection, KubeError, Unavailable, connect
from ..model import APPROVAL_REF, APPROVED, APPROVED_BY, DECISION_REASON, REJECTED, REJECTED_BY, Phase
from ..settings import ForecasterSettings, add_prometheus_flags, resolve
from . import render

Connect = Callable[[str | None, str | None], Connection]
T = TypeVar("T")

EXAMPLES = """examples:
  kubectl scalegate list -A
  kubectl scalegate show web-7f3a2 -n shop
  kubectl scalegate explain web-7f3a2 -n shop --plot web.png --prometheus-url http://prometheus:9090
  kubectl scalegate approve web-7f3a2 -n shop --reason "campaign starts at 21:00" --ref https://git.example/mr/42
  kubectl scalegate approve --all -n shop                  # every pending proposal (a day's plans), asking each
  kubectl scalegate approve --all -n shop -l scalegate.io/policy=web --yes --reason "reviewed in the standup"
  kubectl scalegate reject web-7f3a2 -n shop --reason "the campaign was cancelled"
"""


def _common_flags(parser: argparse.ArgumentParser, suppress: bool) -> None:
    """kubectl's connection flags. On subcommands they default to SUPPRESS, so a flag
    given before the subcommand is not reset by the subcommand's default."""
    default = argparse.SUPPRESS if suppress else None
    parser.add_argument("--kubeconfig", default=default, metavar="PATH",
                        help="kubeconfig file (default: $KUBECONFIG, else ~/.kube/config)")
    parser.add_argument("--context", default=default, help="kubeconfig context to use")
    parser.add_argument("-n", "--namespace", default=default,
                        help="namespace (default: the context's namespace, else default)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kubectl scalegate", description="Look at, decide on and explain scalegate ScalingProposals.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    _common_flags(parser, suppress=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        _common_flags(p, suppress=True)
        return p

    p = add("list", "list proposals as a table (NAME TARGET CURRENT PROPOSED PHASE APPROVED-BY AGE)")
    p.add_argument("-A", "--all-namespaces", action="store_true", help="list across all namespaces")
    p.add_argument("-l", "--selector", help="label selector, e.g. scalegate.io/policy=web")
    p.add_argument("-o", "--output", choices=["wide", "yaml", "json", "name"], help="output format")
    p.set_defaults(func=cmd_list)

    p = add("show", "the evidence for one proposal: forecast, bounds, status, events, history")
    p.add_argument("name")
    p.set_defaults(func=cmd_show)

    p = add("approve", "approve a proposal as yourself (scalegate.io/approved + approved-by, in one patch); "
                       "--all: every pending one in the namespace, asking before each")
    p.add_argument("name", nargs="?")
    p.add_argument("--all", action="store_true",
                   help="approve the namespace's pending proposals: list them, then ask before each (y/n/a/q)")
    p.add_argument("-l", "--selector",
                   help="with --all: only proposals with these labels, e.g. scalegate.io/policy=web")
    p.add_argument("-y", "--yes", action="store_true",
                   help="with --all: approve every one listed without asking (for scripts)")
    p.add_argument("--reason", help="why (scalegate.io/decision-reason)")
    p.add_argument("--ref", help="where it was approved, e.g. a merge request (scalegate.io/approval-ref)")
    p.set_defaults(func=cmd_approve, verdict="approved")

    p = add("reject", "reject a proposal as yourself (scalegate.io/rejected + rejected-by, in one patch)")
    p.add_argument("name")
    p.add_argument("--reason", help="why (scalegate.io/decision-reason)")
    p.set_defaults(func=cmd_decide, verdict="rejected", ref=None)

    p = add("explain", "why this number: forecast peak and interval, capacity, bounds, load history")
    p.add_argument("name")
    p.add_argument("--plot", metavar="FILE.png", help="draw history, forecast, capacity and bounds to a PNG")
    add_prometheus_flags(p, url_help="read the load history (the proposal's query over its window) from this "
                                     "Prometheus, with the forecaster's flags for its token, CA and timeout")
    p.set_defaults(func=cmd_explain)
    return parser


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _namespace(args: argparse.Namespace, conn: Connection) -> str:
    return getattr(args, "namespace", None) or conn.namespace


def _out(text: str) -> None:
    print(text, flush=True)


def _fail(text: str) -> int:
    print(text, file=sys.stderr)
    return 1


def error_line(err: KubeError) -> str:
    """One line for a person, as kubectl says it: a server's refusal in its own words,
    ``Error from server (Reason): <message verbatim>``; anything else as ``error: ...``."""
    if isinstance(err, ConfigError):
        return f"error: {err.message}"
    if isinstance(err, Unavailable) and err.status is None:
        return f"error: {err.message} (is the cluster running? check --kubeconfig / --context)"
    if err.status is None:
        return f"error: {err}"
    return f"Error from server ({err.reason}): {err.message}"


# -- commands ------------------------------------------------------------------------------
def cmd_list(args: argparse.Namespace, conn: Connection) -> int:
    namespace = None if args.all_namespaces else _namespace(args, conn)
    items = list(conn.kube.iter_proposals(namespace, selector=args.selector))
    if args.output in ("yaml", "json"):
        _out(render.dump(render.as_list(items), args.output))
        return 0
    if args.output == "name":
        for item in sorted(items, key=lambda o: o["metadata"]["name"]):
            _out(f"{render.KIND_REF}/{item['metadata']['name']}")
        return 0
    if not items:
        where = "any namespace" if namespace is None else f"{namespace} namespace"
        print(f"No resources found in {where}.", file=sys.stderr)
        return 0
    _out(render.proposal_table(items, _now(), all_namespaces=namespace is None, wide=args.output == "wide"))
    return 0


def _proposal(conn: Connection, namespace: str, name: str) -> dict:
    """The proposal, or the server's NotFound raised as a KubeError."""
    proposal = conn.kube.get_proposal(namespace, name, missing_ok=False)
    assert proposal is not None  # missing_ok=False raises instead of returning None
    return proposal


def _try(what: str, fn: Callable[[], T]) -> tuple[T | None, str]:
    """Optional context for show/explain: a refusal becomes a note, not a failure."""
    try:
        return fn(), ""
    except KubeError as err:
        if err.status is None:  # not a refusal: the cluster is gone, say so
            raise
        return None, f"{what}: {err.message}"


def cmd_show(args: argparse.Namespace, conn: Connection) -> int:
    namespace = _namespace(args, conn)
    proposal = _proposal(conn, namespace, args.name)
    spec = proposal.get("spec") or {}
    policy_name = (spec.get("policyRef") or {}).get("name") or ""
    policy, policy_error = _try("policy not readable",
                                lambda: conn.kube.get_policy(namespace, policy_name, missing_ok=False))
    events, events_error = _try("events not readable",
                                lambda: conn.kube.events_about(namespace, proposal["metadata"].get("uid", "")))
    others, _ = _try("history", lambda: list(conn.kube.iter_proposals(namespace)))
    history = [o for o in (others or []) if o["metadata"].get("uid") != proposal["metadata"].get("uid")
               and render.same_target(o, proposal)]
    _out(render.show(proposal, _now(), policy=policy, policy_error=policy_error, events=events,
                     events_error=events_error, history=history))
    return 0


def decision_annotations(verdict: str, user: str, reason: str | None, ref: str | None) -> dict[str, str]:
    """The annotations one decision writes, all in the same patch (the admission policy
    wants the decision and its author together)."""
    if verdict == "approved":
        annotations = {APPROVED: "true", APPROVED_BY: user}
    else:
        annotations = {REJECTED: "true", REJECTED_BY: user}
    if ref:
        annotations[APPROVAL_REF] = ref
    if reason:
        annotations[DECISION_REASON] = reason
    return annotations


def cmd_decide(args: argparse.Namespace, conn: Connection) -> int:
    namespace = _namespace(args, conn)
    proposal = _proposal(conn, namespace, args.name)  # else: the server's NotFound
    user = conn.kube.whoami()
    wanted = decision_annotations(args.verdict, user, args.reason, args.ref)
    current = render.annotations_of(proposal)
    ref = f"{render.KIND_REF}/{args.name}"
    if all(current.get(key) == value for key, value in wanted.items()):
        _out(f"{ref} already {args.verdict} by {user}")
        return 0
    phase = (proposal.get("status") or {}).get("phase")
    if args.verdict == "approved" and phase in Phase.TERMINAL:
        print(f"warning: {ref} is {phase}: the operator will not apply it, whatever is decided", file=sys.stderr)
    conn.kube.annotate_proposal(namespace, args.name, wanted)
    _out(f"{ref} {args.verdict} as {user}")
    if args.verdict == "approved":
        print(f"the operator applies it once every check holds; follow it with: "
              f"kubectl scalegate show {args.name} -n {namespace}", file=sys.stderr)
    return 0


def cmd_approve(args: argparse.Namespace, conn: Connection) -> int:
    return cmd_approve_all(args, conn) if args.all else cmd_decide(args, conn)


def can_ask() -> bool:
    """Whether there is a person to ask: stdin is a terminal."""
    return sys.stdin is not None and sys.stdin.isatty()


ANSWERS = {"y": "yes", "yes": "yes", "n": "no", "no": "no", "a": "all", "all": "all", "q": "quit", "quit": "quit"}


def ask(question: str) -> str:
    """'yes', 'no', 'all' or 'quit' (also at the end of input); asks again on anything else.
    The question goes to stderr, so stdout keeps only results."""
    while True:
        print(question, end="", file=sys.stderr, flush=True)
        line = sys.stdin.readline()
        if not line:  # end of input: stop, approve nothing more
            print(file=sys.stderr)
            return "quit"
        answer = ANSWERS.get(line.strip().lower())
        if answer:
            return answer
        print("please answer y (approve this one), n (skip it), a (approve it and all the rest) or q (stop)",
              file=sys.stderr)


#: What became of each proposal `approve --all` listed.
APPROVED_RESULT, REFUSED, SKIPPED = "approved", "refused", "skipped"


def approve_one(conn: Connection, namespace: str, listed: Mapping[str, Any],
                wanted: dict[str, str | None]) -> tuple[str, str]:
    """(result, detail) of approving one listed proposal: its own annotation patch, judged by
    the API server (RBAC and the admission policy), guarded by the resourceVersion just read so
    that what is approved is the proposal listed, still waiting (not deleted and made again,
    not decided or expired meanwhile)."""
    name = listed["metadata"]["name"]
    for _attempt in range(3):
        try:
            fresh = conn.kube.get_proposal(namespace, name)
        except KubeError as err:
            if err.status is None:
                raise
            return REFUSED, error_line(err)
        if fresh is None:
            return SKIPPED, "it was deleted since it was listed"
        if fresh["metadata"].get("uid") != listed["metadata"].get("uid"):
            return SKIPPED, "it was replaced by another proposal of the same name since it was listed"
        why = render.not_approvable(fresh, _now())
        if why:
            return SKIPPED, why
        try:
            conn.kube.patch_proposal_annotations(namespace, name, wanted, fresh["metadata"]["resourceVersion"])
            return APPROVED_RESULT, ""
        except Conflict:  # changed between the read and the patch (e.g. its status): read it again
            continue
        except KubeError as err:
            if err.status is None:
                raise
            return REFUSED, error_line(err)
    return REFUSED, "error: the proposal kept changing while it was being approved; try again"


def cmd_approve_all(args: argparse.Namespace, conn: Connection) -> int:
    """List the namespace's pending proposals, then approve each one the person says yes to
    (or all with --yes). Each approval is its own patch, checked by the API server; the
    results are collected, and any refusal makes the exit status 1."""
    namespace = _namespace(args, conn)
    user = conn.kube.whoami()
    items = list(conn.kube.iter_proposals(namespace, selector=args.selector))
    now = _now()
    pending = render.pending_approvals(items, now)
    matching = f" matching {args.selector}" if args.selector else ""
    if not pending:
        print(f"No pending proposals to approve in {namespace} namespace{matching}.", file=sys.stderr)
        return 0
    count = len(pending)
    _out(f"{count} pending proposal{'s' if count != 1 else ''} in namespace {namespace}{matching}, to approve "
         f"as {user}:")
    _out(render.approval_table(pending, items, now))
    if not args.yes and not can_ask():
        return _fail(f"error: approve --all asks before approving each proposal, and there is no terminal to ask "
                     f"on: run it in a terminal, or add --yes to approve the {count} listed above")
    wanted: dict[str, str | None] = dict(decision_annotations("approved", user, args.reason, args.ref))
    results: list[tuple[str, str, str]] = []
    approve_rest = args.yes
    interrupted = False
    for i, proposal in enumerate(pending):
        name = proposal["metadata"]["name"]
        if not approve_rest:
            try:
                answer = ask(f"approve {name} ({render.target_text(proposal)}, {render.change_text(proposal, now)})? "
                             "[y/n/a/q] ")
            except KeyboardInterrupt:
                print(file=sys.stderr)
                answer, interrupted = "quit", True
            if answer == "quit":
                results += [(p["metadata"]["name"], SKIPPED, "not asked (you stopped)") for p in pending[i:]]
                break
            if answer == "no":
                results.append((name, SKIPPED, "you said no"))
                continue
            approve_rest = answer == "all"
        result, detail = approve_one(conn, namespace, proposal, wanted)
        results.append((name, result, detail))
        ref = f"{render.KIND_REF}/{name}"
        if result == APPROVED_RESULT:
            _out(f"{ref} approved as {user}")
        elif result == REFUSED:
            print(f"{ref}: {detail}", file=sys.stderr)
        else:
            print(f"{ref} skipped: {detail}", file=sys.stderr)
    summary = {kind: [n for n, r, _ in results if r == kind] for kind in (APPROVED_RESULT, REFUSED, SKIPPED)}
    print(", ".join(f"{len(names)} {kind}" for kind, names in summary.items()) + f" (of {count} listed)",
          file=sys.stderr)
    if summary[APPROVED_RESULT]:
        print(f"the operator applies each once every check holds (a plan: each step at its time); follow them "
              f"with: kubectl scalegate list -n {namespace} -o wide", file=sys.stderr)
    if interrupted:
        return 130
    return 1 if summary[REFUSED] else 0


def cmd_explain(args: argparse.Namespace, conn: Connection) -> int:
    from ..forecast.prometheus import PrometheusSettings, PrometheusSource
    from . import explain

    source = None
    if args.prometheus_url:
        try:  # the forecaster's settings path: flags, else SCALEGATE_PROMETHEUS_*, else defaults
            source = PrometheusSource(PrometheusSettings.of(resolve(ForecasterSettings, vars(args))))
        except ValueError as err:
            return _fail(f"error: {err}")
    namespace = _namespace(args, conn)
    proposal = _proposal(conn, namespace, args.name)
    policy_name = ((proposal.get("spec") or {}).get("policyRef") or {}).get("name") or ""
    policy, policy_error = _try("policy not readable",
                                lambda: conn.kube.get_policy(namespace, policy_name, missing_ok=False))
    now = _now()
    history, history_error = None, ""
    if source is not None:
        explained = explain.ExplainedProposal.of(proposal)
        query = explained.evidence.query
        try:
            if not query:
                raise explain.HistoryUnavailable("the proposal records no query to read the history with")
            start, end, step = explained.history_range(now)
            history = explain.fetch_history(source, query, start, end, step)
        except explain.HistoryUnavailable as err:
            history_error = str(err)
            print(f"warning: no load history: {err}", file=sys.stderr)
    _out(explain.explain_text(proposal, policy, history, now, policy_error=policy_error,
                              history_error=history_error))
    if args.plot:
        try:
            explain.plot(args.plot, proposal, policy, history, now)
        except OSError as err:
            return _fail(f"error: cannot write {args.plot}: {err.strerror or err}")
        except explain.PlotUnavailable as err:
            return _fail(f"error: {err}")
        print(f"plot written to {args.plot}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None, connector: Connect = connect) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "approve":
        if args.all and args.name:
            parser.error("approve takes a NAME or --all, not both: --all approves the namespace's pending proposals")
        if not args.all and not args.name:
            parser.error("approve needs the NAME of a proposal, or --all for the namespace's pending proposals")
        if not args.all and (args.selector or args.yes):
            parser.error("-l/--selector and --yes go with --all")
    try:
        conn = connector(getattr(args, "kubeconfig", None), getattr(args, "context", None))
        return args.func(args, conn)
    except KubeError as err:
        return _fail(error_line(err))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
