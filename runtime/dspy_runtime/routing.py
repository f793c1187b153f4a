"""Routing: which revision, and which variant (program + LM) inside it, serves a request.

The table is JSON the operator writes twice: into a ConfigMap mounted at ``ROUTING_PATH``
(the slow path, and the table a pod starts from) and into Redis (the fast path, see
``routing_wire.py``); both arrive here as bytes through ``Router.offer``::

    {"serial": 1764624000123, "stickyHeader": "X-User-ID",
     "revisions": [
       {"name": "3f9a0c1d2e4b", "weight": 90,
        "variants": [{"name": "baseline", "weight": 80,
                      "program": {"signature": "...", "module": "Predict",
                                  "state": {...saved program...}} | {"path": "/etc/dspy/p.json"},
                      "lm": {"model": "...", "apiBase": "...", "apiKeyEnv": "LM_API_KEY_OPTIMIZED",
                             "temperature": 0.0, "maxTokens": 512, "timeoutSeconds": 30,
                             "pricing": {"promptPerMillion": 0.15, "completionPerMillion": 0.6}}}]},
       {"name": "77aa01bc9e0f", "weight": 10, "variants": [...]}]}

Shadow traffic (``shadow.py``): a variant entry may carry ``"shadow": true`` (weight 0: it
is never chosen by weight and gets copies of what the live variants of its revision serve),
a revision entry likewise (weight 0: it gets copies of what the non-shadow revisions serve),
and the table may carry ``"shadow": {"samplePercent": 10, "maxConcurrent": 4, "maxDailyUsd":
1.5}`` (each optional, those defaults; no ``maxDailyUsd``: 10% of ``DAILY_BUDGET_USD`` when
that is set, else no cap). A shadow entry with a positive weight makes the table unusable.

The legacy format ``{"stickyHeader": ..., "variants": [...]}`` is one revision named
``default`` at weight 100. Fields of ``program`` and ``lm`` fall back to the pod's
settings (``DSPY_SIGNATURE``, ``DSPY_MODULE``, ``PROGRAM_PATH``, ``LM_*``), with one
exception: ``PROGRAM_PATH`` only applies to a variant that names no program field at
all, since a saved program belongs to one signature and module. ``lm.pricing`` is that
variant's price for its model (over ``LM_PRICING`` and litellm's map). Without
``ROUTING_PATH`` there is one revision and one variant, both ``default``.

Choice (pure: ``choose_index`` over ``cumulative_shares``), in two independent steps:
first the revision, then the variant inside it, each by a point in [0, 1) that picks
the entry whose share of the total weight covers it. With a sticky header value ``v``
the revision point is ``xxh3_64("revision:" + v) / 2**64`` and the variant point
``xxh3_64(v) / 2**64`` (the same user keeps both while the weights stay put, and the
variant split inside every revision is the variant weights); without one, two random
draws. A request may pin a revision (a weight-0 revision is servable that way: the
evaluation gate's) and a variant inside the chosen revision; unknown names are a 422
listing the known ones.

Serial: a table is adopted only when its ``serial`` (0 when absent) is greater than the
served one's, so a stale mounted file never undoes a newer push; at startup the file's
table is taken whatever its serial. One exception keeps serial-less tables (hand-written,
legacy) live: while the served table has serial 0, a serial-0 table with other content
replaces it. Adopting builds every variant's program and LM and swaps the whole state in
one assignment. A request keeps the variant object it started with, so in-flight requests
finish on the old table; a table that fails to parse or build is logged once and the old
one stays.
"""

from __future__ import annotations

import asyncio
import bisect
import functools
import hashlib
import logging
import os
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import dspy
import orjson
import xxhash
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from .costs import Pricing
from .errors import InvalidInput, validation_problems
from .logs import ProblemLog, redact_also
from .program import LMSpec, Program, ProgramError, ProgramSpec, build_lm, load_program
from .settings import DEFAULT_REVISION, DEFAULT_VARIANT, KNOWN_MODULES, ModelPrice, RuntimeSettings

log = logging.getLogger(__name__)

VARIANT_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"
"""Variant and revision names (a revision's is a 12-hex content hash, or ``default``)."""

