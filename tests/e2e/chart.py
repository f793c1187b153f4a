"""What `test_chart.py` needs to install the chart and run the operator as the chart runs it.

- `Helm`: the pinned helm (`hack/helm.sh`, built from its Go module and cached) against the
  e2e cluster.
- `AuditRelay` / `audited_proxy`: `kubectl proxy` authenticated with a kubeconfig that holds
  only a ServiceAccount's token, and a relay in front of it that records every request the
  process behind it makes *and the answer's status code*, with the API server's message for
  errors. A 403 cannot hide in a log line: every forbidden request is in `relay.forbidden()`,
  with the verb and resource the API server refused (its message says which). The relay can
  also hold one chosen request until the test lets it go (to provoke a write conflict).
- `StandIn`: the operator (or the uninstall hook) started on this machine with the exact
  command, arguments and environment of the container the chart rendered, since pods on kwok
  nodes run nothing; only the liveness port is moved to a free one.
- `rbac_attributes`: the (verb, API group, resource) the API server authorizes a request as.

Imported by module name (`import chart`), like `relay` and `resources`.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import yaml

from relay import write_relay_kubeconfig
from resources import REPO
from servers import free_port, stop_process

CHART = REPO / "charts" / "dspy-operator"
HELM_SH = REPO / "hack" / "helm.sh"
FORBIDDEN = re.compile(r'cannot (\w+) resource "([^"]+)" in API group "([^"]*)"')
CAPTURE_BYTES = 65536


def helm_binary() -> str:
    """The cached helm (`hack/helm.sh path` builds it first when missing, and says so)."""
    proc = subprocess.run([str(HELM_SH), "path"], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"hack/helm.sh path failed:\n{proc.stderr}")
    return proc.stdout.strip()


@dataclass(frozen=True)
class Helm:
    binary: str
    kubeconfig: Path

    def run(self, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([self.binary, "--kubeconfig", str(self.kubeconfig), *args],
                              capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}{proc.stdout}")
        return proc

    def start(self, *args: str) -> subprocess.Popen[str]:
        """helm in the background (an uninstall waiting on its hook)."""
        return subprocess.Popen([self.binary, "--kubeconfig", str(self.kubeconfig), *args],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def template(self, release: str, namespace: str, *args: str) -> list[dict[str, Any]]:
        out = self.run("template", release, str(CHART), "--namespace", namespace, *args).stdout
        return [doc for doc in yaml.safe_load_all(out) if doc]


# --- the audit relay ---------------------------------------------------------------------


@dataclass
class Exchange:
    """One request through the relay and, once it came, its answer."""

    at: float
    method: str
    path: str
    body: bytes = b""
    status: int | None = None
    message: str = ""
    """The API server's `message` when the answer is an error."""

    @property
    def refused(self) -> tuple[str, str, str] | None:
        """(verb, resource, API group) of a 403, as the API server words it."""
        match = FORBIDDEN.search(self.message) if self.status == 403 else None
        return (match.group(1), match.group(2), match.group(3)) if match else None

    def __str__(self) -> str:
        text = f"{self.method} {self.path} -> {self.status}"
        return f"{text}: {self.message}" if self.message else text


@dataclass
class Hold:
    """Requests matching `matches` wait in the relay until `release()`; `caught` is set at the first."""

    matches: Callable[[Exchange], bool]
    caught: threading.Event = field(default_factory=threading.Event)
    released: threading.Event = field(default_factory=threading.Event)
    exchange: Exchange | None = None

    def release(self) -> None:
        self.released.set()


