"""Cache warm-up on a real Redis, real HTTP and the fake LM: answered before /ready, once across
replicas, from Redis when there, bounded in time; and L1 filled from Redis' most hit entries."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import redis

QUESTIONS = [f"warm question {i}" for i in range(6)]
HELD_MODEL = "fake-model"
"""The fake LM's name for the runtime's model (litellm strips the provider prefix)."""


def warmup_file(tmp_path: Path, questions: list[str] = QUESTIONS, extra: list[str] = ()) -> Path:
    """One inputs object per line, and whatever extra lines a test adds."""
    path = tmp_path / "warmup.jsonl"
    path.write_text("\n".join([json.dumps({"question": q}) for q in questions] + list(extra)) + "\n")
    return path


def warmup_of(runtime: Any) -> dict[str, Any]:
    return runtime.client.get("/health").json()["components"]["warmup"]


def release_until_ready(fake_lm: Any, runtimes: list[Any], poll: Any) -> None:
    """Let held LM calls answer, again and again (calls arriving later are held too), until every
    runtime is ready."""
    def all_ready() -> bool:
        fake_lm.release()
        return all(r.client.get("/ready").status_code == 200 for r in runtimes)

    poll(all_ready, what="every runtime to finish its warm-up")


def test_two_replicas_warm_up_before_ready_and_pay_each_entry_once(start_runtime, fake_lm, redis_url, tmp_path, poll):
    path = warmup_file(tmp_path, extra=["", "not json {", "[1, 2]", json.dumps({"query": "wrong field"}),
                                        json.dumps({"question": "  warm question 0 "})])
    fake_lm.configure(hold_models=[HELD_MODEL])  # every LM call waits for a release
    first = start_runtime(redis_url=redis_url, cache_warmup_path=path, cache_warmup_concurrency=4)
    poll(lambda: fake_lm.stats()["held"] == 4, what="the first replica to hold four entries' LM calls")
    second = start_runtime(redis_url=redis_url, cache_warmup_path=path, cache_warmup_concurrency=4)
    poll(lambda: fake_lm.stats()["held"] == 6, what="the second replica to take the two entries left")
    # Serving (liveness) but not ready while warming: the Service sends it no traffic yet.
    for runtime in (first, second):
        ready = runtime.client.get("/ready")
        assert ready.status_code == 503 and "warming the cache" in ready.json()["error"]["message"]
        assert runtime.client.get("/health").status_code == 200
        assert warmup_of(runtime)["state"] == "running"
    release_until_ready(fake_lm, [first, second], poll)

    assert fake_lm.calls == len(QUESTIONS), "each entry paid once across both replicas"
    reports = [warmup_of(first), warmup_of(second)]
    for report in reports:
        assert report["state"] == "complete"
        assert report["entries"] == len(QUESTIONS), "the padded duplicate of question 0 is the same entry"
        assert report["invalid_lines"] == 3  # not JSON, not an object, a field the signature lacks
        assert report["lines"] == len(QUESTIONS) + 4
        assert report["from_lm"] + report["from_redis"] == len(QUESTIONS) and report["failed"] == 0
    assert sorted(r["from_lm"] for r in reports) == [2, 4]
    assert first.metric("dspy_cache_warmup_entries_total", outcome="lm") == 4
    assert second.metric("dspy_cache_warmup_entries_total", outcome="redis") == 4
    assert first.metric("dspy_cache_warmup_entries_total", outcome="invalid") == 3
    assert first.metric("dspy_cache_warmup_state") == 0
    # Both start warm: every warmed question is answered from memory, with no LM call.
    for runtime in (first, second):
        for question in QUESTIONS:
            body = runtime.predict({"input": question}).json()
            assert body["metadata"]["cache_level"] == "memory", (question, body["metadata"])
    assert fake_lm.calls == len(QUESTIONS)


def test_a_pod_started_later_warms_from_redis_without_calling_the_lm(start_runtime, fake_lm, redis_url, tmp_path, poll):
    first = start_runtime(redis_url=redis_url)
    for question in QUESTIONS:
        assert first.predict({"input": question}).json()["metadata"]["cached"] is False
    assert fake_lm.calls == len(QUESTIONS)

    later = start_runtime(redis_url=redis_url, cache_warmup_path=warmup_file(tmp_path))
    poll(lambda: later.client.get("/ready").status_code == 200, what="the warm-up from Redis")
    report = warmup_of(later)
    assert (report["from_redis"], report["from_lm"], report["state"]) == (len(QUESTIONS), 0, "complete")
    assert fake_lm.calls == len(QUESTIONS), "no LM call: Redis had every entry"
    assert later.predict({"input": QUESTIONS[0]}).json()["metadata"]["cache_level"] == "memory"


def test_warm_up_that_runs_out_of_time_lets_the_pod_serve_and_says_incomplete(start_runtime, fake_lm, redis_url,
                                                                               tmp_path, poll):
    fake_lm.configure(hold_models=[HELD_MODEL])  # the LM never answers while the warm-up lasts
    runtime = start_runtime(redis_url=redis_url, cache_warmup_path=warmup_file(tmp_path),
                            cache_warmup_timeout_secs=1.0)
    poll(lambda: runtime.client.get("/ready").status_code == 200, what="/ready after the warm-up timeout")
    report = warmup_of(runtime)
    assert report["state"] == "incomplete"
    assert report["pending"] == len(QUESTIONS) and report["from_lm"] == 0
    assert runtime.metric("dspy_cache_warmup_state") == 2
    assert not redis.Redis.from_url(redis_url).keys("dspy:cache-warmup:*"), "the stopped entries released their locks"
    fake_lm.configure(hold_models=[])
    fake_lm.release()
    # The four LM calls in flight were not wasted (their answers are stored); the two never
    # started are computed on demand.
    poll(lambda: runtime.predict({"input": QUESTIONS[0]}).json()["metadata"]["cache_level"] == "memory",
         what="the in-flight warm-up answers to be stored")
    assert runtime.predict({"input": QUESTIONS[5]}).json()["metadata"]["cached"] is False
    assert fake_lm.calls == 5


def test_failed_lm_calls_are_counted_and_never_stop_the_pod(start_runtime, fake_lm, redis_url, tmp_path, poll):
    fake_lm.configure(failure_rate=1.0)
    runtime = start_runtime(redis_url=redis_url, cache_warmup_path=warmup_file(tmp_path), lm_max_retries=0,
                            circuit_breaker_failure_threshold=100)
    poll(lambda: runtime.client.get("/ready").status_code == 200, what="/ready after a failing warm-up")
    report = warmup_of(runtime)
    assert (report["state"], report["failed"], report["failures"]) == ("incomplete", 6, {"upstream_error": 6})
    assert runtime.metric("dspy_cache_warmup_entries_total", outcome="failed") == 6


def test_a_new_pod_fills_memory_with_the_most_hit_entries_in_redis(start_runtime, fake_lm, redis_url, poll):
    first = start_runtime(redis_url=redis_url)
    for _ in range(5):
        first.predict({"input": "popular"})
    first.predict({"input": "rare"})
    client = redis.Redis.from_url(redis_url)
    poll(lambda: client.keys("dspy:cache-hot:*"), timeout=30, what="the hit counts to reach Redis")

    second = start_runtime(redis_url=redis_url, memory_cache_warm_entries=1)
    poll(lambda: second.client.get("/ready").status_code == 200, what="the second pod's warm-up")
    assert warmup_of(second)["hot_loaded"] == 1
    assert second.metric("dspy_cache_warmup_entries_total", outcome="hot") == 1
    assert second.predict({"input": "popular"}).json()["metadata"]["cache_level"] == "memory", "the hottest one"
    assert second.predict({"input": "rare"}).json()["metadata"]["cache_level"] == "redis", "beyond the bound"
    assert fake_lm.calls == 2


def test_a_new_revision_in_the_routing_table_is_warmed_while_the_pod_serves(start_runtime, fake_lm, redis_url,
                                                                            tmp_path, poll):
    table = tmp_path / "routing.json"
    revision = {"name": "r1", "weight": 100, "variants": [{"name": "a", "weight": 100}]}
    table.write_text(json.dumps({"serial": 1, "revisions": [revision]}))
    runtime = start_runtime(redis_url=redis_url, routing_path=table, routing_reload_secs=0.1,
                            cache_warmup_path=warmup_file(tmp_path, QUESTIONS[:2]))
    poll(lambda: runtime.client.get("/ready").status_code == 200, what="the first warm-up")
    assert fake_lm.calls == 2
    canary = {"name": "r2", "weight": 0, "variants": [{"name": "a", "weight": 100, "program": {"module": "ChainOfThought"}}]}
    table.write_text(json.dumps({"serial": 2, "revisions": [revision, canary]}))
    poll(lambda: fake_lm.calls == 4 and warmup_of(runtime)["state"] == "complete", what="the canary's warm-up")
    body = runtime.predict({"input": QUESTIONS[0], "revision": "r2"}).json()
    assert body["metadata"]["cache_level"] == "memory"
    assert runtime.client.get("/ready").status_code == 200


def test_concurrent_requests_during_warm_up_share_its_answers(start_runtime, fake_lm, redis_url, tmp_path, poll):
    """A request for an entry being warmed joins the warm-up's LM call (single-flight)."""
    fake_lm.configure(hold_models=[HELD_MODEL])
    runtime = start_runtime(redis_url=redis_url, cache_warmup_path=warmup_file(tmp_path, QUESTIONS[:1]))
    poll(lambda: fake_lm.stats()["held"] == 1, what="the warm-up's LM call")
    answers: list[dict[str, Any]] = []
    worker = threading.Thread(target=lambda: answers.append(runtime.predict({"input": QUESTIONS[0]}).json()))
    worker.start()
    release_until_ready(fake_lm, [runtime], poll)
    worker.join(timeout=60)
    assert answers[0]["metadata"]["cached"] is True
    assert fake_lm.calls == 1
