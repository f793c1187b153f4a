"""The operator as the e2e suite and `bench/operator_scale.py` run it: behind `kubectl proxy`
and a counting relay in the calling process.

Every request the operator makes passes through the relay, so a caller can assert on (or
count) the operator's actual GET/LIST/WATCH/PATCH/POST/PUT/DELETE calls instead of its logs.
Shared by both so the test and the benchmark count the same thing the same way.

Imported by module name (`import relay`): `tests/e2e/conftest.py` puts this directory and
`tests/` (for `servers.py`) on `sys.path` for pytest (importlib mode does not), and the
benchmark imports that conftest first.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from servers import free_port
from servers import stop_process as stop

REPO = Path(__file__).resolve().parents[2]
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@dataclass(frozen=True, slots=True)
class Request:
    """One request line seen by the relay; `at` is `time.monotonic()` when it was sent."""

    at: float
    method: str
    path: str

    @property
    def is_write(self) -> bool:
        return self.method in WRITE_METHODS


@dataclass
class CountingRelay:
    """TCP relay to an upstream HTTP server that records each request line sent through it.

    The client side is parsed just enough to find request boundaries (headers, then a
    Content-Length or chunked body); responses, including watch streams, pass through as bytes.
    A long-running request (a watch) is recorded once, when it starts.
    """

    upstream: tuple[str, int]
    requests: list[Request] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> int:
        """Listen on a free loopback port (returned); the accept loop runs in a daemon thread."""
        server = socket.create_server(("127.0.0.1", 0))
        threading.Thread(target=self._accept, args=(server,), daemon=True).start()
        return int(server.getsockname()[1])

    def select(self, since: float, until: float = float("inf"), namespace: str | None = None,
               writes_only: bool = False) -> list[Request]:
        """Requests sent in [since, until], optionally only to one namespace or only writes."""
        with self.lock:
            return [
                request for request in self.requests
                if since <= request.at <= until
                and (not writes_only or request.is_write)
                and (namespace is None or f"/namespaces/{namespace}/" in request.path)
            ]

    def writes(self, since: float, namespace: str | None = None) -> list[Request]:
        return self.select(since, namespace=namespace, writes_only=True)

    def _accept(self, server: socket.socket) -> None:
        while True:
            client, _ = server.accept()
            upstream = socket.create_connection(self.upstream)
            threading.Thread(target=self._pipe, args=(upstream, client), daemon=True).start()
            threading.Thread(target=self._requests, args=(client, upstream), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while chunk := source.recv(65536):
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def _requests(self, client: socket.socket, upstream: socket.socket) -> None:
        reader = client.makefile("rb")
        try:
            while True:
                head = b""
                while not head.endswith(b"\r\n\r\n"):
                    line = reader.readline()
                    if not line:
                        return
                    head += line
                upstream.sendall(head)
                lines = head.decode("latin-1").split("\r\n")
                method, path = lines[0].split(" ")[:2]
                with self.lock:
                    self.requests.append(Request(time.monotonic(), method, path))
                headers = {name.strip().lower(): value.strip() for name, _, value in
                           (line.partition(":") for line in lines[1:] if line)}
                if headers.get("transfer-encoding", "").lower() == "chunked":
                    while True:
                        size_line = reader.readline()
                        upstream.sendall(size_line)
                        size = int(size_line.strip().split(b";")[0], 16)
                        upstream.sendall(reader.read(size + 2))
                        if size == 0:
                            break
                elif int(headers.get("content-length", "0")):
                    upstream.sendall(reader.read(int(headers["content-length"])))
        except (OSError, ValueError):
            pass
        finally:
            try:
                upstream.shutdown(socket.SHUT_WR)
            except OSError:
                pass


def write_relay_kubeconfig(path: Path, port: int) -> Path:
    """A kubeconfig for plain HTTP to the relay (kubectl proxy adds the credentials upstream)."""
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "relay", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
        "users": [{"name": "relay", "user": {}}],
        "contexts": [{"name": "relay", "context": {"cluster": "relay", "user": "relay"}}],
        "current-context": "relay",
    }))
    return path


@contextlib.contextmanager
def relayed_proxy(kubectl_bin: str, kubeconfig: Path, relay_kubeconfig: Path) -> Iterator[CountingRelay]:
    """`kubectl proxy` to the cluster with a counting relay in front of it, for the block.

    Writes `relay_kubeconfig` (plain HTTP to the relay); whoever uses it is counted by the
    yielded relay. The proxy is stopped on exit; the relay's threads are daemons."""
    proxy = subprocess.Popen(
        [kubectl_bin, "--kubeconfig", str(kubeconfig), "proxy", "--port=0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        assert proxy.stdout is not None
        match = re.search(r"127\.0\.0\.1:(\d+)", proxy.stdout.readline())
        if not match:
            raise RuntimeError("kubectl proxy did not report its port")
        relay = CountingRelay(("127.0.0.1", int(match.group(1))))
        write_relay_kubeconfig(relay_kubeconfig, relay.start())
        yield relay
    finally:
        stop(proxy)


def start_operator(kubeconfig: Path, log_path: Path, namespaces: Sequence[str] = (),
                   verbose: bool = True, metrics_port: int | None = None) -> subprocess.Popen[bytes]:
    """`python -m dspy_operator` against `kubeconfig`, output appended to `log_path`.

    `namespaces` empty means cluster-wide (any DSPY_OPERATOR_NAMESPACES of the caller is
    dropped). `verbose` turns on kopf's debug logs: useful in tests, a cost in a benchmark.
    `metrics_port`: where it serves /metrics (default: a free port)."""
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "PYTHONUNBUFFERED": "1"}
    env.pop("DSPY_OPERATOR_NAMESPACES", None)
    # Its metrics on a free port, not 8081: several operators may run on this host at once.
    env["DSPY_OPERATOR_METRICS_PORT"] = str(metrics_port or free_port())
    if namespaces:
        env["DSPY_OPERATOR_NAMESPACES"] = ",".join(namespaces)
    with log_path.open("ab") as log:
        return subprocess.Popen([sys.executable, "-m", "dspy_operator", *(["--verbose"] if verbose else [])],
                                env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
