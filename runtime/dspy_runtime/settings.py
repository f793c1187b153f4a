"""Runtime settings, read from the environment (names fixed by DESIGN.md).

``get_settings()`` builds them on demand (no import-time global), and ``create_app``
takes a ``RuntimeSettings`` so tests pass their own. Validators refuse values that
would fail later in a confusing way, with a message naming the variable.

Empty environment values count as unset for optional settings, because Kubernetes
manifests and Helm templates often render ``VALUE: ""`` for "not configured".
"""

from __future__ import annotations

import math
import os
import re
import socket
from pathlib import Path
from typing import Annotated, Any, Literal

import orjson
from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict
from redis.asyncio.connection import parse_url as parse_redis_url

from .errors import validation_problems

KNOWN_MODULES: tuple[str, ...] = ("Predict", "ChainOfThought")
"""DSPy modules that can be built from a signature alone (ReAct needs tools, ProgramOfThought Deno)."""

DEFAULT_VARIANT = "default"
DEFAULT_REVISION = "default"
"""The one revision of a table in the legacy format (``variants`` only) and of a pod without a table."""

MIN_ADMIN_TOKEN_LENGTH = 16
DEFAULT_TOTAL_RATE_FACTOR = 10
"""Without RATE_LIMIT_TOTAL_RPS, keyed requests share an overall bucket of this many keys' rate and
burst: room for several busy clients at once, while a client inventing keys gets no more than that."""

ROUTING_KEY_SUFFIX = "routing"
RESOURCE_PATTERN = re.compile(r"^[^/{}\s]+/[^/{}\s]+$")


def resource_key_prefix(resource: str) -> str:
    """The Redis key prefix of resource ``<ns>/<name>``: ``dspy:{<ns>/<name>}:`` (the braces are a
    Redis Cluster hash tag, so every key of one resource lives on one shard)."""
    return f"dspy:{{{resource}}}:"


class ModelPrice(BaseModel):
    """One entry of ``LM_PRICING``: US dollars per million tokens (the resource's ``lm.pricing`` names)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt_per_million: float = Field(ge=0, validation_alias=AliasChoices("promptPerMillion", "prompt_per_million"))
    completion_per_million: float = Field(
        ge=0, validation_alias=AliasChoices("completionPerMillion", "completion_per_million")
    )


def _none_if_blank(value: Any) -> Any:
    return None if isinstance(value, str) and not value.strip() else value


def provider_of(model: str) -> str:
    """The provider prefix of a DSPy/litellm model name (``openai/gpt-4o`` -> ``openai``; none -> ``""``)."""
    provider, sep, _ = model.partition("/")
    return provider if sep else ""


_FALLBACK_ENV = re.compile(r"^LM_FALLBACK_API_(KEY|BASE)_(\d+)$")


class _FallbackEnvSource(PydanticBaseSettingsSource):
    """``LM_FALLBACK_API_KEY_<i>`` and ``LM_FALLBACK_API_BASE_<i>`` (0-based indexes into
    ``LM_FALLBACK_MODELS``), which the operator sets per fallback from its own Secret and
    ``apiBase``. Numbered names cannot be declared as fields, so this source collects
    them into ``lm_fallback_api_keys`` and ``lm_fallback_api_bases``."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # everything is collected in __call__

    def __call__(self) -> dict[str, Any]:
        found: dict[str, dict[int, str]] = {}
        for name, value in os.environ.items():
            match = _FALLBACK_ENV.match(name.upper())
            if match and value.strip():
                field = "lm_fallback_api_keys" if match[1] == "KEY" else "lm_fallback_api_bases"
                found.setdefault(field, {})[int(match[2])] = value.strip()
        return found