@dataclass
class AuditRelay:
    """TCP relay to an HTTP/1.1 upstream that records each request and its answer.

    Requests are read whole (head and body) before they go upstream, so a `Hold` can keep one
    back; answers stream through as they come (a watch is a long chunked answer), their status
    recorded at the head and, for errors, the first bytes of the body kept for the message.
    HTTP/1.1 clients do not pipeline, so the answers of a connection come in request order.
    """

    upstream: tuple[str, int]
    exchanges: list[Exchange] = field(default_factory=list)
    holds: list[Hold] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> int:
        server = socket.create_server(("127.0.0.1", 0))
        threading.Thread(target=self._accept, args=(server,), daemon=True).start()
        return int(server.getsockname()[1])

    # -- what tests read --
    def since(self, moment: float = 0.0) -> list[Exchange]:
        with self.lock:
            return [exchange for exchange in self.exchanges if exchange.at >= moment]

    def forbidden(self, since: float = 0.0) -> list[Exchange]:
        return [exchange for exchange in self.since(since) if exchange.status in (401, 403)]

    def refused(self, verb: str, resource: str, group: str, since: float = 0.0) -> list[Exchange]:
        return [exchange for exchange in self.forbidden(since) if exchange.refused == (verb, resource, group)]

    @contextlib.contextmanager
    def hold(self, matches: Callable[[Exchange], bool]) -> Iterator[Hold]:
        """Keep back the first request that `matches` (and any other) until released; always
        released on exit."""
        hold = Hold(matches)
        with self.lock:
            self.holds.append(hold)
        try:
            yield hold
        finally:
            hold.release()
            with self.lock:
                self.holds.remove(hold)

    # -- the relay --
    def _accept(self, server: socket.socket) -> None:
        while True:
            client, _ = server.accept()
            upstream = socket.create_connection(self.upstream)
            pending: collections.deque[Exchange] = collections.deque()
            ready = threading.Condition()
            threading.Thread(target=self._answers, args=(upstream, client, pending, ready), daemon=True).start()
            threading.Thread(target=self._requests, args=(client, upstream, pending, ready), daemon=True).start()

    def _requests(self, client: socket.socket, upstream: socket.socket, pending: collections.deque[Exchange],
                  ready: threading.Condition) -> None:
        reader = client.makefile("rb")
        try:
            while True:
                head = _read_head(reader)
                if head is None:
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, path = lines[0].split(" ")[:2]
                headers = _headers(lines)
                body = b""
                if headers.get("transfer-encoding", "").lower() == "chunked":
                    body = _read_chunked(reader, None, keep=True)
                    # Sent on with a length instead: the body was read whole to be judged.
                    head = _without_header(head, "transfer-encoding")[:-2] + f"Content-Length: {len(body)}\r\n\r\n".encode()
                elif int(headers.get("content-length", "0")):
                    body = reader.read(int(headers["content-length"]))
                exchange = Exchange(time.monotonic(), method, path, body)
                self._maybe_hold(exchange)
                with self.lock:
                    self.exchanges.append(exchange)
                with ready:
                    pending.append(exchange)
                    ready.notify()
                upstream.sendall(head + body)
        except (OSError, ValueError):
            pass
        finally:
            with contextlib.suppress(OSError):
                upstream.shutdown(socket.SHUT_WR)

    def _maybe_hold(self, exchange: Exchange) -> None:
        with self.lock:
            hold = next((hold for hold in self.holds if not hold.released.is_set() and hold.matches(exchange)), None)
        if hold is None:
            return
        if hold.exchange is None:
            hold.exchange = exchange
        hold.caught.set()
        hold.released.wait(timeout=120)

    def _answers(self, upstream: socket.socket, client: socket.socket, pending: collections.deque[Exchange],
                 ready: threading.Condition) -> None:
        reader = upstream.makefile("rb")
        try:
            while True:
                head = _read_head(reader)
                if head is None:
                    return
                client.sendall(head)
                lines = head.decode("latin-1").split("\r\n")
                status = int(lines[0].split(" ")[1])
                if 100 <= status < 200:
                    continue  # informational: the real answer follows
                headers = _headers(lines)
                with ready:
                    ready.wait_for(lambda: bool(pending), timeout=30)
                    exchange = pending.popleft() if pending else None
                keep = status >= 400
                if exchange is not None and not keep:
                    exchange.status = status  # at once: a watch's body lasts as long as the watch
                if exchange is not None and exchange.method == "HEAD" or status in (204, 304):
                    body = b""
                elif headers.get("transfer-encoding", "").lower() == "chunked":
                    body = _read_chunked(reader, client, keep=keep)
                elif "content-length" in headers:
                    body = reader.read(int(headers["content-length"]))
                    client.sendall(body)
                else:  # delimited by the end of the connection
                    body = b""
                    while chunk := reader.read1(65536):
                        client.sendall(chunk)
                        if keep and len(body) < CAPTURE_BYTES:
                            body += chunk
                if exchange is not None and keep:
                    exchange.message = _status_message(body)
                    exchange.status = status  # after the message: readers see both or neither
        except (OSError, ValueError):
            pass
        finally:
            for sock in (client, upstream):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