FILE, REDIS, SETTINGS = "file", "redis", "settings"
"""Where the served table came from (``source`` in ``/config`` and the reload log line)."""


class RoutingError(Exception):
    """A routing table that cannot be used (bad JSON, bad field, unknown key env var, bad program)."""


# ---- the file format -------------------------------------------------------------------------


class _Camel(BaseModel):
    # Unknown keys are ignored: an operator newer than this runtime may add fields.
    model_config = ConfigDict(extra="ignore", populate_by_name=True, frozen=True)


class ProgramEntry(_Camel):
    path: Path | None = None
    state: dict[str, Any] | None = None
    signature: str | None = None
    module: str | None = None

    @field_validator("module")
    @classmethod
    def _known(cls, value: str | None) -> str | None:
        if value is not None and value not in KNOWN_MODULES:
            raise ValueError(f"unknown DSPy module {value!r}; known modules: {', '.join(KNOWN_MODULES)}")
        return value

    @model_validator(mode="after")
    def _one_saved_program(self) -> ProgramEntry:
        if self.path is not None and self.state is not None:
            raise ValueError("give the saved program as path or as state, not both")
        return self


class PricingEntry(ModelPrice):
    """``lm.pricing``: the names and checks of ``LM_PRICING``, but unknown keys ignored like the rest."""

    model_config = ConfigDict(extra="ignore", frozen=True)


class LMEntry(_Camel):
    model: str | None = None
    api_base: str | None = Field(None, alias="apiBase")
    api_key_env: str | None = Field(None, alias="apiKeyEnv")
    temperature: float | None = Field(None, ge=0, le=2)
    max_tokens: int | None = Field(None, alias="maxTokens", ge=1)
    timeout_seconds: float | None = Field(None, alias="timeoutSeconds", gt=0)
    pricing: PricingEntry | None = None


class VariantEntry(_Camel):
    name: str = Field(pattern=VARIANT_NAME_PATTERN)
    weight: float = Field(ge=0)
    program: ProgramEntry | None = None
    lm: LMEntry | None = None
    shadow: bool = False

    @model_validator(mode="after")
    def _shadow_idle(self) -> VariantEntry:
        return _shadow_at_weight_zero("variant", self)


def _shadow_at_weight_zero(kind: str, entry: Any) -> Any:
    """A shadow entry only gets copies: a weight would send it live traffic too."""
    if entry.shadow and entry.weight != 0:
        raise ValueError(f"shadow {kind} {entry.name!r} must have weight 0, not {entry.weight:g}")
    return entry


def _unique_and_weighted(kind: str, entries: list[Any]) -> list[Any]:
    """``entries`` (variants or revisions) when their names are unique and some weight is positive."""
    names = [e.name for e in entries]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"duplicate {kind} names: {', '.join(duplicates)}")
    if sum(e.weight for e in entries) <= 0:
        raise ValueError(f"at least one {kind} needs a positive weight")
    return entries


class RevisionEntry(_Camel):
    name: str = Field(pattern=VARIANT_NAME_PATTERN)
    weight: float = Field(ge=0)
    variants: list[VariantEntry] = Field(min_length=1)
    shadow: bool = False

    @field_validator("variants")
    @classmethod
    def _variants(cls, variants: list[VariantEntry]) -> list[VariantEntry]:
        return _unique_and_weighted("variant", variants)

    @model_validator(mode="after")
    def _shadow_idle(self) -> RevisionEntry:
        return _shadow_at_weight_zero("revision", self)


class ShadowEntry(_Camel):
    """The table's ``shadow`` object; the defaults are the CRD's."""

    sample_percent: int = Field(10, alias="samplePercent", ge=1, le=100)
    max_concurrent: int = Field(4, alias="maxConcurrent", ge=1, le=1000)
    max_daily_usd: float | None = Field(None, alias="maxDailyUsd", ge=0)


