"""RuntimeSettings: environment names, defaults, validation messages, no secrets in /config."""

from __future__ import annotations

import socket

import pytest
from pydantic import ValidationError

from dspy_runtime.routing import fallback_lm_specs
from dspy_runtime.settings import RuntimeSettings, describe_errors, get_settings, redact_url

ENV_NAMES = (
    "OPENAI_API_KEY", "LM_API_KEY", "LM_MODEL", "LM_FALLBACK_MODELS", "LM_PRICING", "REDIS_URL",
    "DSPY_MODULE", "DSPY_SIGNATURE", "PROGRAM_PATH", "ROUTING_PATH", "DAILY_BUDGET_USD", "PORT", "LOG_LEVEL",
    "LM_API_BASE", "ROUTING_REDIS_KEY", "DSPY_RESOURCE", "WINDOW_FLUSH_SECS", "HOSTNAME", "POD_NAME",
    "RATE_LIMIT_RPS", "RATE_LIMIT_BURST", "RATE_LIMIT_KEY_HEADER", "RATE_LIMIT_TOTAL_RPS", "RATE_LIMIT_TOTAL_BURST",
    "RATE_LIMIT_SCOPE", "RUNTIME_REPLICAS",
    "MAX_BATCH_ITEMS", "BATCH_CONCURRENCY",
)  # fmt: skip


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)


def test_defaults():
    s = get_settings()
    assert (s.host, s.port, s.log_format, s.log_level) == ("0.0.0.0", 8080, "json", "INFO")
    assert s.max_body_bytes == 1024 * 1024 and s.max_header_bytes == 64 * 1024
    assert (s.header_timeout_secs, s.body_timeout_secs, s.keep_alive_timeout_secs) == (10.0, 30.0, 5)
    assert s.memory_cache_size == 10_000 and s.cache_enabled
    assert (s.circuit_breaker_failure_threshold, s.circuit_breaker_success_threshold) == (5, 2)
    assert s.lm_fallback_models == ()
    assert s.daily_budget_usd is None and s.rate_limit_rps == 0
    assert s.effective_lm_api_key is None
    assert (s.max_batch_items, s.batch_concurrency) == (100, 8)


def test_environment_names_and_parsing(monkeypatch):
    monkeypatch.setenv("PORT", "9000")
    monkeypatch.setenv("LOG_LEVEL", "debug")
    monkeypatch.setenv("LOG_FORMAT", "TEXT")
    monkeypatch.setenv("LM_FALLBACK_MODELS", " openai/a, ,openai/b ")
    monkeypatch.setenv("LM_PRICING", '{"openai/a": {"promptPerMillion": 0.15, "completionPerMillion": 0.6}}')
    monkeypatch.setenv("CIRCUIT_BREAKER_TIMEOUT_SECS", "1.5")
    monkeypatch.setenv("RATE_LIMIT_RPS", "2.5")
    monkeypatch.setenv("DAILY_BUDGET_USD", "0")
    monkeypatch.setenv("LM_API_BASE", "")
    s = get_settings()
    assert s.port == 9000 and s.log_level == "DEBUG" and s.log_format == "text"
    assert s.lm_fallback_models == ("openai/a", "openai/b")
    assert s.lm_pricing["openai/a"].completion_per_million == 0.6
    assert s.circuit_breaker_timeout_secs == 1.5
    assert s.effective_rate_limit_burst == 3
    assert s.daily_budget_usd is None  # 0 means unlimited
    assert s.lm_api_base is None  # blank means unset


