from prometheus_client.parser import text_string_to_metric_families

from dspy_runtime.metrics import Metrics


def _samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    body, _ = metrics.render()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


def test_exposes_the_names_the_design_promises() -> None:
    m = Metrics()
    m.predictions_total.labels("gpt", "3f9a0c1d2e4b", "baseline", "ok").inc()
    m.prediction_duration_seconds.labels("gpt", "3f9a0c1d2e4b", "baseline", "true").observe(0.0003)
    m.cache_op("memory", "hit").inc()
    m.set_breaker_state("gpt", "open")
    m.cost_usd_total.labels("gpt", "3f9a0c1d2e4b", "baseline").inc(0.5)
    m.token_usage_total.labels("gpt", "input").inc(10)
    m.active_predictions.inc()
    m.errors_total.labels("lm_timeout").inc()

    samples = _samples(m)

    revision = ("revision", "3f9a0c1d2e4b")
    assert samples[("dspy_predictions_total", (("model", "gpt"), revision, ("status", "ok"), ("variant", "baseline")))] == 1
    assert samples[("dspy_cache_operations_total", (("level", "memory"), ("operation", "hit")))] == 1
    assert samples[("dspy_circuit_breaker_state", (("model", "gpt"),))] == 1
    assert samples[("dspy_cost_usd_total", (("model", "gpt"), revision, ("variant", "baseline")))] == 0.5
    assert samples[("dspy_token_usage_total", (("model", "gpt"), ("type", "input")))] == 10
    assert samples[("dspy_active_predictions", ())] == 1
    assert samples[("dspy_errors_total", (("type", "lm_timeout"),))] == 1
    duration = (("cached", "true"), ("model", "gpt"), revision, ("variant", "baseline"))
    assert samples[("dspy_prediction_duration_seconds_count", duration)] == 1


def test_sub_millisecond_latencies_land_in_their_own_buckets() -> None:
    m = Metrics()
    m.prediction_duration_seconds.labels("gpt", "default", "a", "true").observe(0.0003)
    samples = _samples(m)
    bucket = "dspy_prediction_duration_seconds_bucket"
    labels = (("cached", "true"), ("model", "gpt"), ("revision", "default"), ("variant", "a"))
    assert samples[(bucket, (*labels[:1], ("le", "0.00025"), *labels[1:]))] == 0
    assert samples[(bucket, (*labels[:1], ("le", "0.0005"), *labels[1:]))] == 1


def test_each_instance_has_its_own_registry() -> None:
    first, second = Metrics(), Metrics()
    first.errors_total.labels("x").inc()
    assert ("dspy_errors_total", (("type", "x"),)) not in _samples(second)


def test_cache_op_children_are_reused() -> None:
    m = Metrics()
    assert m.cache_op("redis", "error") is m.cache_op("redis", "error")


def test_breaker_states_are_encoded_as_documented() -> None:
    m = Metrics()
    for state, value in (("closed", 0), ("open", 1), ("half_open", 2)):
        m.set_breaker_state("gpt", state)
        assert _samples(m)[("dspy_circuit_breaker_state", (("model", "gpt"),))] == value


def test_render_returns_the_prometheus_text_content_type() -> None:
    _, content_type = Metrics().render()
    assert content_type.startswith("text/plain")
