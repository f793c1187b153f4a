"""Logging: one JSON object per line (``LOG_FORMAT=json``) or readable text.

Structured fields travel in ``extra={"fields": {...}}`` (other record attributes are
ignored: libraries attach their own); the current request id comes
from a context variable set by the request middleware, so every line logged while
serving a request (ours, DSPy's, uvicorn's) carries it.

The formatter is a few lines on orjson rather than a dependency (structlog,
python-json-logger): the runtime needs exactly this field set, the request id from
a contextvar and secret redaction, nothing more.

Every request logs a line, so the cost of one line matters (it was the largest
single cost of a cached prediction): timestamps come from ``IsoTimestamps``,
and ``configure_logging`` turns off the
record attributes no format here prints (caller file and line, thread, process),
as the logging HOWTO's "Optimization" section describes.

Secrets: every secret the process holds is replaced by ``***`` in every line, whatever
logger produced it, as a last line of defence behind "never log settings or provider
errors verbatim" (a user may still paste a key into an input that ``LOG_INPUTS`` logs).
``held_secrets`` finds them: the settings' secret values; every environment variable
whose name says it is one (``LM_API_KEY_<VARIANT>``, ``*_API_KEY``, ``*PASSWORD*``,
``*SECRET*``, ``*_TOKEN``, ...: the per-variant keys the operator sets, the provider keys
litellm reads, the managed Redis' ``REDIS_PASSWORD``); and the password inside any URL
(``REDIS_URL`` as ``user:pw@``, ``:pw@`` or ``?password=``, percent-encoded or not). A key a
routing table names by another variable (``apiKeyEnv``) is added when the table is read
(``redact_also``). Each is matched as written, percent-decoded and encoded, and as JSON
escapes it; values shorter than 6 characters are left alone (they would redact innocent text).
"""

from __future__ import annotations

import logging
import re
import sys
import time
from collections.abc import Iterable, Mapping
from contextvars import ContextVar
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

import orjson

from .clock import IsoTimestamps

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)


SECRET_NAME = re.compile(r"(?:^|_)(?:API_?KEY|PASSWORD|PASSWD|SECRET|TOKEN|CREDENTIALS?)(?:_|$)", re.IGNORECASE)
"""Environment variable names that hold a secret: ``LM_API_KEY_OPTIMIZED``, ``REDIS_PASSWORD``,
``AWS_SECRET_ACCESS_KEY``, ``HF_TOKEN``; not ``LM_MAX_TOKENS``."""
MIN_SECRET_LENGTH = 6


def url_passwords(value: str) -> set[str]:
    """The passwords in ``value`` if it is a URL: ``scheme://user:pw@host`` and ``?password=pw``."""
    if "://" not in value:
        return set()
    try:
        parts = urlsplit(value)
        found = {parts.password} if parts.password else set()
    except ValueError:  # not a URL after all (a bad port, brackets)
        return set()
    found.update(v for k, v in parse_qsl(parts.query, keep_blank_values=False) if k.lower() == "password")
    return found


def held_secrets(values: Iterable[str], environ: Mapping[str, str]) -> set[str]:
    """``values`` (the settings' secrets), every environment variable named like a secret, and the
    password of every URL among them and the environment (see the module docstring)."""
    found = {value for value in values if value}
    found.update(value for name, value in environ.items() if SECRET_NAME.search(name) and value)
    for value in [*found, *environ.values()]:
        found |= url_passwords(value)
    return found


def _spellings(secret: str) -> set[str]:
    """How ``secret`` may appear in a line: as is, percent-decoded or encoded (in a URL), JSON-escaped."""
    forms = {secret, unquote(secret), quote(secret, safe="")}
    return forms | {orjson.dumps(form).decode()[1:-1] for form in forms}


class _Redactor:
    def __init__(self, secrets: Iterable[str]) -> None:
        self._secrets: list[str] = []
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        # Short values would redact innocent text; real keys are long. Longest first, so a
        # secret that contains another (a URL and its password) goes whole.
        forms = {form for secret in secrets if secret for form in _spellings(secret)}
        kept = {form for form in forms if len(form) >= MIN_SECRET_LENGTH}
        self._secrets = sorted(kept | set(self._secrets), key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, "***")
        return text


def _add_fields(record: logging.LogRecord, line: dict[str, Any]) -> dict[str, Any]:
    """``line`` with the record's structured fields and, unless they carry one, the current request id."""
    return _with_fields(line, getattr(record, "fields", None))


def _with_fields(line: dict[str, Any], extra: Any) -> dict[str, Any]:
    if isinstance(extra, dict):
        line.update(extra)
    if "request_id" not in line:
        request_id = request_id_var.get()
        if request_id is not None:
            line["request_id"] = request_id
    return line


