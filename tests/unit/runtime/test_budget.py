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
