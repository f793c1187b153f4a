"""``dspy-runtime``: serve the configured DSPy program with uvicorn.

One worker per pod (Kubernetes scales pods, and the in-process cache and
single-flight work best in one process), uvloop and httptools when installed,
uvicorn's access log off (the runtime logs one JSON line per request itself).

Exit codes: 0 after a clean stop, SIGTERM included (the normal way Kubernetes
stops a pod: stop accepting, finish in-flight requests, exit); 2 for invalid
settings; 3 when the app cannot start (e.g. an unknown DSPy module).
"""

from __future__ import annotations

import os
import signal
import sys
from types import FrameType

import uvicorn
from pydantic import ValidationError
from pydantic_settings import SettingsError

from .app import create_app
from .logs import configure_logging, held_secrets
from .settings import RuntimeSettings, describe_errors, get_settings

EXIT_BAD_SETTINGS = 2
EXIT_STARTUP_FAILURE = 3


def _secrets(settings: RuntimeSettings) -> set[str]:
    values = [settings.lm_api_key, settings.openai_api_key, settings.redis_url, *settings.lm_fallback_api_keys.values()]
    return held_secrets((v.get_secret_value() for v in values if v is not None), os.environ)


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def main() -> int:
    try:
        settings = get_settings()
    except ValidationError as exc:
        print(f"dspy-runtime: {describe_errors(exc)}", file=sys.stderr)
        return EXIT_BAD_SETTINGS
    except SettingsError as exc:
        print(f"dspy-runtime: invalid settings: {exc}", file=sys.stderr)
        return EXIT_BAD_SETTINGS
    configure_logging(settings.log_level, settings.log_format, _secrets(settings))
    config = uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        workers=1,
        loop="auto",
        http="auto",
        lifespan="on",
        access_log=False,
        log_config=None,  # keep the handlers configure_logging installed
        log_level=settings.log_level.lower(),
        server_header=False,
        timeout_graceful_shutdown=settings.shutdown_timeout_secs,
    )
    server = uvicorn.Server(config)
    # Uvicorn drains on SIGTERM, then restores the previous handler and re-raises the
    # signal, which would end the process "killed by SIGTERM". With this handler in
    # place the re-raised signal becomes a normal exit 0.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    try:
        server.run()
    except SystemExit as exc:
        if exc.code not in (0, None):  # uvicorn's own startup failure exit
            return EXIT_STARTUP_FAILURE
    return 0 if server.started else EXIT_STARTUP_FAILURE


if __name__ == "__main__":
    sys.exit(main())
