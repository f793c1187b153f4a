"""Server processes the integration and e2e suites both start: a real redis-server, the
project's fake LM and a real Prometheus server (built from its Go module by
hack/prometheus.sh), each on a free loopback port. Imported by both levels' conftest.py."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import yaml

REPO = Path(__file__).resolve().parents[1]

STARTUP_TIMEOUT = 180.0  # two shared cores and a parallel Go build: be patient


def wait_until(predicate: Callable[[], Any], timeout: float = 60.0, interval: float = 0.05, what: str = "condition") -> Any:
    """Poll ``predicate`` until it returns a truthy value (returned), or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _send(port: int, command: bytes, timeout: float = 1.0) -> bytes:
    """One raw RESP inline command; keeps the fixture independent of the client under test."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(command + b"\r\n")
        return sock.recv(64)


def stop_process(process: subprocess.Popen[bytes] | subprocess.Popen[str], timeout: float = 30.0) -> None:
    """SIGTERM, then SIGKILL after `timeout`: servers drain on SIGTERM (kopf finishes its
    handlers, the runtime its requests), and a stuck one must not outlive the suite."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def metric_sum(exposition: str, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``, in a Prometheus text body."""
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


NO_PERSISTENCE: tuple[str, ...] = ("--save", "", "--appendonly", "no")
"""A test Redis forgets everything when it stops, unless a test asks for other settings."""


