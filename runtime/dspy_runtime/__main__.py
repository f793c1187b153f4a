"""``dspy-runtime``: serve the configured DSPy program with uvicorn (``server.build_server``).

Exit codes: 0 after a clean stop, SIGTERM included (the normal way Kubernetes
stops a pod: stop accepting, finish in-flight requests, exit); 2 for invalid
settings; 3 when the app cannot start (e.g. an unknown DSPy module).
"""

from __future__ import annotations

import os
import signal
import sys
from types import FrameType

from pydantic import ValidationError
from pydantic_settings import SettingsError

from .app import create_app
from .logs import configure_logging, held_secrets
from .server import build_server
from .settings import RuntimeSettings, describe_errors, get_settings

EXIT_BAD_SETTINGS = 2
EXIT_STARTUP_FAILURE = 3


def _secrets(settings: RuntimeSettings) -> set[str]:
    values = [settings.lm_api_key, settings.openai_api_key, settings.redis_url, settings.cache_admin_token,
              *settings.lm_fallback_api_keys.values()]
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
    server = build_server(create_app(settings), settings)
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
