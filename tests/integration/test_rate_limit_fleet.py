"""Rate limits that hold: an overall bucket behind the per-key ones, and the global scope (buckets
in a real Redis shared by two runtimes), with its per-pod fallback while Redis is down.

Rates are tiny (one token per 1000 s and less), so within a test only the bursts count: the
figures below are exact, whatever the machine's speed.
"""

from __future__ import annotations

from typing import Any


def statuses(runtime: Any, count: int, headers: dict[str, str] | None = None, question: str = "same") -> list[int]:
    return [runtime.predict({"input": question}, headers=headers).status_code for _ in range(count)]


def test_a_client_that_invents_a_key_per_request_is_limited(start_runtime):
    """Each new key used to start with a full bucket: 200 of 200 such requests were admitted."""
    runtime = start_runtime(rate_limit_rps=0.001, rate_limit_burst=1, rate_limit_key_header="X-API-Key")
    codes = [runtime.predict({"input": "same"}, headers={"X-API-Key": f"k-{i}"}).status_code for i in range(200)]
    assert codes.count(200) == 10, "the overall bucket: 10 keys' burst"
    assert set(codes[10:]) == {429}
    limited = runtime.predict({"input": "same"}, headers={"X-API-Key": "a-real-client"})
    assert limited.status_code == 429 and limited.json()["error"]["type"] == "rate_limited"


def test_the_global_limit_holds_across_two_runtimes(start_runtime, redis_url):
    """Per pod, two runtimes with burst 5 admit 10; one set of buckets in Redis admits 5."""
    settings = {"rate_limit_rps": 0.001, "rate_limit_burst": 5, "rate_limit_scope": "global", "redis_url": redis_url}
    first, second = start_runtime(**settings), start_runtime(**settings)
    codes = [pod.predict({"input": "same"}).status_code for _ in range(10) for pod in (first, second)]
    assert codes.count(200) == 5
    assert first.client.get("/health").json()["components"]["rate_limit"] == "global"


def test_global_keys_and_the_overall_bucket_are_shared_by_the_fleet(start_runtime, redis_url):
    settings = {"rate_limit_rps": 0.001, "rate_limit_burst": 2, "rate_limit_key_header": "X-API-Key",
                "rate_limit_total_rps": 0.001, "rate_limit_total_burst": 5, "rate_limit_scope": "global",
                "redis_url": redis_url}
    first, second = start_runtime(**settings), start_runtime(**settings)
    alice = {"X-API-Key": "alice"}
    assert statuses(first, 2, alice) + statuses(second, 2, alice) == [200, 200, 429, 429], "alice's 2, fleet-wide"
    # 3 overall tokens are left: new keys on either pod get them, then nobody does.
    invented = [pod.predict({"input": "same"}, headers={"X-API-Key": f"k-{i}"}).status_code
                for i, pod in enumerate([first, second] * 4)]
    assert invented.count(200) == 3
    assert statuses(second, 1, {"X-API-Key": "bob"}) == [429], "the overall bucket is empty"


def test_with_redis_down_each_pod_falls_back_to_its_share_and_health_says_so(start_runtime, redis_server,
                                                                            redis_url, poll):
    settings = {"rate_limit_rps": 0.001, "rate_limit_burst": 6, "rate_limit_scope": "global",
                "runtime_replicas": 2, "redis_url": redis_url}
    first, second = start_runtime(**settings), start_runtime(**settings)
    assert first.predict({"input": "before"}).status_code == 200
    redis_server.stop()
    # Each pod: burst 6 / 2 replicas = 3, so the fleet admits 6 at most, as the global limit does.
    assert statuses(first, 5, question="during") == [200, 200, 200, 429, 429]
    assert statuses(second, 5, question="during") == [200, 200, 200, 429, 429]
    health = first.client.get("/health").json()
    assert health["status"] == "degraded" and health["components"]["rate_limit"] == "fallback"
    redis_server.start()
    # Back on the buckets in Redis (a new, full set: this Redis forgot) once the back-off lets a request probe it.
    poll(lambda: first.predict({"input": "after"}).status_code == 200
         and first.client.get("/health").json()["components"]["rate_limit"] == "global",
         timeout=60, what="the global limit to come back")