def test_lm_api_key_falls_back_to_openai_api_key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai-key")
    assert get_settings().effective_lm_api_key.get_secret_value() == "sk-openai-key"
    monkeypatch.setenv("LM_API_KEY", "sk-lm-key")
    assert get_settings().effective_lm_api_key.get_secret_value() == "sk-lm-key"


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        ("DSPY_MODULE", "Telepathy", "unknown DSPy module 'Telepathy'; known modules: Predict, ChainOfThought"),
        ("PORT", "0", "PORT"),
        ("LOG_FORMAT", "xml", "LOG_FORMAT"),
        ("MEMORY_CACHE_SIZE", "-1", "MEMORY_CACHE_SIZE"),
        ("CIRCUIT_BREAKER_FAILURE_THRESHOLD", "0", "CIRCUIT_BREAKER_FAILURE_THRESHOLD"),
        ("LM_PRICING", "{not json", "LM_PRICING must be a JSON object"),
        ("LM_PRICING", '{"m": {"promptPerMillion": -1, "completionPerMillion": 1}}', "LM_PRICING"),
        ("PROGRAM_PATH", "/does/not/exist.json", "is not a readable file"),
        ("LM_MODEL", "  ", "LM_MODEL"),
        ("RATE_LIMIT_SCOPE", "cluster", "RATE_LIMIT_SCOPE"),
        ("DEGRADATION_ENABLED", "sometimes", "DEGRADATION_ENABLED"),
        ("DEGRADATION_WINDOW_SECS", "0", "DEGRADATION_WINDOW_SECS"),
        ("DEGRADATION_ERROR_RATE", "1.5", "DEGRADATION_ERROR_RATE"),
        ("DEGRADATION_P95_SECS", "0", "DEGRADATION_P95_SECS"),
        ("DEGRADATION_BUDGET_LEFT_FRACTION", "1", "DEGRADATION_BUDGET_LEFT_FRACTION"),
        ("DEGRADATION_MIN_HOLD_SECS", "-1", "DEGRADATION_MIN_HOLD_SECS"),
        ("DEGRADATION_MAX_TOKENS_FACTOR", "1", "DEGRADATION_MAX_TOKENS_FACTOR"),
        ("CACHE_STALE_SECS", "-5", "CACHE_STALE_SECS"),
        ("RATE_LIMIT_SCOPE", "global", "RATE_LIMIT_SCOPE is global, but REDIS_URL is not set"),
        ("RATE_LIMIT_TOTAL_RPS", "-1", "RATE_LIMIT_TOTAL_RPS"),
        ("RATE_LIMIT_TOTAL_BURST", "0", "RATE_LIMIT_TOTAL_BURST"),
        ("RUNTIME_REPLICAS", "0", "RUNTIME_REPLICAS"),
        ("MAX_BATCH_ITEMS", "0", "MAX_BATCH_ITEMS"),
        ("BATCH_CONCURRENCY", "many", "BATCH_CONCURRENCY"),
        ("HEADER_TIMEOUT_SECS", "0", "HEADER_TIMEOUT_SECS"),
        ("BODY_TIMEOUT_SECS", "soon", "BODY_TIMEOUT_SECS"),
        ("KEEP_ALIVE_TIMEOUT_SECS", "0", "KEEP_ALIVE_TIMEOUT_SECS"),
        ("MAX_HEADER_BYTES", "100", "MAX_HEADER_BYTES"),
    ],
)
def test_nonsense_is_refused_with_a_message_naming_the_setting(monkeypatch, name, value, fragment):
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError) as caught:
        get_settings()
    message = describe_errors(caught.value)
    assert fragment in message


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("http://redis:6379", "must start with redis://, rediss:// or unix://"),
        ("redis://user:hunter2-password", "is not a valid Redis URL"),  # no '@': the password reads as the port
        ("redis://redis:port/0", "is not a valid Redis URL"),
        ("redis://redis/0?socket_timeout=hunter2-password", "is not a valid Redis URL"),
    ],
)
def test_a_malformed_redis_url_is_one_line_naming_the_setting_and_never_the_password(monkeypatch, url, fragment):
    monkeypatch.setenv("REDIS_URL", url)
    with pytest.raises(ValidationError) as caught:
        get_settings()
    message = describe_errors(caught.value)
    assert message.splitlines()[0] == "invalid settings:"
    assert len(message.splitlines()) == 2 and message.splitlines()[1].startswith("  REDIS_URL: ")
    assert fragment in message and "hunter2" not in message


def test_well_formed_redis_urls_are_accepted(monkeypatch):
    for url in ("redis://redis:6379/0", "rediss://:pw@redis.example:6380/1?socket_timeout=2", "unix:///run/redis.sock"):
        monkeypatch.setenv("REDIS_URL", url)
        assert get_settings().redis_url.get_secret_value() == url