class TableFile(_Camel):
    serial: int = Field(0, ge=0)
    sticky_header: str | None = Field(None, alias="stickyHeader")
    revisions: list[RevisionEntry] | None = Field(None, min_length=1)
    variants: list[VariantEntry] | None = Field(None, min_length=1)
    """The legacy format: one revision, ``default``."""
    shadow: ShadowEntry = Field(default_factory=ShadowEntry)

    @field_validator("revisions")
    @classmethod
    def _revisions(cls, revisions: list[RevisionEntry] | None) -> list[RevisionEntry] | None:
        return None if revisions is None else _unique_and_weighted("revision", revisions)

    @field_validator("variants")
    @classmethod
    def _variants(cls, variants: list[VariantEntry] | None) -> list[VariantEntry] | None:
        return None if variants is None else _unique_and_weighted("variant", variants)

    @model_validator(mode="after")
    def _one_format(self) -> TableFile:
        if (self.revisions is None) == (self.variants is None):
            raise ValueError("give 'revisions' (or, in the legacy format, only 'variants')")
        return self

    def revision_entries(self) -> list[RevisionEntry]:
        if self.revisions is not None:
            return self.revisions
        return [RevisionEntry(name=DEFAULT_REVISION, weight=100.0, variants=self.variants or [])]


# ---- the pure table ----------------------------------------------------------------------------


@dataclass(frozen=True)
class VariantSpec:
    name: str
    weight: float
    program: ProgramSpec
    lm: LMSpec
    pricing: Pricing | None = None
    """The table's ``lm.pricing``: this variant's price for its model."""
    shadow: bool = False


@dataclass(frozen=True)
class RevisionSpec:
    name: str
    weight: float
    variants: tuple[VariantSpec, ...]
    shadow: bool = False


@dataclass(frozen=True)
class ShadowPolicy:
    """The table's ``shadow`` object (see ``shadow.py`` for what each figure bounds)."""

    sample_percent: int = 10
    max_concurrent: int = 4
    max_daily_usd: float | None = None


@dataclass(frozen=True)
class RoutingTable:
    revisions: tuple[RevisionSpec, ...]
    sticky_header: str | None = None
    serial: int = 0
    shadow: ShadowPolicy = ShadowPolicy()

    @property
    def variants(self) -> tuple[VariantSpec, ...]:
        """Every revision's variants, in table order."""
        return tuple(v for revision in self.revisions for v in revision.variants)


def base_lm_spec(settings: RuntimeSettings, model: str | None = None) -> LMSpec:
    return LMSpec(
        model=model or settings.lm_model,
        api_base=settings.lm_api_base,
        api_key=settings.effective_lm_api_key,
        temperature=settings.lm_temperature,
        max_tokens=settings.lm_max_tokens,
        timeout_secs=settings.lm_timeout_secs,
    )


def fallback_lm_specs(settings: RuntimeSettings) -> tuple[LMSpec, ...]:
    """The pod-wide fallbacks of ``LM_FALLBACK_MODELS``, each with its own API base and key."""
    specs = []
    for index, model in enumerate(settings.lm_fallback_models):
        api_base, api_key = settings.fallback_lm_settings(index)
        specs.append(replace(base_lm_spec(settings, model), api_base=api_base, api_key=api_key))
    return tuple(specs)


def default_table(settings: RuntimeSettings) -> RoutingTable:
    program = ProgramSpec(settings.dspy_signature, settings.dspy_module, settings.program_path)
    variant = VariantSpec(DEFAULT_VARIANT, 100.0, program, base_lm_spec(settings))
    return RoutingTable((RevisionSpec(DEFAULT_REVISION, 100.0, (variant,)),))