class JsonFormatter(logging.Formatter):
    def __init__(self, redact: _Redactor) -> None:
        super().__init__()
        self.redact = redact
        self._timestamp = IsoTimestamps()

    def format(self, record: logging.LogRecord) -> str:
        line = self.fields(record.created, record.levelname, record.name, record.getMessage(), getattr(record, "fields", None))
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return self.text(line)

    def fields(self, created: float, level: str, logger: str, message: str, extra: Any) -> dict[str, Any]:
        """The fields of one line (``extra``: a record's ``fields``), before any exception."""
        line = {"ts": self._timestamp(created), "level": level.lower(), "logger": logger, "message": message}
        return _with_fields(line, extra)

    def text(self, line: dict[str, Any]) -> str:
        return self.redact(orjson.dumps(line, default=str).decode())


class TextFormatter(logging.Formatter):
    def __init__(self, redact: _Redactor) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")
        self.redact = redact

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = _add_fields(record, {})
        if fields:
            text += " " + " ".join(f"{key}={value}" for key, value in fields.items())
        return self.redact(text)


class LineHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """``StreamHandler`` that writes each line with one ``write`` and no ``flush``.

    ``StreamHandler.emit`` writes, then flushes under a second acquisition of the
    handler lock; every request logs a line, and that pair was a measurable part of
    a cached prediction. The stream is ``sys.stderr``, which Python (3.9+) keeps
    line-buffered even when it is a pipe or a file, so the newline flushes it.
    """

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.stream.write(self.format(record) + "\n")
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)


def _sole_json_handler(logger: logging.Logger, level: int) -> LineHandler | None:
    """The handler a record of ``logger`` at ``level`` would reach, when that is only
    ``configure_logging``'s JSON ``LineHandler`` and nothing (a filter, another handler, a test's
    capture) would see the record itself; else None."""
    if logger.filters:
        return None
    found: list[logging.Handler] = []
    current: logging.Logger | None = logger
    while current is not None:
        found.extend(current.handlers)
        current = current.parent if current.propagate else None  # type: ignore[assignment]
    if len(found) != 1:
        return None
    handler = found[0]
    if type(handler) is not LineHandler or handler.filters or level < handler.level:
        return None
    return handler if isinstance(handler.formatter, JsonFormatter) else None


def log_fields(logger: logging.Logger, level: int, message: str, fields: dict[str, Any]) -> None:
    """``logger.log(level, message, extra={"fields": fields})``: the same line, written without a
    ``LogRecord`` when only the runtime's JSON handler would see it (``_sole_json_handler``).

    For the line every request logs: building the record and passing it through the logging
    machinery was most of that line's cost (about 20 µs of the 27 µs it took on this machine).
    """
    if not logger.isEnabledFor(level):
        return
    handler = _sole_json_handler(logger, level)
    if handler is None:
        logger.log(level, message, extra={"fields": fields})
        return
    formatter: JsonFormatter = handler.formatter  # type: ignore[assignment]
    text = formatter.text(formatter.fields(time.time(), logging.getLevelName(level), logger.name, message, fields))
    with handler.lock:  # type: ignore[union-attr]
        handler.stream.write(text + "\n")


def configure_logging(level: str = "INFO", fmt: str = "json", secrets: Iterable[str] = ()) -> None:
    """Route every logger (uvicorn's included) to one stderr handler with our format."""
    redact = _Redactor(secrets)
    handler = LineHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(redact) if fmt == "json" else TextFormatter(redact))
    # Attributes of every LogRecord that neither format prints; each costs a call per line.
    logging._srcfile = None  # no caller lookup (file, line, function)
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    # Libraries below the runtime speak only when something is wrong; their debug
    # output can include full requests.
    for name in ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy", "litellm", "httpx", "httpcore", "dspy"):
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLevelName(level)))


def redact_also(secrets: Iterable[str]) -> None:
    """Redact ``secrets`` from now on, in every line ``configure_logging``'s handler writes: for
    secrets found after start (the API key a routing table names by ``apiKeyEnv``)."""
    for handler in logging.getLogger().handlers:
        redact = getattr(handler.formatter, "redact", None)
        if isinstance(redact, _Redactor):
            redact.add(secrets)


class ProblemLog:
    """Logs a recurring problem once, until it changes or clears.

    A routing table that stays broken, or a Redis that stays down, would otherwise log
    the same line on every poll or retry; a different problem is logged at once.
    """

    def __init__(self, logger: logging.Logger, level: int = logging.WARNING) -> None:
        self._logger = logger
        self._level = level
        self._last: str | None = None

    def report(self, message: str) -> bool:
        """Log ``message`` unless it is the problem logged last; True when it was logged."""
        if message == self._last:
            return False
        self._last = message
        self._logger.log(self._level, message)
        return True

    def clear(self, recovered: str | None = None) -> None:
        """The problem is over; ``recovered`` is logged (INFO) when there was one."""
        if self._last is not None and recovered is not None:
            self._logger.info(recovered)
        self._last = None