class RedisServer:
    """A ``redis-server`` child process that can be stopped (or killed) and restarted on one port;
    ``config`` are the server settings after port, bind and dir (persistence, eviction, ...)."""

    def __init__(self, executable: str, workdir: Path, config: tuple[str, ...] = NO_PERSISTENCE) -> None:
        self.executable = executable
        self.workdir = workdir
        self.config = config
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def password(self) -> str | None:
        """The ``--requirepass`` of ``config``; None for a Redis open to any client."""
        if "--requirepass" not in self.config:
            return None
        return self.config[self.config.index("--requirepass") + 1]

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = 20.0) -> None:
        if self.running:
            return
        log = open(self.workdir / "redis.log", "ab")  # noqa: SIM115 - handed to the child process
        self._process = subprocess.Popen(
            [
                self.executable,
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--dir", str(self.workdir),
                "--protected-mode", "yes",
                *self.config,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self._process.returncode}; see {self.workdir}/redis.log")
            try:
                if _send(self.port, b"PING").startswith((b"+PONG", b"-NOAUTH")):  # NOAUTH: up, with a password
                    return
            except OSError:
                pass
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"redis-server did not answer on port {self.port} within {timeout}s")

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            stop_process(process, timeout=10)

    def kill(self) -> None:
        """SIGKILL, as a crash or the OOM killer would: no shutdown save, no goodbye to clients."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()

    def flushall(self) -> None:
        _send(self.port, b"FLUSHALL")


class FakeLMServer:
    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.api_base = f"{self.base}/v1"
        self._log = open(workdir / "fakelm.log", "ab")  # noqa: SIM115 - closed in stop()
        self._process = subprocess.Popen(
            [sys.executable, "-m", "dspy_runtime.fakelm", "--port", str(self.port)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

        def up() -> bool:
            try:
                return httpx.get(f"{self.base}/health", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(up, STARTUP_TIMEOUT, what="the fake LM to start")

    def stats(self) -> dict[str, Any]:
        return httpx.get(f"{self.base}/stats", timeout=10).json()

    @property
    def calls(self) -> int:
        return int(self.stats()["calls"])

    def configure(self, **config: Any) -> None:
        httpx.post(f"{self.base}/admin/config", json=config, timeout=10).raise_for_status()

    def reset(self, **config: Any) -> None:
        httpx.post(f"{self.base}/admin/reset", json=config, timeout=10).raise_for_status()

    def release(self) -> int:
        """Let the calls held for ``hold_models`` answer; how many there were."""
        response = httpx.post(f"{self.base}/admin/release", timeout=10)
        response.raise_for_status()
        return int(response.json()["released"])

    def stop(self) -> None:
        stop_process(self._process, timeout=10)
        self._log.close()


class PrometheusServer:
    """A ``prometheus`` child process scraping loopback targets every second.

    Targets are set (and changed) with `scrape`: the config is rewritten and reloaded through the
    lifecycle endpoint, so a test can point it at processes it starts later. Each target's labels
    stand in for what the chart's PodMonitor relabels from the pod (`namespace`, `dspy_deployment`).
    """

    SCRAPE_SECONDS = 1

    def __init__(self, executable: str, workdir: Path) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        workdir.mkdir(parents=True, exist_ok=True)
        self._config = workdir / "prometheus.yml"
        self._write({})
        self._log = open(workdir / "prometheus.log", "ab")  # noqa: SIM115 - closed in stop()
        self._process = subprocess.Popen(
            [executable, f"--config.file={self._config}", f"--storage.tsdb.path={workdir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--web.enable-lifecycle", "--log.level=warn"],
            stdout=self._log, stderr=subprocess.STDOUT,
        )

        def up() -> bool:
            if self._process.poll() is not None:
                raise AssertionError(f"prometheus exited {self._process.returncode}: see {workdir / 'prometheus.log'}")
            try:
                return httpx.get(f"{self.base}/-/ready", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(up, STARTUP_TIMEOUT, what="prometheus to start")

    def _write(self, jobs: Mapping[str, Sequence[tuple[str, Mapping[str, str]]]]) -> None:
        config = {
            "global": {"scrape_interval": f"{self.SCRAPE_SECONDS}s", "evaluation_interval": f"{self.SCRAPE_SECONDS}s"},
            "scrape_configs": [
                {"job_name": job, "scrape_timeout": f"{self.SCRAPE_SECONDS}s",
                 "static_configs": [{"targets": [address], "labels": dict(labels)} for address, labels in targets]}
                for job, targets in jobs.items()
            ],
        }
        self._config.write_text(yaml.safe_dump(config))

    def scrape(self, jobs: Mapping[str, Sequence[tuple[str, Mapping[str, str]]]]) -> None:
        """Scrape exactly these targets (job -> [(host:port, labels)]), from the next second on."""
        self._write(jobs)
        httpx.post(f"{self.base}/-/reload", timeout=30).raise_for_status()
        wanted = {address for targets in jobs.values() for address, _ in targets}
        wait_until(lambda: wanted <= self.healthy_targets(), STARTUP_TIMEOUT, what=f"prometheus to scrape {sorted(wanted)}")

    def healthy_targets(self) -> set[str]:
        active = httpx.get(f"{self.base}/api/v1/targets", timeout=10).json()["data"]["activeTargets"]
        return {target["labels"]["instance"] for target in active if target["health"] == "up"}

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The result of an instant query now; a query Prometheus rejects fails with its reason."""
        answer = httpx.get(f"{self.base}/api/v1/query", params={"query": expr}, timeout=30).json()
        if answer.get("status") != "success":
            raise AssertionError(f"prometheus rejected {expr!r}: {answer.get('error')}")
        return list(answer["data"]["result"])

    def stop(self) -> None:
        stop_process(self._process, timeout=10)
        self._log.close()


@contextlib.contextmanager
def running_redis(workdir: Path, config: tuple[str, ...] = NO_PERSISTENCE) -> Iterator[RedisServer]:
    """A started redis-server, stopped on exit; a missing binary is a clear failure."""
    executable = shutil.which("redis-server")
    if executable is None:
        raise RuntimeError("redis-server is not installed: run `make debs`")
    server = RedisServer(executable, workdir, config)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def running_fake_lm(workdir: Path) -> Iterator[FakeLMServer]:
    """A started fake LM, stopped on exit."""
    server = FakeLMServer(workdir)
    try:
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def running_prometheus(workdir: Path) -> Iterator[PrometheusServer]:
    """A started Prometheus with no target yet (see `PrometheusServer.scrape`), stopped on exit.
    The binary is the pinned build cached by `make prometheus-build` (built here when missing)."""
    executable = subprocess.run([str(REPO / "hack" / "prometheus.sh"), "path"], check=True,
                                capture_output=True, text=True).stdout.strip()
    server = PrometheusServer(executable, workdir)
    try:
        yield server
    finally:
        server.stop()
