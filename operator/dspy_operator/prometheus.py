"""The I/O edge to a user's Prometheus server: instant queries over its HTTP API, nothing more.

The standard library's HTTP client is enough for `GET /api/v1/query` and keeps a dependency out
of the operator image. Every failure (unreachable, a timeout, an HTTP error, a query Prometheus
rejects, an answer that is not its JSON) is one `PrometheusUnavailable` whose message names the
server and what went wrong: the analysis then has no verdict for that interval and says why.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import Any

MAX_ANSWER_BYTES = 1 << 20
"""An instant query for one number answers in a few hundred bytes; a bigger answer is a query
that returned a whole vector, cut off here rather than read into the operator's memory."""


class PrometheusUnavailable(Exception):
    """No answer to use from the server; the message says which server and why."""


def instant_query(address: str, query: str, at: float, timeout: float) -> Mapping[str, Any]:
    """The `data` of `GET {address}/api/v1/query?query=...&time=at` (resultType and result)."""
    url = f"{address}/api/v1/query?" + urllib.parse.urlencode({"query": query, "time": f"{at:.3f}"})
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - http(s) only, the CRD's pattern
            answer = _decode(response.read(MAX_ANSWER_BYTES))
    except urllib.error.HTTPError as error:
        # Prometheus answers a query it rejects (bad syntax, unknown function) with 400 and its reason.
        answer = _decode(error.read(MAX_ANSWER_BYTES))
        raise PrometheusUnavailable(f"{address} answered {error.code}: {answer.get('error') or error.reason}") from error
    except (urllib.error.URLError, TimeoutError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise PrometheusUnavailable(f"{address} unreachable: {reason}") from error
    if answer.get("status") != "success" or not isinstance(answer.get("data"), Mapping):
        raise PrometheusUnavailable(f"{address} answered {answer.get('status') or 'no status'}: "
                                    f"{answer.get('error') or 'not a Prometheus query answer'}")
    return answer["data"]


def _decode(body: bytes) -> dict[str, Any]:
    try:
        answer = json.loads(body)
    except ValueError:
        return {}
    return answer if isinstance(answer, dict) else {}