def _variant_spec(
    entry: VariantEntry, where: str, settings: RuntimeSettings, environ: Mapping[str, str]
) -> VariantSpec:
    p = entry.program or ProgramEntry()
    names_program = any(value is not None for value in (p.path, p.state, p.signature, p.module))
    program = ProgramSpec(
        signature=p.signature or settings.dspy_signature,
        module=p.module or settings.dspy_module,
        path=p.path if names_program else settings.program_path,
        # Canonical bytes (sorted keys): the same saved program versions alike however it was spelled.
        state=None if p.state is None else orjson.dumps(p.state, option=orjson.OPT_SORT_KEYS),
    )
    lm = entry.lm or LMEntry()
    api_key = settings.effective_lm_api_key
    if lm.api_key_env:
        value = environ.get(lm.api_key_env)
        if not value:
            raise RoutingError(f"{where}: environment variable {lm.api_key_env} (apiKeyEnv) is not set")
        redact_also([value])  # whatever the variable's name, its value is a key
        api_key = SecretStr(value)
    base = base_lm_spec(settings)
    pricing = lm.pricing
    return VariantSpec(
        name=entry.name,
        weight=entry.weight,
        program=program,
        lm=LMSpec(
            model=lm.model or base.model,
            api_base=lm.api_base or base.api_base,
            api_key=api_key,
            temperature=base.temperature if lm.temperature is None else lm.temperature,
            max_tokens=lm.max_tokens or base.max_tokens,
            timeout_secs=lm.timeout_seconds or base.timeout_secs,
        ),
        pricing=None if pricing is None else Pricing(pricing.prompt_per_million, pricing.completion_per_million),
        shadow=entry.shadow,
    )


def _where(revision: str, variant: str) -> str:
    """How messages name a variant (its revision too, unless it is a legacy table's)."""
    return f"variant {variant!r}" if revision == DEFAULT_REVISION else f"revision {revision!r}, variant {variant!r}"


def read_table_file(raw: bytes) -> TableFile:
    """The validated file format of ``raw``, or ``RoutingError`` saying what is wrong."""
    try:
        return TableFile.model_validate(orjson.loads(raw))
    except orjson.JSONDecodeError as exc:
        raise RoutingError(f"routing table is not JSON: {exc}") from None
    except ValidationError as exc:
        raise RoutingError(f"invalid routing table: {'; '.join(validation_problems(exc))}") from None


def table_of(data: TableFile, settings: RuntimeSettings, environ: Mapping[str, str] | None = None) -> RoutingTable:
    """The table ``data`` describes, with the pod's settings filled in."""
    env = os.environ if environ is None else environ
    revisions = []
    for revision in data.revision_entries():
        variants = tuple(
            _variant_spec(entry, _where(revision.name, entry.name), settings, env) for entry in revision.variants
        )
        revisions.append(RevisionSpec(revision.name, revision.weight, variants, revision.shadow))
    shadow = data.shadow
    policy = ShadowPolicy(shadow.sample_percent, shadow.max_concurrent, shadow.max_daily_usd)
    return RoutingTable(tuple(revisions), data.sticky_header or None, data.serial, policy)


def parse_table(raw: bytes, settings: RuntimeSettings, environ: Mapping[str, str] | None = None) -> RoutingTable:
    """The table in ``raw`` (the file's bytes), or ``RoutingError`` saying what is wrong."""
    return table_of(read_table_file(raw), settings, environ)


def is_newer(offered: int, served: int) -> bool:
    """The serial rule (see the module docstring); the caller knows the two tables differ."""
    return offered > served or offered == served == 0


def sticky_point(value: str) -> float:
    """A stable point in [0, 1) for a sticky header value (same in every replica and process)."""
    return xxhash.xxh3_64_intdigest(value.encode()) / 2.0**64


def revision_point(value: str) -> float:
    """The revision's point for a sticky value: salted, so it is independent of the variant's."""
    return sticky_point("revision:" + value)


def cumulative_shares(weights: Sequence[float]) -> tuple[float, ...]:
    """Right edges of each entry's slice of [0, 1); zero-weight entries get an empty slice."""
    total = sum(weights)
    edges, running = [], 0.0
    for weight in weights:
        running += weight
        edges.append(running / total)
    edges[-1] = 1.0  # no gap from float rounding
    return tuple(edges)


def choose_index(edges: Sequence[float], point: float) -> int:
    """The entry whose slice holds ``point`` (the first with edge > point)."""
    return min(bisect.bisect_right(edges, point), len(edges) - 1)


# ---- built variants and the live router ---------------------------------------------------------


