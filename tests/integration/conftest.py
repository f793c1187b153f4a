"""Fixtures for integration tests on real parts.

Redis: one real ``redis-server`` per test session on a free 127.0.0.1 port, with no
persistence, in a temp dir. ``redis_server.stop()`` / ``.start()`` let a test kill
Redis mid-traffic and bring it back on the same port; ``redis_url`` restarts it if
a previous test left it stopped, and empties it, so tests never see each other's keys.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

# The server processes are shared with the e2e suite (tests/servers.py); importlib mode does
# not put tests/ on sys.path, and conftest is loaded first.
if str(Path(__file__).resolve().parents[1]) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from servers import (  # noqa: E402
    NO_PERSISTENCE, STARTUP_TIMEOUT, FakeLMServer, PrometheusServer, RedisServer, free_port, metric_sum,
    running_fake_lm, running_prometheus, running_redis, wait_until,
)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with running_redis(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture
def managed_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of its own, configured as the operator configures the managed Redis
    (persistence and eviction policy, ``reconcile/desired.py``), 4 MB of memory, in this test's
    directory: ``kill()`` and ``start()`` are a crash and the container's restart."""
    from dspy_operator.reconcile.desired import redis_server_args

    with running_redis(tmp_path, tuple(redis_server_args(MANAGED_REDIS_TEST_MB))) as server:
        yield server


MANAGED_REDIS_TEST_MB = 4
"""Small enough that a test fills it with cache entries in a second."""

@pytest.fixture
def password_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of its own that requires a password (``.password``) with characters a URL
    must percent-encode, so the password appears in REDIS_URL in another spelling."""
    config = ("--requirepass", "r3dis/pa+ss@word-NEVER-IN-OUTPUT", *NO_PERSISTENCE)
    with running_redis(tmp_path, config) as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The URL of a running, empty Redis."""
    redis_server.start()
    redis_server.flushall()
    return redis_server.url


# ---- fake LM and runtime servers (runtime app tests) ---------------------------------------------
#
# ``fake_lm``: one ``python -m dspy_runtime.fakelm`` process per session, reset (counters
# and config) for every test. ``start_runtime(**settings)``: the runtime app under a real
# uvicorn server in a thread, on a free loopback port (fast: DSPy is imported once).
# ``spawn_runtime(env)``: the real ``dspy-runtime`` console script as a child process,
# for what only a process shows (signals, exit codes, everything it prints).

TEST_API_KEY = "sk-test-THIS-KEY-MUST-NEVER-APPEAR-0123456789"
FAKE_MODEL = "openai/fake-model"
FAKE_PRICING = '{"openai/fake-model": {"promptPerMillion": 1000, "completionPerMillion": 2000}, "openai/fake-fallback": {"promptPerMillion": 1, "completionPerMillion": 1}}'


@pytest.fixture(scope="session")
def fake_lm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeLMServer]:
    with running_fake_lm(tmp_path_factory.mktemp("fakelm")) as server:
        yield server


@pytest.fixture
def fake_lm(fake_lm_server: FakeLMServer) -> FakeLMServer:
    """The fake LM with zeroed counters and fixed token usage (100 in, 20 out per call)."""
    fake_lm_server.reset(prompt_tokens=100, completion_tokens=20)
    return fake_lm_server


@pytest.fixture
def second_fake_lm(tmp_path: Path) -> Iterator[FakeLMServer]:
    """Another fake LM on its own port: a fallback's separate endpoint."""
    with running_fake_lm(tmp_path) as server:
        server.reset(prompt_tokens=100, completion_tokens=20)
        yield server


class RuntimeServer:
    """The runtime app served by uvicorn in a thread."""

    def __init__(self, settings: Any) -> None:
        import uvicorn

        from dspy_runtime.app import create_app

        self.settings = settings
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.app = create_app(settings)
        config = uvicorn.Config(
            self.app, host="127.0.0.1", port=self.port, log_config=None, access_log=False, lifespan="on"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name=f"runtime-{self.port}", daemon=True)
        self.thread.start()
        wait_until(lambda: self.server.started or not self.thread.is_alive(), STARTUP_TIMEOUT, what="runtime start")
        if not self.server.started:
            raise RuntimeError("the runtime app failed to start; see the log output")
        self.client = httpx.Client(base_url=self.url, timeout=60)

    @property
    def runtime(self) -> Any:
        return self.app.state.runtime

    def predict(self, body: dict[str, Any] | None = None, **kwargs: Any) -> httpx.Response:
        return self.client.post("/v1/predict", json=body, **kwargs)

    def metric(self, name: str, **labels: str) -> float:
        """The sum of ``name``'s samples whose labels include ``labels``, from GET /metrics."""
        return metric_sum(self.client.get("/metrics").text, name, **labels)

    def stop(self) -> None:
        self.client.close()
        self.server.should_exit = True
        self.thread.join(timeout=60)


