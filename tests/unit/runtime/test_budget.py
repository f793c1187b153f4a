from datetime import UTC, datetime, timedelta

import pytest

from dspy_runtime.resilience.budget import Budget


class Today:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 23, 23, 59, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


async def test_local_counter_without_redis() -> None:
    budget = Budget(1.0, None, now=Today())
    assert not await budget.exhausted()
    assert await budget.spend(0.4) == pytest.approx(0.4)
    assert await budget.spend(0.6) == pytest.approx(1.0)
    assert await budget.exhausted()
    assert budget.healthy


async def test_a_new_utc_day_starts_from_zero() -> None:
    today = Today()
    budget = Budget(1.0, None, now=today)
    await budget.spend(2.0)
    assert await budget.exhausted()
    today.now += timedelta(minutes=2)
    assert await budget.spent_today() == 0.0
    assert not await budget.exhausted()


@pytest.mark.parametrize("limit", [None, 0, 0.0])
async def test_no_limit_is_never_exhausted(limit: float | None) -> None:
    budget = Budget(limit, None)
    await budget.spend(1e9)
    assert not await budget.exhausted()


async def test_zero_and_negative_spend_change_nothing() -> None:
    budget = Budget(1.0, None)
    await budget.spend(0.5)
    assert await budget.spend(0.0) == pytest.approx(0.5)
    assert await budget.spend(-1.0) == pytest.approx(0.5)


async def test_the_budget_metrics_export_the_limit_and_todays_known_spend() -> None:
    from dspy_runtime.metrics import Metrics

    today = Today()
    metrics = Metrics()
    budget = Budget(5.0, None, now=today)
    metrics.watch_budget(budget)
    read = metrics.registry.get_sample_value
    assert (read("dspy_budget_daily_usd"), read("dspy_budget_spent_today_usd")) == (5.0, 0.0)
    await budget.spend(1.25)
    assert read("dspy_budget_spent_today_usd") == pytest.approx(1.25), "read at scrape time"
    today.now += timedelta(minutes=2)
    assert read("dspy_budget_spent_today_usd") == 0.0, "a new UTC day, before any call rolls it"
    unlimited = Metrics()
    unlimited.watch_budget(Budget(None, None))
    assert unlimited.registry.get_sample_value("dspy_budget_daily_usd") == 0.0


async def test_a_reservation_is_admitted_only_while_spent_plus_held_plus_it_fit() -> None:
    budget = Budget(1.0, None, now=Today())
    first, second = await budget.reserve(0.4, 60), await budget.reserve(0.4, 60)
    assert first is not None and second is not None
    assert await budget.reserve(0.4, 60) is None, "0.8 held + 0.4 > 1.0, though nothing is spent yet"
    assert budget.refusing and await budget.exhausted()
    assert budget.reserved_today == pytest.approx(0.8)
    await budget.settle(first, 0.1)  # the call cost less than its worst case: the rest is free again
    assert budget.reserved_today == pytest.approx(0.4)
    assert await budget.reserve(0.4, 60) is not None  # 0.1 + 0.4 + 0.4 <= 1.0
    assert not budget.refusing
    await budget.settle(second, 0.0)  # failed calls release their hold and cost nothing
    assert await budget.spent_today() == pytest.approx(0.1)


async def test_an_unlimited_budget_holds_nothing_and_still_counts_spend() -> None:
    budget = Budget(None, None, now=Today())
    hold = await budget.reserve(1e9, 60)
    assert hold is not None and hold.usd == 0.0
    assert await budget.settle(hold, 2.5) == pytest.approx(2.5)
    assert budget.reserved_today == 0.0 and not await budget.exhausted()


async def test_without_a_shared_counter_each_replica_spends_its_share() -> None:
    """Three replicas, no Redis: each reserves out of a third of the limit, so together they stay
    within it (each alone used to count the whole limit, three times it for the fleet)."""
    budget = Budget(0.9, None, now=Today(), replicas=3)
    hold = await budget.reserve(0.2, 60)
    assert hold is not None
    await budget.settle(hold, 0.2)
    assert await budget.reserve(0.2, 60) is None, "0.2 + 0.2 > 0.3, this replica's share"
    assert await budget.reserve(0.05, 60) is not None
