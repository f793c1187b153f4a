"""`kubectl dspy`: the console script `kubectl-dspy` (kubectl finds it on PATH as a plugin).

    kubectl dspy status NAME [--watch]
    kubectl dspy promote NAME [--full] | abort | retry | pause | resume | undo NAME [--no-wait] [--timeout 30s]
    kubectl dspy history NAME
    kubectl dspy cache clear NAME [--variant V] [--revision R]

Global options as in kubectl, before or after the verb: -n/--namespace (default: the
context's namespace), --context, --kubeconfig. Exit codes: 0 done, 1 refused, rejected,
timed out or failed (one `error:` line on stderr), 2 bad usage, 130 interrupted.

A request verb checks the state first (verbs.py), writes the `dspy.dev/request`
annotation, then watches the object until status.lastRequest carries the request's id.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any, Final

from dspy_operator.cli import cache, render
from dspy_operator.cli.client import CliError, DSPyApi, KubeDSPyApi
from dspy_operator.cli.verbs import annotation_patch, answer_to, new_request, unfit
from dspy_operator.rollout.canary import ABORT, PAUSE, PROMOTE, PROMOTE_FULL, RESUME, RETRY, UNDO

DEFAULT_TIMEOUT_SECONDS: Final = 30.0
WATCH_SECONDS: Final = 300
"""Server-side length of one watch of `status --watch`; it is renewed until Ctrl-C."""
EXIT_OK, EXIT_ERROR, EXIT_INTERRUPTED = 0, 1, 130

REQUEST_VERBS: Final[dict[str, tuple[str, str]]] = {
    "promote": (PROMOTE, "Advance the canary one step (--full: promote it to stable now, skipping the rest)."),
    "abort": (ABORT, "Send all traffic back to stable and hold the canary revision."),
    "retry": (RETRY, "Roll an aborted (held) revision out again."),
    "pause": (PAUSE, "Hold the canary where it is (not spec.paused: pods keep being managed)."),
    "resume": (RESUME, "Continue a held canary rollout."),
    "undo": (UNDO, "Make the previous stable revision of status.history stable again."),
}

Clock = Callable[[], datetime]
Monotonic = Callable[[], float]


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def main(argv: Sequence[str] | None = None, *, api: DSPyApi | None = None, now: Clock = utc_now,
         monotonic: Monotonic = time.monotonic) -> int:
    """Run one command; `api`, `now` and `monotonic` are injected by tests (no cluster, no waits)."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        api = api or KubeDSPyApi.connect(args.kubeconfig, args.context)
        namespace = args.namespace or api.default_namespace
        if args.verb == "status":
            return show_status(api, namespace, args.name, now, watch=args.watch)
        if args.verb == "history":
            sys.stdout.write(render.render_history(api.get(namespace, args.name), now()))
            return EXIT_OK
        if args.verb == "cache":
            print(cache.clear(api, namespace, args.name, variant=args.variant, revision=args.revision))
            return EXIT_OK
        action = PROMOTE_FULL if args.verb == "promote" and args.full else REQUEST_VERBS[args.verb][0]
        return send_request(api, namespace, args.name, action, now, monotonic,
                            wait=not args.no_wait, timeout=args.timeout)
    except CliError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """Global options are accepted before and after the verb, as kubectl accepts them (the
    subcommands' copies default to SUPPRESS so they never overwrite one given earlier)."""
    parser = argparse.ArgumentParser(prog="kubectl dspy", description="Watch and steer DSPyDeployment rollouts.")
    _add_globals(parser, None)
    shared = argparse.ArgumentParser(add_help=False)
    _add_globals(shared, argparse.SUPPRESS)
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    status = verbs.add_parser("status", parents=[shared], help="Show the rollout, analysis, gate and experiment.")
    status.add_argument("name", metavar="NAME")
    status.add_argument("-w", "--watch", action="store_true", help="Re-render on every change until Ctrl-C.")

    history = verbs.add_parser("history", parents=[shared], help="List promoted revisions, newest first.")
    history.add_argument("name", metavar="NAME")

    cache_help = "Cached answers: `cache clear NAME` removes them from Redis and every pod's memory."
    cache_command = verbs.add_parser("cache", help=cache_help, description=cache_help)
    cache_verbs = cache_command.add_subparsers(dest="cache_verb", required=True, metavar="VERB")
    clear_help = "Remove cached answers (all, or one variant's / revision's) via DELETE /v1/cache on a runtime pod."
    clear = cache_verbs.add_parser("clear", parents=[shared], help=clear_help, description=clear_help)
    clear.add_argument("name", metavar="NAME")
    clear.add_argument("--variant", help="Only this variant's entries (in every revision unless --revision).")
    clear.add_argument("--revision", help="Only this revision's entries.")

    for verb, (_action, help_text) in REQUEST_VERBS.items():
        command = verbs.add_parser(verb, parents=[shared], help=help_text, description=help_text)
        command.add_argument("name", metavar="NAME")
        if verb == "promote":
            command.add_argument("--full", action="store_true", help="Promote to stable now (action promote-full).")
        command.add_argument("--no-wait", action="store_true", help="Write the request and return at once.")
        command.add_argument("--timeout", type=timeout_seconds, default=DEFAULT_TIMEOUT_SECONDS,
                             help="How long to wait for the operator's answer, e.g. 30, 45s, 2m (default 30s).")
    return parser.parse_args(argv)