def _read_head(reader: Any) -> bytes | None:
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        line = reader.readline()
        if not line:
            return None
        head += line
    return head


def _headers(lines: Sequence[str]) -> dict[str, str]:
    return {name.strip().lower(): value.strip() for name, _, value in
            (line.partition(":") for line in lines[1:] if line)}


def _without_header(head: bytes, name: str) -> bytes:
    lines = head.split(b"\r\n")
    return b"\r\n".join(line for line in lines if not line.lower().startswith(name.encode() + b":"))


def _read_chunked(reader: Any, sink: socket.socket | None, keep: bool) -> bytes:
    """Read a chunked body, passing each chunk on to `sink` as it comes; returns the data kept."""
    kept = b""
    while True:
        size_line = reader.readline()
        if not size_line:
            raise ValueError("connection closed inside a chunked body")
        size = int(size_line.strip().split(b";")[0], 16)
        data = reader.read(size + 2)
        if sink is not None:
            sink.sendall(size_line + data)
        if keep and len(kept) < CAPTURE_BYTES:
            kept += data[:-2]
        if size == 0:
            return kept


def _status_message(body: bytes) -> str:
    text = body.decode("utf-8", errors="replace")
    try:
        return str(json.loads(text).get("message") or text)
    except (ValueError, AttributeError):
        return text.strip()[:500]


