"""status.shadow from hand-written window buckets, and when the operator reads and writes it."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from dspy_operator import observe
from dspy_operator.observe import Throttle
from dspy_operator.reconcile.common import Owner
from dspy_operator.rollout.experiment import wilson_interval
from dspy_operator.rollout.shadow import shadow_status
from dspy_operator.rollout.state import RolloutState

STABLE, CANARY, GONE = "3f9a0c1d2e4b", "77aa01bc9e0f", "0123456789ab"


def shadow_fields(revision: str, variant: str, **figures: float) -> dict[str, str]:
    return {f"{revision}|{variant}|shadow_{name.replace('__', ':')}": str(value) for name, value in figures.items()}


BUCKETS: dict[int, dict[Any, Any]] = {
    1000: {
        **shadow_fields(STABLE, "candidate", requests=60, errors=2, cache_hits=8, cost_usd=0.5, compared=58, agree=50,
                        lat__12=60, live_lat__9=60, dropped__busy=3),
        # live figures of the same revision, which are no shadow figures
        f"{STABLE}|baseline|requests": "400", f"{STABLE}|baseline|lat:9": "400",
    },
    1005: {
        **shadow_fields(STABLE, "candidate", requests=40, compared=40, cost_usd=0.5, lat__13=40,
                        live_lat__10=40, dropped__cap=2, dropped__budget=1),
        # a revision no longer served: left out; a value that does not parse: skipped (no agree here)
        **shadow_fields(GONE, "candidate", requests=5, compared=5, agree=5),
        f"{STABLE}|candidate|shadow_agree": "not a number",
    },
    # a bucket outside the window
    2000: shadow_fields(STABLE, "candidate", requests=1000, compared=1000, agree=0),
}


def test_the_status_block_of_a_shadow_variant():
    block = shadow_status(BUCKETS, 1000, 1010, {STABLE, CANARY}, window="30m", updated="2026-12-01T12:00:00Z")
    assert block["window"] == "30m" and block["updated"] == "2026-12-01T12:00:00Z"
    (target,) = block["targets"]
    low, high = wilson_interval(50, 98)
    # p95 of 60 calls in (0.5, 1] and 40 in (1, 2.5]: rank 95 is the 35th of 40 in the second, 1 + 1.5 * 35/40
    # live: 60 in (0.05, 0.1], 40 in (0.1, 0.25]: 0.1 + 0.15 * 35/40
    assert target == {
        "revision": STABLE, "variant": "candidate", "requests": 98,
        "agreementRate": pytest.approx(50 / 98, rel=1e-5),
        "agreementCI": [pytest.approx(low, rel=1e-5), pytest.approx(high, rel=1e-5)],
        "errorRate": 0.02, "p95LatencySeconds": 2.3125, "liveP95LatencySeconds": 0.23125,
        # 1 USD over the 90 computed calls (100, less 8 cached and 2 failed)
        "costPerRequestUsd": pytest.approx(1 / 90, rel=1e-5),
        "dropped": 6,
    }  # fmt: skip


def test_bytes_from_redis_read_alike_and_a_target_without_answers_has_only_counts():
    raw = {1000: {f"{CANARY}|baseline|shadow_dropped:busy".encode(): b"4"}}
    (target,) = shadow_status(raw, 1000, 1005, {CANARY}, window="30m", updated="x")["targets"]
    assert target == {"revision": CANARY, "variant": "baseline", "requests": 0, "dropped": 4}


def test_no_shadow_figures_no_targets():
    assert shadow_status({1000: {f"{STABLE}|baseline|requests": "3"}}, 1000, 1005, {STABLE}, window="30m",
                         updated="x")["targets"] == []


# ---- observe.shadow ---------------------------------------------------------------------------------

NOW = datetime(2026, 12, 1, 12, 0, 0, tzinfo=timezone.utc)


class Bus:
    """The one call `observe.shadow` makes, on buckets held in memory."""

    def __init__(self, buckets: dict[int, dict[str, str]]) -> None:
        self.buckets = buckets
        self.reads: list[tuple[str, float, float]] = []

    def read_buckets(self, prefix: str, start: float, end: float) -> dict[int, dict[str, str]]:
        self.reads.append((prefix, start, end))
        return {at: fields for at, fields in self.buckets.items() if start <= at < end}


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def owner(variants: list[dict[str, Any]], canary_shadow: bool = False) -> Owner:
    spec: dict[str, Any] = {"variants": variants}
    if canary_shadow:
        spec["rollout"] = {"strategy": "Canary", "canary": {"steps": [{"setWeight": 10}], "shadow": True}}
    return Owner(name="qa", namespace="demo", uid="uid-1", generation=1, spec=spec)


SHADOWED = [{"name": "baseline", "weight": 100}, {"name": "candidate", "weight": 0, "shadow": True}]
RECENT = int(NOW.timestamp()) - 300


def test_observe_reads_once_a_minute_and_writes_only_what_changed():
    bus = Bus({RECENT: shadow_fields(STABLE, "candidate", requests=10, compared=10, agree=9, lat__9=10,
                                     live_lat__8=10)})
    clock, state = Clock(), RolloutState(stable=STABLE)
    throttle = Throttle(60.0, clock)
    block = observe.shadow(bus, owner(SHADOWED), state, None, NOW, throttle=throttle)  # type: ignore[arg-type]
    assert block is not None and block["updated"] == "2026-12-01T12:00:00Z" and block["window"] == "30m"
    assert [(t["revision"], t["variant"], t["requests"], t["agreementRate"]) for t in block["targets"]] == [
        (STABLE, "candidate", 10, 0.9)]
    prefix, start, end = bus.reads[0]
    assert prefix == "dspy:{demo/qa}:" and end - start == observe.EXPERIMENT_WINDOW_SECONDS
    later = NOW + timedelta(seconds=30)
    assert observe.shadow(bus, owner(SHADOWED), state, block, later, throttle=throttle) is None  # type: ignore[arg-type]
    assert len(bus.reads) == 1, "not due: no read"
    clock.now = 61.0
    assert observe.shadow(bus, owner(SHADOWED), state, block, later, throttle=throttle) is None, "idle: no write"  # type: ignore[arg-type]
    bus.buckets[RECENT + 5] = shadow_fields(STABLE, "candidate", requests=10, compared=10, agree=1)
    clock.now = 122.0
    changed = observe.shadow(bus, owner(SHADOWED), state, block, later, throttle=throttle)  # type: ignore[arg-type]
    assert changed is not None and changed["targets"][0]["requests"] == 20 and changed["updated"] == "2026-12-01T12:00:30Z"


def test_observe_has_nothing_to_say_without_a_shadow_target():
    bus = Bus({})
    throttle = Throttle(60.0, Clock())
    plain = owner([{"name": "baseline", "weight": 100}])
    assert observe.shadow(bus, plain, RolloutState(stable=STABLE), None, NOW, throttle=throttle) is None  # type: ignore[arg-type]
    # a canary in shadow counts only while there is a canary
    assert observe.shadow(bus, owner(plain.spec["variants"], canary_shadow=True), RolloutState(stable=STABLE), None,
                          NOW, throttle=throttle) is None  # type: ignore[arg-type]
    assert bus.reads == []
    canary = RolloutState(stable=STABLE, canary=CANARY, weight=0)
    block = observe.shadow(bus, owner(plain.spec["variants"], canary_shadow=True), canary, None, NOW, throttle=throttle)  # type: ignore[arg-type]
    assert block is not None and block["targets"] == [] and len(bus.reads) == 1


def test_a_shadow_variant_is_no_arm_of_the_experiment():
    throttle = Throttle(60.0, Clock())
    state = RolloutState(stable=STABLE)
    assert not observe.experiment_due(owner(SHADOWED), state, throttle)
    three = [*SHADOWED, {"name": "other", "weight": 0}]
    assert observe.experiment_due(owner(three), state, throttle)
    block = observe.experiment(Bus({}), owner(three), state, None, NOW)  # type: ignore[arg-type]
    assert [variant["name"] for variant in block["variants"]] == ["baseline", "other"]


def test_the_block_has_the_crds_fields_and_no_other():
    from pathlib import Path

    import yaml

    crd = yaml.safe_load((Path(__file__).resolve().parents[3] / "crds" / "dspy.dev_dspydeployments.yaml").read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]["shadow"]
    block = shadow_status(BUCKETS, 1000, 1010, {STABLE}, window="30m", updated="2026-12-01T12:00:00Z")
    assert set(block) == set(schema["properties"])
    assert set(block["targets"][0]) == set(schema["properties"]["targets"]["items"]["properties"])