def runtime_settings(fake: FakeLMServer, **overrides: Any) -> Any:
    """Settings for a runtime against the fake LM; keyword arguments override (field names)."""
    from dspy_runtime.settings import RuntimeSettings

    values: dict[str, Any] = {
        "host": "127.0.0.1",
        "lm_model": FAKE_MODEL,
        "lm_api_base": fake.api_base,
        "lm_api_key": TEST_API_KEY,
        "openai_api_key": None,
        "lm_pricing": FAKE_PRICING,
        "lm_retry_base_delay_secs": 0.0,
        "lm_retry_max_delay_secs": 0.0,
        # The routing and cache tests pin variants and skip the cache; test_pinning_and_bypass.py
        # checks that both are refused by default.
        "allow_pinning": True,
        "allow_cache_bypass": True,
        "redis_url": None,
    }
    values.update(overrides)
    return RuntimeSettings(**values)


@pytest.fixture
def start_runtime(fake_lm: FakeLMServer) -> Iterator[Callable[..., RuntimeServer]]:
    """``start_runtime(**settings)`` -> a running ``RuntimeServer``; all are stopped after the test."""
    servers: list[RuntimeServer] = []

    def start(**overrides: Any) -> RuntimeServer:
        server = RuntimeServer(runtime_settings(fake_lm, **overrides))
        servers.append(server)
        return server

    try:
        yield start
    finally:
        for server in servers:
            server.stop()


class RuntimeProcess:
    """``dspy-runtime`` as a child process; stdout and stderr go to one file."""

    def __init__(self, env: dict[str, str], workdir: Path) -> None:
        self.port = int(env["PORT"])
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / f"runtime-{self.port}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in wait()
        executable = Path(sys.executable).with_name("dspy-runtime")
        self.process = subprocess.Popen([str(executable)], env=env, stdout=self._log, stderr=subprocess.STDOUT)

    def wait_ready(self) -> None:
        def ready() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"dspy-runtime exited with {self.process.returncode}:\n{self.output()}")
            try:
                return httpx.get(f"{self.url}/ready", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(ready, STARTUP_TIMEOUT, interval=0.2, what="dspy-runtime to be ready")

    def metric(self, name: str, **labels: str) -> float:
        """``RuntimeServer.metric`` for the process."""
        return metric_sum(httpx.get(f"{self.url}/metrics", timeout=10).text, name, **labels)

    def output(self) -> str:
        # The child writes to the file directly; our handle buffers nothing.
        return self.log_path.read_text(errors="replace")

    def wait(self, timeout: float = 120.0) -> int:
        try:
            return self.process.wait(timeout=timeout)
        finally:
            self._log.close()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._log.close()


@contextlib.contextmanager
def _spawner(fake: FakeLMServer, home: Path) -> Iterator[Callable[..., RuntimeProcess]]:
    """``spawn(**env)`` -> a started ``dspy-runtime`` against ``fake``; all are killed at the end."""
    processes: list[RuntimeProcess] = []

    def spawn(**env: str) -> RuntimeProcess:
        full = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(home),
            "LITELLM_LOCAL_MODEL_COST_MAP": "true",
            "HOST": "127.0.0.1",
            "PORT": str(free_port()),
            "LM_MODEL": FAKE_MODEL,
            "LM_API_BASE": fake.api_base,
            "LM_API_KEY": TEST_API_KEY,
            "LM_PRICING": FAKE_PRICING,
            "ALLOW_PINNING": "true",
            "ALLOW_CACHE_BYPASS": "true",
            **env,
        }
        process = RuntimeProcess(full, home)
        processes.append(process)
        return process

    try:
        yield spawn
    finally:
        for process in processes:
            process.kill()


@pytest.fixture
def spawn_runtime(fake_lm: FakeLMServer, tmp_path: Path) -> Iterator[Callable[..., RuntimeProcess]]:
    """``spawn_runtime(**env)`` -> a started ``dspy-runtime`` process against the fake LM."""
    with _spawner(fake_lm, tmp_path) as spawn:
        yield spawn


@pytest.fixture(scope="module")
def spawn_module_runtime(
    fake_lm_server: FakeLMServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., RuntimeProcess]]:
    """``spawn_runtime`` for a whole test module: one process start (seconds: DSPy's import)
    shared by tests that only send it requests. Its fake LM is reset by other tests."""
    with _spawner(fake_lm_server, tmp_path_factory.mktemp("runtime")) as spawn:
        yield spawn


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[PrometheusServer]:
    """A real Prometheus server (the pinned build), scraping nothing until `scrape(...)` is called."""
    with running_prometheus(tmp_path / "prometheus") as server:
        yield server


@pytest.fixture
def poll() -> Callable[..., Any]:
    """``poll(predicate, timeout=60, what=...)``: wait for a condition instead of sleeping."""
    return wait_until


@pytest.fixture
def test_api_key() -> str:
    """The LM API key every test runtime is given; it must never appear in output or responses."""
    return TEST_API_KEY
