"""Which secrets the runtime redacts from its log lines, in which spellings."""

from __future__ import annotations

import io
import json
import logging

import pytest

from dspy_runtime.logs import configure_logging, held_secrets, log_fields, redact_also, url_passwords


@pytest.mark.parametrize(
    ("url", "passwords"),
    [
        ("redis://:pw-only-123@redis:6379/0", {"pw-only-123"}),
        ("rediss://user:user-pw-456@redis:6380/1", {"user-pw-456"}),
        ("redis://redis:6379/0?password=query-pw-789&db=2", {"query-pw-789"}),
        ("unix://:sock-pw-000@/run/redis.sock", {"sock-pw-000"}),
        ("redis://redis:6379/0", set()),
        ("redis://user@redis:6379/0", set()),
        ("not a url", set()),
        ("http://[broken", set()),
    ],
)
def test_url_passwords(url, passwords):
    assert url_passwords(url) == passwords


def test_held_secrets_are_the_settings_the_secret_names_and_every_urls_password():
    environ = {
        "LM_API_KEY": "sk-primary-000000",
        "LM_API_KEY_OPTIMIZED": "sk-variant-111111",
        "ANTHROPIC_API_KEY": "sk-ant-222222",
        "REDIS_PASSWORD": "managed-pw-333333",
        "HF_TOKEN": "hf_444444",
        "AWS_SECRET_ACCESS_KEY": "aws-555555",
        "REDIS_URL": "redis://:p%40ss-666666@redis:6379/0",
        "LM_API_BASE": "http://proxy-user:proxy-pw-777777@proxy:4000/v1",
        "LM_MAX_TOKENS": "1000000",
        "PATH": "/usr/bin:/bin",
    }
    found = held_secrets(["sk-from-settings-888888"], environ)
    assert {"sk-from-settings-888888", "sk-primary-000000", "sk-variant-111111", "sk-ant-222222",
            "managed-pw-333333", "hf_444444", "aws-555555", "p%40ss-666666", "proxy-pw-777777"} <= found
    assert "1000000" not in found and "/usr/bin:/bin" not in found, "names that only look alike are not secrets"


def lines_logged(secrets, *messages, later=()):
    stream = io.StringIO()
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    try:
        configure_logging("INFO", "json", secrets)
        root.handlers[0].stream = stream
        redact_also(later)
        for message in messages:
            logging.getLogger("test").info("%s", message, extra={"fields": {"inputs": {"q": message}}})
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
    return stream.getvalue()


def test_each_secret_is_redacted_as_written_url_encoded_decoded_and_json_escaped():
    password = "p@ss/w0rd\\with\"quote"
    output = lines_logged(
        [password, "sk-short", "abc"],
        f"plain {password}", "encoded p%40ss%2Fw0rd%5Cwith%22quote", "key sk-short and abc",
    )
    output += lines_logged([], "no secrets configured: abc")
    assert "w0rd" not in output and "sk-short" not in output
    assert output.count("***") >= 4
    assert "abc" in output, "values shorter than 6 characters are not redacted"
    assert all(json.loads(line) for line in output.splitlines())


def test_a_secret_found_after_start_is_redacted_from_then_on():
    output = lines_logged([], "the key a table names: sk-from-a-routing-table", later=["sk-from-a-routing-table"])
    assert "sk-from-a-routing-table" not in output


def _written(log, extra_handler=None):
    """What ``log(logger)`` writes through configure_logging's JSON handler, line by line (ts masked)."""
    stream = io.StringIO()
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    try:
        configure_logging("INFO", "json", ["sk-secret-999999"])
        root.handlers[0].stream = stream
        if extra_handler is not None:
            root.addHandler(extra_handler)
        log(logging.getLogger("dspy_runtime.access"))
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
    return [{**json.loads(line), "ts": "<ts>"} for line in stream.getvalue().splitlines()]


FIELDS = {"request_id": "r1", "status": 200, "inputs": {"q": "key sk-secret-999999"}, "when": object}


@pytest.mark.parametrize("level", [logging.INFO, logging.WARNING])
def test_log_fields_writes_the_very_line_logging_writes(level):
    by_logging = _written(lambda logger: logger.log(level, "request", extra={"fields": FIELDS}))
    direct = _written(lambda logger: log_fields(logger, level, "request", FIELDS))
    assert direct == by_logging and len(direct) == 1
    assert direct[0]["inputs"] == {"q": "key ***"} and direct[0]["level"] == logging.getLevelName(level).lower()


def test_log_fields_writes_nothing_below_the_level():
    assert _written(lambda logger: log_fields(logger, logging.DEBUG, "request", FIELDS)) == []


def test_log_fields_hands_a_record_to_logging_when_another_handler_listens():
    class Keep(logging.Handler):
        records: list[logging.LogRecord] = []

        def emit(self, record):
            self.records.append(record)

    lines = _written(lambda logger: log_fields(logger, logging.INFO, "request", FIELDS), extra_handler=Keep())
    assert len(lines) == 1 and lines[0]["request_id"] == "r1"
    assert [r.fields for r in Keep.records] == [FIELDS]
