import pytest

from dspy_runtime.costs import CostTracker, Pricing, default_pricing


@pytest.fixture(autouse=True)
def local_price_map(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "true")


def test_default_pricing_comes_from_litellm_with_or_without_provider_prefix() -> None:
    bare = default_pricing("gpt-4o-mini")
    assert bare is not None and bare.prompt_per_million > 0 and bare.completion_per_million > 0
    assert default_pricing("openai/gpt-4o-mini") == bare


def test_unknown_models_have_no_default_price() -> None:
    assert default_pricing("fake/never-heard-of-it") is None


def test_cost_is_tokens_times_price_per_million() -> None:
    tracker = CostTracker({"m": Pricing(prompt_per_million=1.0, completion_per_million=4.0)})
    assert tracker.cost("m", 1_000_000, 0) == pytest.approx(1.0)
    assert tracker.cost("m", 500, 250) == pytest.approx((500 * 1 + 250 * 4) / 1e6)


def test_overrides_win_over_litellm() -> None:
    tracker = CostTracker({"openai/gpt-4o-mini": Pricing(10.0, 20.0)})
    assert tracker.pricing("openai/gpt-4o-mini") == Pricing(10.0, 20.0)


def test_snapshot_totals_per_model_and_variant_and_lists_unpriced_models() -> None:
    tracker = CostTracker({"paid": Pricing(2.0, 8.0)})
    assert tracker.record("paid", "baseline", 1000, 500) == pytest.approx(0.006)
    tracker.record("paid", "optimized", 1000, 0)
    assert tracker.record("fake/local", "baseline", 10, 10) == 0.0

    snap = tracker.snapshot()

    assert snap["currency"] == "USD"
    assert snap["total"] == {"requests": 3, "input_tokens": 2010, "output_tokens": 510, "cost_usd": 0.008}
    assert snap["models"]["paid"] == {
        "requests": 2,
        "input_tokens": 2000,
        "output_tokens": 500,
        "cost_usd": 0.008,
        "priced": True,
        "pricing": {"prompt_per_million": 2.0, "completion_per_million": 8.0},
    }
    assert snap["models"]["fake/local"]["priced"] is False
    assert snap["variants"]["baseline"] == {
        "requests": 2,
        "input_tokens": 1010,
        "output_tokens": 510,
        "cost_usd": 0.006,
    }
    assert snap["unpriced_models"] == ["fake/local"]


def test_empty_snapshot() -> None:
    snap = CostTracker().snapshot()
    assert snap["total"]["requests"] == 0
    assert snap["models"] == {} and snap["variants"] == {} and snap["unpriced_models"] == []


def test_a_variants_own_pricing_wins_and_counts_its_model_as_priced() -> None:
    tracker = CostTracker({"m": Pricing(1.0, 1.0)})
    assert tracker.record("m", "cheap", 1_000_000, 0, Pricing(0.5, 0.0)) == pytest.approx(0.5)
    assert tracker.record("m", "default", 1_000_000, 0) == pytest.approx(1.0)
    assert tracker.record("fake/local", "priced-here", 1_000_000, 1_000_000, Pricing(2.0, 3.0)) == pytest.approx(5.0)
    snap = tracker.snapshot()
    assert snap["variants"]["cheap"]["cost_usd"] == 0.5
    assert snap["models"]["fake/local"]["priced"] is True and snap["unpriced_models"] == []