def test_the_overall_rate_limit_stands_behind_keyed_buckets(monkeypatch):
    monkeypatch.setenv("RATE_LIMIT_RPS", "2")
    monkeypatch.setenv("RATE_LIMIT_BURST", "3")
    assert get_settings().effective_rate_limit_total == (0.0, 1), "unkeyed: the one bucket is the overall one"
    monkeypatch.setenv("RATE_LIMIT_KEY_HEADER", "X-API-Key")
    assert get_settings().effective_rate_limit_total == (20.0, 30), "ten keys' rate and burst by default"
    monkeypatch.setenv("RATE_LIMIT_TOTAL_RPS", "7.5")
    assert get_settings().effective_rate_limit_total == (7.5, 8)
    monkeypatch.setenv("RATE_LIMIT_TOTAL_BURST", "50")
    monkeypatch.setenv("RATE_LIMIT_SCOPE", " Global ")
    monkeypatch.setenv("REDIS_URL", "redis://r:6379/0")
    monkeypatch.setenv("RUNTIME_REPLICAS", "4")
    s = get_settings()
    assert s.effective_rate_limit_total == (7.5, 50)
    assert (s.rate_limit_scope, s.runtime_replicas) == ("global", 4)


def test_fallback_must_not_repeat_the_primary(monkeypatch):
    monkeypatch.setenv("LM_MODEL", "openai/x")
    monkeypatch.setenv("LM_FALLBACK_MODELS", "openai/x")
    with pytest.raises(ValidationError, match="must not repeat LM_MODEL"):
        get_settings()


def test_fallbacks_take_their_own_base_and_key_by_index(monkeypatch):
    monkeypatch.setenv("LM_MODEL", "openai/primary")
    monkeypatch.setenv("LM_API_BASE", "http://gateway/v1")
    monkeypatch.setenv("LM_API_KEY", "sk-primary-key")
    monkeypatch.setenv("LM_FALLBACK_MODELS", "openai/same,anthropic/other,openai/own")
    monkeypatch.setenv("LM_FALLBACK_API_BASE_1", "http://anthropic-proxy")
    monkeypatch.setenv("LM_FALLBACK_API_KEY_2", "sk-own-key")
    monkeypatch.setenv("LM_FALLBACK_API_BASE_2", " ")  # blank counts as unset
    s = get_settings()
    specs = {spec.model: spec for spec in fallback_lm_specs(s)}
    secret = lambda spec: spec.api_key.get_secret_value() if spec.api_key else None  # noqa: E731
    # Same provider as LM_MODEL: inherits the primary's base and key.
    assert (specs["openai/same"].api_base, secret(specs["openai/same"])) == ("http://gateway/v1", "sk-primary-key")
    # Another provider: only what was set for it; never the primary's base or key.
    assert (specs["anthropic/other"].api_base, secret(specs["anthropic/other"])) == ("http://anthropic-proxy", None)
    assert (specs["openai/own"].api_base, secret(specs["openai/own"])) == ("http://gateway/v1", "sk-own-key")
    # Everything else follows the primary's LM settings.
    assert specs["openai/own"].max_tokens == s.lm_max_tokens and specs["openai/own"].timeout_secs == s.lm_timeout_secs


def test_a_fallback_index_past_the_list_is_refused(monkeypatch):
    monkeypatch.setenv("LM_FALLBACK_MODELS", "openai/a")
    monkeypatch.setenv("LM_FALLBACK_API_KEY_1", "sk-nowhere")
    with pytest.raises(ValidationError, match="LM_FALLBACK_API_KEY_1 is set, but LM_FALLBACK_MODELS has 1 model"):
        get_settings()


def test_public_dict_hides_secrets():
    s = RuntimeSettings(
        lm_api_key="sk-very-secret",
        redis_url="redis://user:hunter2@redis:6379/0",
        lm_fallback_models="openai/fb",
        lm_fallback_api_keys={0: "sk-fallback-secret"},
    )
    public = s.public_dict()
    text = repr(public)
    assert "sk-very-secret" not in text and "hunter2" not in text and "sk-fallback-secret" not in text
    assert public["lm_fallback_api_keys"] == {"0": "set"}
    assert public["lm_api_key"] == "set" and public["openai_api_key"] is None
    assert public["redis_url"] == "redis://user:***@redis:6379/0"
    assert public["lm_api_key_source"] == "LM_API_KEY"


def test_redact_url():
    assert redact_url("redis://redis:6379/0") == "redis://redis:6379/0"
    assert redact_url("redis://:pw@redis:6379") == "redis://:***@redis:6379"
    assert redact_url("rediss://u:p@w@host") == "rediss://u:***@host"