class RuntimeSettings(BaseSettings):
    """Every setting of a runtime pod; the field name upper-cased is the environment variable."""

    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore", frozen=True)

    # HTTP server and logs
    host: str = "0.0.0.0"
    port: int = Field(8080, ge=1, le=65535)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    log_format: Literal["json", "text"] = "json"
    log_inputs: bool = False
    """Put raw prediction inputs in log lines (off: inputs may hold personal data)."""
    max_body_bytes: int = Field(1024 * 1024, ge=1)
    max_header_bytes: int = Field(64 * 1024, ge=1024)
    """A request head (request line and headers) over this is refused with 431."""
    header_timeout_secs: float = Field(10.0, gt=0)
    """How long a connection may take to send a request head (from connecting, or the head's first byte)."""
    body_timeout_secs: float = Field(30.0, gt=0)
    """How long a request body may take to arrive after its head: 408 past it."""
    keep_alive_timeout_secs: int = Field(5, ge=1)
    """How long a connection may stay idle between requests (uvicorn's ``timeout_keep_alive``)."""
    shutdown_timeout_secs: float = Field(30.0, gt=0)
    """How long SIGTERM waits for in-flight requests before closing them."""

    # Cache
    cache_enabled: bool = True
    allow_cache_bypass: bool = False
    """Whether a request may send ``use_cache: false`` (an LM call the cache would have saved); else 403."""
    allow_pinning: bool = False
    """Whether a request may pick its ``revision`` or ``variant`` (say the costliest); else 403."""
    redis_url: SecretStr | None = None
    """A Redis URL may carry a password, hence secret; ``/config`` shows it redacted."""
    memory_cache_size: int = Field(10_000, ge=0)
    """Entries in the in-process cache; 0 disables it."""
    memory_cache_ttl_secs: float = Field(300.0, gt=0)
    redis_cache_ttl_secs: int = Field(3600, ge=1)
    redis_cache_jitter_secs: int = Field(300, ge=0)
    memory_cache_warm_entries: int = Field(1000, ge=0)
    """With Redis: entries copied into L1 at start from the most hit ones in Redis; 0 turns it
    off, and the hit counting with it."""
    cache_warmup_path: Path | None = None
    """JSON Lines, one inputs object per line, answered (from Redis, else the LM) before /ready is 200."""
    cache_warmup_timeout_secs: float = Field(120.0, gt=0)
    """After this long /ready turns 200 with the warm-up unfinished (``/health`` says incomplete)."""
    cache_warmup_concurrency: int = Field(4, ge=1, le=64)
    """Warm-up entries in flight at a time in this pod."""
    cache_admin_token: SecretStr | None = None
    """Turns on ``DELETE /v1/cache`` for callers presenting it; unset, the endpoint is off."""
    cache_stale_secs: float = Field(0.0, ge=0)
    """How long an answer is kept in this pod's memory past its freshness, to be served (marked
    ``stale``) when every model fails or at the ``cache_only`` degradation level; 0 keeps none."""

    # Graceful degradation (resilience/degradation.py)
    degradation_enabled: bool = False
    degradation_window_secs: int = Field(30, ge=1, le=3600)
    """The sliding window of computed predictions the error rate and p95 are taken over."""
    degradation_error_rate: float = Field(0.5, gt=0, le=1)
    degradation_p95_secs: float = Field(10.0, gt=0)
    degradation_budget_left_fraction: float = Field(0.0, ge=0, lt=1)
    """Degrade while less than this share of DAILY_BUDGET_USD is left; 0: the budget is not a signal."""
    degradation_min_hold_secs: float = Field(30.0, gt=0)
    """A level holds at least this long before the next step, down or up."""
    degradation_max_tokens_factor: float = Field(0.5, gt=0, lt=1)
    """``max_tokens`` is multiplied by this from the ``shorter_answers`` level on."""

    # Circuit breaker (one per model)
    circuit_breaker_failure_threshold: int = Field(5, ge=1)
    circuit_breaker_success_threshold: int = Field(2, ge=1)
    circuit_breaker_timeout_secs: float = Field(60.0, gt=0)

    # Program
    dspy_signature: str = "question -> answer"
    dspy_module: str = "Predict"
    program_path: Path | None = None

    # LM
    openai_api_key: SecretStr | None = None
    lm_model: str = "openai/gpt-4o-mini"
    lm_api_base: str | None = None
    lm_api_key: SecretStr | None = None
    lm_fallback_models: Annotated[tuple[str, ...], NoDecode] = ()
    lm_fallback_api_keys: dict[int, SecretStr] = Field(default_factory=dict)
    """``LM_FALLBACK_API_KEY_<i>``: the key of fallback ``i``; see ``fallback_lm_settings`` for the default."""
    lm_fallback_api_bases: dict[int, str] = Field(default_factory=dict)
    """``LM_FALLBACK_API_BASE_<i>``: the API base of fallback ``i``; see ``fallback_lm_settings`` for the default."""
    lm_temperature: float = Field(0.0, ge=0, le=2)
    lm_max_tokens: int = Field(512, ge=1)
    lm_timeout_secs: float = Field(30.0, gt=0)
    lm_max_retries: int = Field(2, ge=0, le=10)
    """Retries after the first attempt, on transient errors only (timeouts, 429, 5xx, network)."""
    lm_retry_base_delay_secs: float = Field(0.2, ge=0)
    lm_retry_max_delay_secs: float = Field(5.0, ge=0)
    lm_pricing: Annotated[dict[str, ModelPrice], NoDecode] = Field(default_factory=dict)
    """JSON: ``{"openai/gpt-4o-mini": {"promptPerMillion": 0.15, "completionPerMillion": 0.6}}``."""

    # Limits
    rate_limit_rps: float = Field(0.0, ge=0)
    """Requests per second per pod (per client key with RATE_LIMIT_KEY_HEADER); 0 disables."""
    rate_limit_burst: int | None = Field(None, ge=1)
    """Bucket size; defaults to max(1, ceil(RATE_LIMIT_RPS))."""
    rate_limit_key_header: str | None = None
    rate_limit_total_rps: float | None = Field(None, ge=0)
    """With RATE_LIMIT_KEY_HEADER: the overall bucket behind the per-key ones; defaults to
    ``DEFAULT_TOTAL_RATE_FACTOR`` times RATE_LIMIT_RPS; 0 turns it off."""
    rate_limit_total_burst: int | None = Field(None, ge=1)
    """The overall bucket's size; defaults to max(1, ceil(RATE_LIMIT_TOTAL_RPS)), or without that to
    ``DEFAULT_TOTAL_RATE_FACTOR`` times the per-key burst."""
    rate_limit_scope: Literal["pod", "global"] = "pod"
    """``pod``: each pod has its own buckets; ``global``: one set for the fleet, in Redis (needs REDIS_URL)."""
    runtime_replicas: int = Field(1, ge=1)
    """The most runtime pods serving at once (the operator's autoscaling.maxReplicas, else replicas):
    while Redis is down, the global rate limit and the budget's remainder are shared out by it."""
    daily_budget_usd: float | None = Field(None, ge=0)
    """USD per UTC day across replicas (shared through Redis); unset or 0 means unlimited."""

    # A/B routing and canary rollouts
    routing_path: Path | None = None
    routing_reload_secs: float = Field(1.0, gt=0)
    """How often ROUTING_PATH is re-read; five times this, the Redis table is re-read as a safety net."""
    routing_redis_key: str | None = None
    """Key and channel of the routing table pushed through Redis (``dspy:{<ns>/<name>}:routing``); needs REDIS_URL."""
    dspy_resource: str | None = None
    """``<namespace>/<name>`` of the resource this pod serves: names its Redis keys (``dspy:{<ns>/<name>}:...``)."""
    window_flush_secs: float = Field(1.0, gt=0)
    """How often the windowed figures the canary analysis reads are added to Redis."""
    hostname: str | None = None
    """The pod name in the served-table reports (Kubernetes sets HOSTNAME to it); else POD_NAME, else the host name."""
    pod_name: str | None = None

    # Batch predictions (POST /v1/predict/batch)
    max_batch_items: int = Field(100, ge=1, le=10_000)
    """Items one batch request may hold; more is a 413 naming this setting."""
    batch_concurrency: int = Field(8, ge=1, le=256)
    """Items of one batch request predicted at a time."""

    # Evaluation gate
    eval_concurrency: int = Field(4, ge=1, le=64)
    """Predictions at a time while this pod runs an evaluation request (needs REDIS_URL and DSPY_RESOURCE)."""

    @field_validator(
        "redis_url", "program_path", "openai_api_key", "lm_api_base", "lm_api_key",
        "rate_limit_burst", "rate_limit_key_header", "rate_limit_total_rps", "rate_limit_total_burst",
        "daily_budget_usd", "routing_path",
        "routing_redis_key", "dspy_resource", "hostname", "pod_name", "cache_warmup_path", "cache_admin_token",
        mode="before",
    )  # fmt: skip
    @classmethod
    def _blank_is_unset(cls, value: Any) -> Any:
        return _none_if_blank(value)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, _FallbackEnvSource(settings_cls), dotenv_settings, file_secret_settings

    @field_validator("log_level", "log_format", "rate_limit_scope", mode="before")
    @classmethod
    def _case_insensitive(cls, value: Any, info: ValidationInfo) -> Any:
        if not isinstance(value, str):
            return value
        return value.strip().upper() if info.field_name == "log_level" else value.strip().lower()

    @field_validator("lm_fallback_models", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("lm_pricing", mode="before")
    @classmethod
    def _pricing_json(cls, value: Any) -> Any:
        value = _none_if_blank(value)
        if value is None:
            return {}
        if isinstance(value, (str, bytes)):
            try:
                return orjson.loads(value)
            except orjson.JSONDecodeError as exc:
                raise ValueError(f"LM_PRICING must be a JSON object of model -> prices: {exc}") from None
        return value

    @field_validator("dspy_module")
    @classmethod
    def _known_module(cls, value: str) -> str:
        if value not in KNOWN_MODULES:
            raise ValueError(f"unknown DSPy module {value!r}; known modules: {', '.join(KNOWN_MODULES)}")
        return value

    @field_validator("dspy_signature", "lm_model")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value.strip()

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: SecretStr | None) -> SecretStr | None:
        """Read by the client's own parser now, not at the first connection: a bad URL is a bad
        setting. The parser's message is not repeated, as it can quote the password (a URL
        without ``@`` puts it where the port goes)."""
        if value is None:
            return None
        url = value.get_secret_value()
        if not url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        try:
            parse_redis_url(url)
        except ValueError:
            raise ValueError(
                "is not a valid Redis URL: redis://[[user]:password@]host[:port][/db] "
                "with a numeric port and only known query options"
            ) from None
        return value

    @field_validator("dspy_resource")
    @classmethod
    def _namespace_and_name(cls, value: str | None) -> str | None:
        if value is not None and not RESOURCE_PATTERN.match(value):
            raise ValueError("must be <namespace>/<name> (no braces or whitespace)")
        return value

    @field_validator("cache_admin_token")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value().strip()) < MIN_ADMIN_TOKEN_LENGTH:
            raise ValueError(f"must be at least {MIN_ADMIN_TOKEN_LENGTH} characters (a random token, not a password)")
        return value

    @field_validator("daily_budget_usd")
    @classmethod
    def _zero_is_unlimited(cls, value: float | None) -> float | None:
        return value or None

    @model_validator(mode="after")
    def _consistent(self) -> RuntimeSettings:
        if self.lm_retry_max_delay_secs < self.lm_retry_base_delay_secs:
            raise ValueError("LM_RETRY_MAX_DELAY_SECS must be >= LM_RETRY_BASE_DELAY_SECS")
        if self.lm_model in self.lm_fallback_models:
            raise ValueError(f"LM_FALLBACK_MODELS must not repeat LM_MODEL ({self.lm_model})")
        for kind, indexes in (("KEY", self.lm_fallback_api_keys), ("BASE", self.lm_fallback_api_bases)):
            stray = sorted(i for i in indexes if i >= len(self.lm_fallback_models))
            if stray:
                raise ValueError(
                    f"LM_FALLBACK_API_{kind}_{stray[0]} is set, but LM_FALLBACK_MODELS has "
                    f"{len(self.lm_fallback_models)} model(s) (indexes start at 0)"
                )
        if self.program_path is not None and not self.program_path.is_file():
            raise ValueError(f"PROGRAM_PATH {self.program_path} is not a readable file")
        if self.cache_warmup_path is not None and not self.cache_warmup_path.is_file():
            raise ValueError(f"CACHE_WARMUP_PATH {self.cache_warmup_path} is not a readable file")
        if self.rate_limit_scope == "global" and self.redis_url is None:
            raise ValueError("RATE_LIMIT_SCOPE is global, but REDIS_URL is not set: the fleet's buckets live in Redis")
        if self.routing_redis_key is not None and self.redis_url is None:
            raise ValueError("ROUTING_REDIS_KEY is set, but REDIS_URL is not: the table is pushed through that Redis")
        if self.routing_redis_key is not None and self.dspy_resource is not None:
            # One table per resource, or one per blue/green color (`<prefix>routing:<color>`).
            expected = resource_key_prefix(self.dspy_resource) + ROUTING_KEY_SUFFIX
            key = self.routing_redis_key
            if key != expected and not re.fullmatch(re.escape(expected) + r":[a-z]{1,16}", key):
                raise ValueError(f"ROUTING_REDIS_KEY must be {expected} (or {expected}:<color>) "
                                 f"for DSPY_RESOURCE {self.dspy_resource}")
        return self

    @property
    def effective_lm_api_key(self) -> SecretStr | None:
        """``LM_API_KEY``, else ``OPENAI_API_KEY``."""
        return self.lm_api_key or self.openai_api_key

    def fallback_lm_settings(self, index: int) -> tuple[str | None, SecretStr | None]:
        """API base and key of fallback ``index`` (into ``LM_FALLBACK_MODELS``).

        Each is ``LM_FALLBACK_API_BASE_<i>`` / ``LM_FALLBACK_API_KEY_<i>`` when set.
        Unset, the fallback inherits the primary's ``LM_API_BASE`` and key only when
        its model has the same provider prefix as ``LM_MODEL`` (``openai/a`` and
        ``openai/b``): the usual case of another model behind the same endpoint.
        A different provider gets neither, so it uses its provider's default
        endpoint and its own key variable (``ANTHROPIC_API_KEY``, ...): the
        primary's base would be the wrong server, and its key must not be sent to
        another provider.
        """
        same_provider = provider_of(self.lm_fallback_models[index]) == provider_of(self.lm_model)
        api_base = self.lm_fallback_api_bases.get(index) or (self.lm_api_base if same_provider else None)
        api_key = self.lm_fallback_api_keys.get(index) or (self.effective_lm_api_key if same_provider else None)
        return api_base, api_key

    @property
    def key_prefix(self) -> str | None:
        """``dspy:{<ns>/<name>}:``, the start of every Redis key of this resource: from DSPY_RESOURCE,
        else ROUTING_REDIS_KEY without its ``routing``; None when neither names the resource."""
        if self.dspy_resource is not None:
            return resource_key_prefix(self.dspy_resource)
        key = self.routing_redis_key
        if key is not None and key.endswith(ROUTING_KEY_SUFFIX) and len(key) > len(ROUTING_KEY_SUFFIX):
            return key.removesuffix(ROUTING_KEY_SUFFIX)
        return None

    @property
    def effective_pod_name(self) -> str:
        """HOSTNAME, else POD_NAME, else the host name: how this pod names itself to the operator."""
        return self.hostname or self.pod_name or socket.gethostname()

    @property
    def effective_rate_limit_burst(self) -> int:
        return self.rate_limit_burst or max(1, math.ceil(self.rate_limit_rps))

    @property
    def effective_rate_limit_total(self) -> tuple[float, int]:
        """Rate and size of the overall bucket behind the per-key ones; rate 0 when there is none
        (requests are not keyed: their one bucket is the overall one)."""
        if self.rate_limit_key_header is None or self.rate_limit_rps == 0:
            return 0.0, 1
        if self.rate_limit_total_rps is None:
            factor = DEFAULT_TOTAL_RATE_FACTOR
            return self.rate_limit_rps * factor, self.rate_limit_total_burst or self.effective_rate_limit_burst * factor
        return self.rate_limit_total_rps, self.rate_limit_total_burst or max(1, math.ceil(self.rate_limit_total_rps))

    def public_dict(self) -> dict[str, Any]:
        """The effective settings for ``GET /config``: secrets show only whether they are set."""
        data = self.model_dump(mode="json")
        for name in ("openai_api_key", "lm_api_key", "cache_admin_token"):
            data[name] = "set" if getattr(self, name) is not None else None
        data["lm_fallback_api_keys"] = {str(i): "set" for i in sorted(self.lm_fallback_api_keys)}
        data["redis_url"] = redact_url(self.redis_url.get_secret_value()) if self.redis_url else None
        data["lm_api_key_source"] = (
            "LM_API_KEY" if self.lm_api_key else "OPENAI_API_KEY" if self.openai_api_key else None
        )
        return data


def redact_url(url: str) -> str:
    """``redis://user:pw@host:6379/0`` -> ``redis://user:***@host:6379/0`` (no credentials shown)."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    credentials, _, location = rest.rpartition("@")
    user = credentials.split(":", 1)[0] if ":" in credentials else ""
    return f"{scheme}://{user}:***@{location}"


def get_settings() -> RuntimeSettings:
    """Settings from the process environment; raises ``pydantic.ValidationError`` naming the bad ones."""
    return RuntimeSettings()


def describe_errors(error: ValidationError) -> str:
    """One line per invalid setting, named as its environment variable, without the input value."""
    return "invalid settings:\n  " + "\n  ".join(validation_problems(error, upper=True))