@dataclass(frozen=True)
class Variant:
    """A variant ready to serve: its program, its LM, the revision it belongs to, and the
    version its cache keys use."""

    spec: VariantSpec
    program: Program
    lm: dspy.LM
    revision: str

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def model(self) -> str:
        return self.spec.lm.model

    @property
    def shadow(self) -> bool:
        return self.spec.shadow

    @functools.cached_property
    def cache_version(self) -> str:
        # The program's content hash (saved program included, inline or file) plus what
        # else changes answers (model endpoint, temperature, max tokens): everything of
        # the revision that shapes an answer. Not the revision's name: two revisions
        # with the same program and LM give the same answers and share entries.
        # Computed once: it is part of every request's cache key.
        return f"{self.program.version}.{self.spec.lm.fingerprint()}"

    def public(self) -> dict[str, Any]:
        price = self.spec.pricing
        return {
            "name": self.name,
            "revision": self.revision,
            "weight": self.spec.weight,
            "shadow": self.spec.shadow,
            "program": self.program.public(),
            "lm": self.spec.lm.public(),
            "pricing": None
            if price is None
            else {"prompt_per_million": price.prompt_per_million, "completion_per_million": price.completion_per_million},
        }


@dataclass(frozen=True)
class Revision:
    """A revision ready to serve: its variants and their shares."""

    name: str
    weight: float
    variants: tuple[Variant, ...]
    by_name: Mapping[str, Variant]
    edges: tuple[float, ...]
    shadow: bool = False

    def choose(self, pinned: str | None, sticky_value: str | None, rng: Callable[[], float]) -> Variant:
        """The pinned variant (``InvalidInput`` when unknown), else the sticky or random one."""
        if pinned is not None:
            variant = self.by_name.get(pinned)
            if variant is None:
                known = ", ".join(v.name for v in self.variants)
                raise InvalidInput(f"unknown variant {pinned!r}; known variants: {known} (revision {self.name})")
            return variant
        if len(self.variants) == 1:
            return self.variants[0]
        point = sticky_point(sticky_value) if sticky_value else rng()
        return self.variants[choose_index(self.edges, point)]

    def public(self) -> dict[str, Any]:
        return {"name": self.name, "weight": self.weight, "shadow": self.shadow,
                "variants": [v.public() for v in self.variants]}


@dataclass(frozen=True)
class RoutingState:
    table: RoutingTable
    revisions: tuple[Revision, ...]
    by_name: Mapping[str, Revision]
    edges: tuple[float, ...]
    variants: tuple[Variant, ...]
    """Every revision's variants, in table order."""
    source_hash: str | None
    source: str

    @property
    def serial(self) -> int:
        return self.table.serial


def build_state(table: RoutingTable, source_hash: str | None = None, source: str = SETTINGS) -> RoutingState:
    """Build every variant's program and LM; raises ``ProgramError`` for the first that fails."""
    programs: dict[ProgramSpec, Program] = {}
    revisions = []
    for revision in table.revisions:
        variants = []
        for spec in revision.variants:
            try:
                if spec.program not in programs:
                    programs[spec.program] = load_program(spec.program)
                lm = build_lm(spec.lm)
            except ProgramError as exc:
                raise ProgramError(f"{_where(revision.name, spec.name)}: {exc}") from None
            variants.append(Variant(spec, programs[spec.program], lm, revision.name))
        revisions.append(
            Revision(
                name=revision.name,
                weight=revision.weight,
                variants=tuple(variants),
                by_name={v.name: v for v in variants},
                edges=cumulative_shares([v.spec.weight for v in variants]),
                shadow=revision.shadow,
            )
        )
    return RoutingState(
        table=table,
        revisions=tuple(revisions),
        by_name={r.name: r for r in revisions},
        edges=cumulative_shares([r.weight for r in revisions]),
        variants=tuple(v for r in revisions for v in r.variants),
        source_hash=source_hash,
        source=source,
    )