@contextlib.contextmanager
def audited_proxy(kubectl_bin: str, kubeconfig: Path, relay_kubeconfig: Path) -> Iterator[AuditRelay]:
    """`kubectl proxy` authenticated by `kubeconfig`, with an audit relay in front of it; whoever
    uses `relay_kubeconfig` (plain HTTP to the relay, no credentials) is that identity, audited."""
    proxy = subprocess.Popen([kubectl_bin, "--kubeconfig", str(kubeconfig), "proxy", "--port=0"],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proxy.stdout is not None
        match = re.search(r"127\.0\.0\.1:(\d+)", proxy.stdout.readline())
        if not match:
            raise RuntimeError("kubectl proxy did not report its port")
        relay = AuditRelay(("127.0.0.1", int(match.group(1))))
        write_relay_kubeconfig(relay_kubeconfig, relay.start())
        yield relay
    finally:
        stop_process(proxy)


# --- RBAC attributes of a request ---------------------------------------------------------


def rbac_attributes(exchange: Exchange) -> list[tuple[str, str, str]]:
    """The (verb, API group, resource) the API server authorized `exchange` as: a PATCH that
    created its object (201) is authorized as patch and create. Empty for non-resource URLs
    (discovery, /version)."""
    url = urlsplit(exchange.path)
    parts = [part for part in url.path.split("/") if part]
    if parts[:1] == ["api"] and len(parts) >= 3:
        group, rest = "", parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 4:
        group, rest = parts[1], parts[3:]
    else:
        return []
    if rest[:1] == ["namespaces"] and len(rest) >= 3:
        rest = rest[2:]
    elif rest[:1] == ["namespaces"]:
        return []  # a Namespace itself: not something the operator asks for
    resource, name, sub = rest[0], (rest[1] if len(rest) > 1 else None), (rest[2] if len(rest) > 2 else None)
    if sub:
        resource = f"{resource}/{sub}"
    watch = parse_qs(url.query).get("watch", ["false"])[0] in ("true", "1")
    verb = {
        "GET": "watch" if watch else ("get" if name else "list"),
        "POST": "create",
        "PUT": "update",
        "PATCH": "patch",
        "DELETE": "delete" if name else "deletecollection",
    }[exchange.method]
    verbs = [(verb, group, resource)]
    if exchange.method == "PATCH" and exchange.status == 201:
        verbs.append(("create", group, resource))
    return verbs


def authorized(exchanges: Sequence[Exchange]) -> set[tuple[str, str, str]]:
    """Every (verb, group, resource) the API server allowed (any answer but 401/403)."""
    return {attributes for exchange in exchanges if exchange.status not in (None, 401, 403)
            for attributes in rbac_attributes(exchange)}


def grants(rules: Sequence[dict[str, Any]]) -> set[tuple[str, str, str]]:
    """(verb, group, resource) of every rule (resourceNames aside)."""
    return {(verb, group, resource) for rule in rules for group in rule["apiGroups"]
            for resource in rule["resources"] for verb in rule["verbs"]}


def without(rules: Sequence[dict[str, Any]], verb: str, group: str, resource: str) -> list[dict[str, Any]]:
    """The rules with one verb of one resource taken away (the rest of its rule kept)."""
    out: list[dict[str, Any]] = []
    for rule in rules:
        if group in rule["apiGroups"] and resource in rule["resources"] and verb in rule["verbs"]:
            others = [r for r in rule["resources"] if r != resource]
            if others:
                out.append({**rule, "resources": others})
            rest = [v for v in rule["verbs"] if v != verb]
            if rest:
                out.append({**rule, "resources": [resource], "verbs": rest})
        else:
            out.append(rule)
    return out


# --- a container of the chart, run here ------------------------------------------------------


def container_of(workload: dict[str, Any]) -> dict[str, Any]:
    [found] = workload["spec"]["template"]["spec"]["containers"]
    return found


class StandIn:
    """A container of the chart run on this machine (kwok pods run nothing): its command and
    arguments, its environment (plain values only: the chart sets no others), `KUBECONFIG`
    pointing at an audited proxy, and the liveness and metrics endpoints moved to free ports."""

    def __init__(self, workload: dict[str, Any], kubeconfig: Path, log_path: Path,
                 entrypoint: Sequence[str], extra_env: dict[str, str] | None = None) -> None:
        spec = container_of(workload)
        env = {key: value for key, value in os.environ.items()
               if not key.startswith("DSPY_OPERATOR_") and key != "KUBECONFIG"}
        for entry in spec.get("env") or []:
            assert "valueFrom" not in entry, f"the stand-in resolves plain values only: {entry}"
            env[entry["name"]] = entry.get("value", "")
        self.health: str | None = None
        if "DSPY_OPERATOR_LIVENESS" in env:
            self.health_port = free_port()
            self.health = f"http://127.0.0.1:{self.health_port}{urlsplit(env['DSPY_OPERATOR_LIVENESS']).path}"
            env["DSPY_OPERATOR_LIVENESS"] = self.health
        if env.get("DSPY_OPERATOR_METRICS_PORT", "0") != "0":
            env["DSPY_OPERATOR_METRICS_PORT"] = str(free_port())  # not the chart's 8081: processes share this host
        env.update({"KUBECONFIG": str(kubeconfig), "PYTHONUNBUFFERED": "1", **(extra_env or {})})
        command = list(spec.get("command") or entrypoint)
        if command[:1] == ["python"]:
            command[0] = sys.executable
        self.argv = [*command, *(spec.get("args") or [])]
        self.log_path = log_path
        with log_path.open("ab") as log:
            self.process = subprocess.Popen(self.argv, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def healthy(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"{self.argv} exited {self.process.returncode}:\n{self.logs()[-3000:]}")
        try:
            return self.health is not None and httpx.get(self.health, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def wait(self, timeout: float) -> int:
        return self.process.wait(timeout=timeout)

    def stop(self) -> None:
        stop_process(self.process)


def operator_entrypoint() -> list[str]:
    """The image's ENTRYPOINT (`dspy-operator`, the console script) from this virtualenv."""
    return [str(Path(sys.executable).parent / "dspy-operator")]