def test_the_resource_names_its_redis_keys_and_the_pod_names_itself(monkeypatch):
    s = get_settings()
    assert (s.key_prefix, s.routing_redis_key, s.window_flush_secs) == (None, None, 1.0)
    assert s.effective_pod_name == socket.gethostname()
    monkeypatch.setenv("REDIS_URL", "redis://redis:6379/0")
    monkeypatch.setenv("ROUTING_REDIS_KEY", "dspy:{demo/qa}:routing")
    assert get_settings().key_prefix == "dspy:{demo/qa}:"  # the key without its "routing"
    monkeypatch.setenv("DSPY_RESOURCE", "demo/qa")
    monkeypatch.setenv("POD_NAME", "qa-7d9f-abcde")
    s = get_settings()
    assert (s.key_prefix, s.effective_pod_name) == ("dspy:{demo/qa}:", "qa-7d9f-abcde")
    monkeypatch.setenv("HOSTNAME", "qa-from-hostname")
    assert get_settings().effective_pod_name == "qa-from-hostname"
    monkeypatch.setenv("ROUTING_REDIS_KEY", "dspy:{demo/qa}:routing:green")  # a blue/green color's own table
    assert get_settings().key_prefix == "dspy:{demo/qa}:"
    monkeypatch.delenv("ROUTING_REDIS_KEY")
    assert get_settings().key_prefix == "dspy:{demo/qa}:"  # from DSPY_RESOURCE alone


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"ROUTING_REDIS_KEY": "dspy:{demo/qa}:routing"}, "ROUTING_REDIS_KEY is set, but REDIS_URL is not"),
        ({"REDIS_URL": "redis://r", "ROUTING_REDIS_KEY": "dspy:{demo/other}:routing", "DSPY_RESOURCE": "demo/qa"},
         "ROUTING_REDIS_KEY must be dspy:{demo/qa}:routing (or dspy:{demo/qa}:routing:<color>) for DSPY_RESOURCE"),
        ({"REDIS_URL": "redis://r", "ROUTING_REDIS_KEY": "dspy:{demo/qa}:routing:x:y", "DSPY_RESOURCE": "demo/qa"},
         "ROUTING_REDIS_KEY must be dspy:{demo/qa}:routing"),
        ({"DSPY_RESOURCE": "just-a-name"}, "DSPY_RESOURCE: Value error, must be <namespace>/<name>"),
        ({"WINDOW_FLUSH_SECS": "0"}, "WINDOW_FLUSH_SECS"),
        # cache warm-up and invalidation
        ({"CACHE_WARMUP_PATH": "/nonexistent/w.jsonl"}, "CACHE_WARMUP_PATH /nonexistent/w.jsonl is not a readable file"),
        ({"CACHE_WARMUP_TIMEOUT_SECS": "0"}, "CACHE_WARMUP_TIMEOUT_SECS"),
        ({"CACHE_WARMUP_CONCURRENCY": "65"}, "CACHE_WARMUP_CONCURRENCY"),
        ({"MEMORY_CACHE_WARM_ENTRIES": "-1"}, "MEMORY_CACHE_WARM_ENTRIES"),
        ({"CACHE_ADMIN_TOKEN": "too-short"}, "CACHE_ADMIN_TOKEN: Value error, must be at least 16 characters"),
    ],
)
def test_inconsistent_resource_settings_are_refused(monkeypatch, env, fragment):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError) as caught:
        get_settings()
    assert fragment in describe_errors(caught.value)


def test_cache_warmup_and_admin_settings(monkeypatch, tmp_path):
    path = tmp_path / "warmup.jsonl"
    path.write_text('{"question": "q"}\n')
    monkeypatch.setenv("CACHE_WARMUP_PATH", str(path))
    monkeypatch.setenv("CACHE_ADMIN_TOKEN", "a-long-random-admin-token")
    s = get_settings()
    assert s.cache_warmup_path == path and s.cache_warmup_timeout_secs == 120 and s.cache_warmup_concurrency == 4
    assert s.memory_cache_warm_entries == 1000
    assert s.public_dict()["cache_admin_token"] == "set"
    monkeypatch.setenv("CACHE_ADMIN_TOKEN", "")
    monkeypatch.setenv("CACHE_WARMUP_PATH", "")
    s = get_settings()
    assert s.cache_admin_token is None and s.cache_warmup_path is None, "blank is unset (the endpoint is off)"