class Router:
    """The live routing state; ``choose`` is lock-free (one attribute read).

    Tables are offered from each source (the file, Redis) as bytes; bytes a source
    offered before are skipped without parsing, so polling an unchanged or stale
    source costs a hash, and a broken one is reported once.
    """

    def __init__(
        self,
        settings: RuntimeSettings,
        *,
        rng: Callable[[], float] = random.random,
        on_reload: Callable[[RoutingState], None] | None = None,
        on_error: Callable[[str], None] | None = None,
    ) -> None:
        self._settings = settings
        self._path = settings.routing_path
        self._rng = rng
        self._on_reload = on_reload
        self._on_error = on_error
        self._seen: dict[str, str] = {}
        """Source -> digest of the bytes it offered last."""
        self._problems: dict[str, ProblemLog] = {}
        self.state = self._load_initial()

    def _load_initial(self) -> RoutingState:
        if self._path is None:
            return build_state(default_table(self._settings))
        try:
            raw = self._path.read_bytes()
        except OSError as exc:
            raise RoutingError(f"cannot read ROUTING_PATH {self._path}: {exc.strerror}") from None
        digest = _digest(raw)
        self._seen[FILE] = digest
        return build_state(parse_table(raw, self._settings), digest, FILE)

    @property
    def sticky_header(self) -> str | None:
        return self.state.table.sticky_header

    def choose(
        self, *, revision: str | None = None, pinned: str | None = None, sticky_value: str | None = None
    ) -> Variant:
        """The revision (pinned, sticky or by weight), then the variant inside it (likewise)."""
        state = self.state
        if revision is not None:
            chosen = state.by_name.get(revision)
            if chosen is None:
                known = ", ".join(r.name for r in state.revisions)
                raise InvalidInput(f"unknown revision {revision!r}; known revisions: {known}")
        elif len(state.revisions) == 1:
            chosen = state.revisions[0]
        else:
            point = revision_point(sticky_value) if sticky_value else self._rng()
            chosen = state.revisions[choose_index(state.edges, point)]
        return chosen.choose(pinned, sticky_value, self._rng)

    def offer(self, raw: bytes, source: str) -> bool:
        """Adopt the table in ``raw`` when it is newer than the served one (the serial rule).

        False when ``source`` offered these bytes last time, when the table is not newer,
        or when it is unusable (logged once; the served table stays).
        """
        digest = _digest(raw)
        if self._seen.get(source) == digest:
            return False
        self._seen[source] = digest
        served = self.state
        if digest == served.source_hash:  # the other wire delivered this table already
            return False
        try:
            data = read_table_file(raw)
            if not is_newer(data.serial, served.serial):
                log.info(
                    "ignoring a routing table that is not newer than the one served",
                    extra={"fields": {"source": source, "serial": data.serial, "served_serial": served.serial}},
                )
                self._problems_of(source).clear()
                return False
            state = build_state(table_of(data, self._settings), digest, source)
        except (RoutingError, ProgramError) as exc:
            self._failed(source, f"{exc}; keeping the current table")
            return False
        self.state = state
        self._problems_of(source).clear()
        log.info(
            "routing table reloaded",
            extra={
                "fields": {
                    "source": source,
                    "serial": state.serial,
                    "revisions": {r.name: r.weight for r in state.revisions},
                    "variants": {f"{v.revision}/{v.name}": v.spec.weight for v in state.variants},
                    "table_hash": digest,
                }
            },
        )
        if self._on_reload is not None:
            self._on_reload(state)
        return True

    def reload_if_changed(self) -> bool:
        """Offer the file's table; False when unchanged, not newer, or broken."""
        if self._path is None:
            return False
        try:
            raw = self._path.read_bytes()
        except OSError as exc:
            self._seen.pop(FILE, None)  # whatever comes back is offered afresh
            self._failed(FILE, f"cannot read routing table {self._path}: {exc.strerror}; keeping the current table")
            return False
        return self.offer(raw, FILE)

    def _problems_of(self, source: str) -> ProblemLog:
        if source not in self._problems:
            self._problems[source] = ProblemLog(log, logging.ERROR)
        return self._problems[source]

    def _failed(self, source: str, message: str) -> None:
        # Once per distinct problem, not on every poll while the source stays broken.
        if self._problems_of(source).report(message) and self._on_error is not None:
            self._on_error(message)

    async def watch(self) -> None:
        """Poll the table file until cancelled."""
        if self._path is None:
            return
        interval = self._settings.routing_reload_secs
        while True:
            await asyncio.sleep(interval)
            try:
                self.reload_if_changed()
            except Exception:  # never let the watcher die
                log.exception("routing table reload failed; keeping the current table")


def _digest(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()[:16]