def _add_globals(parser: argparse.ArgumentParser, default: Any) -> None:
    parser.add_argument("-n", "--namespace", default=default, help="Namespace (default: the context's).")
    parser.add_argument("--context", default=default, help="kubeconfig context to use.")
    parser.add_argument("--kubeconfig", default=default, help="Path of the kubeconfig file.")


def timeout_seconds(text: str) -> float:
    """Seconds as a number or a kubectl-style duration: `30`, `45s`, `2m`, `1m30s`."""
    match = re.fullmatch(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s?)?", text.strip())
    if not text.strip() or match is None:
        raise argparse.ArgumentTypeError(f"invalid duration {text!r} (use e.g. 30, 45s, 2m)")
    hours, minutes, secs = (float(part) if part else 0.0 for part in match.groups())
    return hours * 3600 + minutes * 60 + secs


def show_status(api: DSPyApi, namespace: str, name: str, now: Clock, *, watch: bool) -> int:
    """Print the status once, or again on every change of spec or status until Ctrl-C (kopf's
    own annotation writes change neither, and would otherwise repaint an identical screen)."""
    tty = sys.stdout.isatty()
    color = tty and not os.environ.get("NO_COLOR")
    shown: tuple[Any, Any] | None = None

    def show(body: dict[str, Any]) -> None:
        nonlocal shown
        if _substance(body) == shown:
            return
        repaint = "" if shown is None else "\x1b[H\x1b[2J" if tty else "\n"
        shown = _substance(body)
        sys.stdout.write(repaint + render.render_status(body, now(), color=color))
        sys.stdout.flush()

    body = api.get(namespace, name)
    show(body)
    while watch:
        for body in api.watch(namespace, name, _version(body), WATCH_SECONDS):
            show(body)
        body = api.get(namespace, name)  # the watch ended (server timeout, expired history): catch up, go on
        show(body)
    return EXIT_OK


def send_request(api: DSPyApi, namespace: str, name: str, action: str, now: Clock, monotonic: Monotonic, *,
                 wait: bool, timeout: float) -> int:
    """Check, annotate, and (unless --no-wait) wait for the operator's answer."""
    body = api.get(namespace, name)
    reason = unfit(action, body)
    if reason is not None:
        raise CliError(reason)
    request = new_request(action, now())
    body = api.annotate(namespace, name, annotation_patch(request))
    if not wait:
        print(f"{name}: {action} requested (id {request['id']}); the answer will be in status.lastRequest")
        return EXIT_OK
    answer = wait_for_answer(api, namespace, name, body, request["id"], timeout, monotonic)
    if answer is None:
        raise CliError(f"the operator did not answer {action} request {request['id']} within "
                       f"{render.duration(timedelta(seconds=timeout))}; is dspy-operator running? "
                       f"(the request stays in annotation dspy.dev/request)")
    if answer.get("result") != "Accepted":
        raise CliError(f"the operator rejected {action}: {answer.get('message', '')}")
    print(render.answer_text(name, answer))
    return EXIT_OK


def wait_for_answer(api: DSPyApi, namespace: str, name: str, body: dict[str, Any], request_id: str,
                    timeout: float, monotonic: Monotonic) -> dict[str, Any] | None:
    """status.lastRequest once it carries `request_id`, or None after `timeout` seconds.
    Watching from the annotated object's resourceVersion sees every later change, so an
    answer written between the patch and the watch is not missed."""
    deadline = monotonic() + timeout
    while True:
        answer = answer_to(body, request_id)
        if answer is not None:
            return dict(answer)
        remaining = deadline - monotonic()
        if remaining <= 0:
            return None
        for body in api.watch(namespace, name, _version(body), math.ceil(remaining)):
            answer = answer_to(body, request_id)
            if answer is not None:
                return dict(answer)
            if monotonic() >= deadline:
                return None
        body = api.get(namespace, name)


def _version(body: dict[str, Any]) -> str:
    return str((body.get("metadata") or {}).get("resourceVersion") or "")


def _substance(body: dict[str, Any]) -> tuple[Any, Any]:
    return body.get("spec"), body.get("status")


if __name__ == "__main__":
    sys.exit(main())
