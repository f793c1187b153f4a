import pytest

from dspy_runtime.cache.keys import CacheNames, cache_key, cache_scope, glob_escape, scope_of


def test_key_is_stable_and_short() -> None:
    key = cache_key("v1", "openai/gpt-4o-mini", "baseline", {"question": "What is DSPy?"})
    assert key == cache_key("v1", "openai/gpt-4o-mini", "baseline", {"question": "What is DSPy?"})
    scope, colon, digest = key.partition(":")
    assert (len(scope), colon, len(digest)) == (16, ":", 32)
    int(scope, 16), int(digest, 16)


def test_a_key_starts_with_the_scope_of_its_variant_so_a_variant_is_found_by_prefix() -> None:
    scope = cache_scope("v1", "m", "a")
    keys = [cache_key("v1", "m", "a", {"question": q}) for q in ("x", "y")]
    assert {scope_of(key) for key in keys} == {scope}
    assert scope_of(cache_key("v2", "m", "a", {"question": "x"})) != scope
    assert scope_of(cache_key("v1", "m", "b", {"question": "x"})) != scope
    assert scope_of(cache_key("v1", "m2", "a", {"question": "x"})) != scope


def test_redis_names_live_under_the_resource_prefix() -> None:
    names = CacheNames("dspy:{demo/qa}:")
    assert names.entries == "dspy:{demo/qa}:cache:"
    assert names.hot("abc") == "dspy:{demo/qa}:cache-hot:abc"
    assert names.channel == "dspy:{demo/qa}:cache-invalidate"
    assert CacheNames().entries == "dspy:cache:", "without a resource, the prefix entries always had"
    assert not names.hot_prefix.startswith(names.entries), "clearing entries must not count the hit counts"


def test_glob_escape_makes_a_pattern_match_literally() -> None:
    assert glob_escape("dspy:{a/b}:cache:") == "dspy:{a/b}:cache:"
    assert glob_escape("a*b?[c]\\") == "a\\*b\\?\\[c\\]\\\\"


def test_incidental_whitespace_and_key_order_do_not_matter() -> None:
    a = cache_key("v1", "m", "a", {"question": "  What is\n DSPy? ", "context": "x"})
    b = cache_key("v1", "m", "a", {"context": "x", "question": "What is DSPy?"})
    assert a == b


@pytest.mark.parametrize(
    "args",
    [
        ("v2", "m", "a", {"question": "q"}),
        ("v1", "other", "a", {"question": "q"}),
        ("v1", "m", "b", {"question": "q"}),
        ("v1", "m", "a", {"question": "q2"}),
        ("v1", "m", "a", {"query": "q"}),
    ],
)
def test_every_part_changes_the_key(args: tuple) -> None:
    assert cache_key(*args) != cache_key("v1", "m", "a", {"question": "q"})


def test_fields_cannot_bleed_into_each_other() -> None:
    assert cache_key("v1", "m:a", "", {}) != cache_key("v1", "m", ":a", {})


def test_non_string_inputs_are_hashed_as_json() -> None:
    assert cache_key("v", "m", "a", {"n": 1, "tags": ["x"]}) != cache_key("v", "m", "a", {"n": "1", "tags": ["x"]})
