"""A DSPyDeployment -> the text of `kubectl dspy status` and `history` (pure).

Input is the whole object as the API returns it: status says where the rollout is, and
spec says what that is measured against (the steps, the analysis limits, the gate's
scores). `now` comes in as an argument, so countdowns and ages are unit tests, and
`color` is decided by the caller (a TTY), so the text itself never depends on the terminal.

Layout follows `kubectl describe`: `Key:` lines aligned at one column, tables with
two-space gutters and numbers right-aligned, `-` for a figure that was not measured.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Final

from dspy_operator.rollout.state import Plan, RolloutState, Step, parse_time

KEY_WIDTH: Final = 14
"""Column of the values after `Key:` (the longest key, "Last request:", plus a space)."""
BAR_WIDTH: Final = 20
"""Characters of the step progress bar: enough to tell 32 steps apart by eye."""
INDENT: Final = "  "

_GREEN, _RED, _YELLOW, _DIM = "32", "31", "33", "2"
_TONES: Final[Mapping[str, str]] = {
    "Healthy": _GREEN, "Pass": _GREEN, "Passed": _GREEN, "Accepted": _GREEN, "pass": _GREEN, "yes": _GREEN,
    "Degraded": _RED, "Fail": _RED, "Failed": _RED, "Rejected": _RED, "FAIL": _RED,
    "Progressing": _YELLOW, "Pending": _YELLOW, "Running": _YELLOW, "Paused": _YELLOW, "Inconclusive": _YELLOW,
    "skipped": _DIM,
}
"""Words that carry a verdict, and their color on a TTY; everything else stays plain."""


# --- status --------------------------------------------------------------------------------------


def render_status(body: Mapping[str, Any], now: datetime, *, color: bool = False) -> str:
    """Everything `kubectl dspy status NAME` shows, section by section; a section with
    nothing to say (no rollout, no experiment, no shadow) is left out rather than printed empty."""
    spec, status = body.get("spec") or {}, body.get("status") or {}
    plan, state = Plan.from_spec(spec), RolloutState.from_status(status)
    name = str((body.get("metadata") or {}).get("name", ""))
    paint = _painter(color)
    sections = [
        _overview(body, plan, state, now, paint),
        _rollout(name, plan, state, now),
        _analysis(plan, state, now, paint),
        _evaluation(plan, state, paint),
        _experiment(status.get("experiment"), now),
        _shadow(status.get("shadow"), now),
        _conditions(status.get("conditions") or [], now),
        _last_request(state.last_request, now, paint),
    ]
    return "\n\n".join("\n".join(lines) for lines in sections if lines) + "\n"


def _overview(body: Mapping[str, Any], plan: Plan, state: RolloutState, now: datetime,
              paint: Callable[[str], str]) -> list[str]:
    metadata, spec, status = body.get("metadata") or {}, body.get("spec") or {}, body.get("status") or {}
    phase = status.get("phase")
    phase_text = paint(phase) if phase else "Unknown (the operator has not reported yet)"
    if spec.get("paused"):
        phase_text += " (spec.paused)"
    lines = [
        _kv("Name", metadata.get("name", "")),
        _kv("Namespace", metadata.get("namespace", "")),
        _kv("Phase", phase_text),
        _kv("Ready", status.get("readySummary") or "-"),
        _kv("Strategy", plan.strategy),
    ]
    served = dict(state.served())
    if plan.strategy == "BlueGreen":
        lines.append(_kv("Stable", f"{state.stable}  active" if state.stable else "-"))
        if state.canary:
            lines.append(_kv("Preview", f"{state.canary}  {_preview_stage(state)}"))
    else:
        lines.append(_kv("Stable", f"{state.stable}  {served[state.stable]}%" if state.stable else "-"))
        if state.canary:
            lines.append(_kv("Canary", f"{state.canary}  {state.weight}%"))
    if state.aborted:
        lines.append(_kv("Aborted", f"{state.aborted}  held at 0% until the spec changes or a retry"))
    routing = status.get("routing") or {}
    if routing:
        served_by = f", served by {routing['servedBy']} pods" if routing.get("servedBy") else ""
        lines.append(_kv("Routing", f"serial {routing.get('serial', '-')}{served_by}"))
    if plan.strategy == "BlueGreen" and state.colors:
        lines.append(_kv("Colors", _colors(state, now)))
    degradation = status.get("degradation") or {}
    if degradation:
        lines.append(_kv("Degradation", f"{degradation.get('level', '-')}: {degradation.get('message', '')}"))
    return lines


def _preview_stage(state: RolloutState) -> str:
    if state.switching:
        return "scaling to the active count, then the switch"
    return "ready behind the preview Service" if state.preview_ready else "starting"


def _colors(state: RolloutState, now: datetime) -> str:
    """`blue 3f9a0c1d2e4b (active), green 77aa01bc9e0f (preview, ready for 2m)` and the scale-down."""
    parts = []
    for color, revision in sorted(state.colors.items()):
        role = ("active" if color == state.active_color else "preview" if color == state.preview_color
                else "previous")
        if color == state.preview_color and state.preview_ready:
            ready = parse_time(state.preview_ready)
            role += f", ready for {duration(now - ready)}" if ready else ""
        parts.append(f"{color or 'single Deployment'} {revision} ({role})")
    text = ", ".join(parts)
    going = parse_time(state.scale_down)
    if going is not None:
        text += f"; the previous color goes in {duration(max(going - now, timedelta(0)))} (undo switches back until then)"
    return text


def _rollout(name: str, plan: Plan, state: RolloutState, now: datetime) -> list[str]:
    if plan.strategy != "Canary":
        return []
    if not state.canary:
        lines = [_kv("Rollout", "no canary in progress")]
        if state.aborted:
            lines.append(_kv("", f"`kubectl dspy retry {name}` rolls {state.aborted} out again"))
        return lines
    lines = [_kv("Rollout", progress(plan.steps, state.step))]
    started = parse_time(state.step_started)
    if state.step < len(plan.steps) and started is not None:
        lines.append(_kv("", _step_clock(name, plan, plan.steps[state.step], state, started, now)))
    if state.paused:
        lines.append(_kv("", f"held: {state.pause_reason or 'paused'}; `kubectl dspy resume {name}` continues"))
    return lines


def progress(steps: Sequence[Step], current: int) -> str:
    """`[##########----------] step 2/4 setWeight 50`: the bar fills with the steps reached, so
    it agrees with the 1-based label; past the last step it is full and says what is left.

    >>> progress((Step(weight=10), Step(pause_seconds=60), Step(weight=50), Step(pause_seconds=None)), 2)
    '[###############-----] step 3/4 setWeight 50'
    """
    total = len(steps)
    if total == 0:
        return "no steps"
    reached = min(current + 1, total)
    filled = round(BAR_WIDTH * reached / total)
    bar = "[" + "#" * filled + "-" * (BAR_WIDTH - filled) + "]"
    if current >= total:
        return f"{bar} all {total} steps done, promoting after a passing analysis"
    return f"{bar} step {reached}/{total} {_describe(steps[current])}"


def _describe(step: Step) -> str:
    if not step.is_pause:
        return f"setWeight {step.weight}"
    return f"pause {duration(timedelta(seconds=step.pause_seconds))}" if step.pause_seconds is not None \
        else "pause until promoted"


def _step_clock(name: str, plan: Plan, step: Step, state: RolloutState, started: datetime, now: datetime) -> str:
    """The countdown of a timed pause (the operator's rule: it ends when its seconds are up and,
    with analysis, a Pass was measured after it began), or how long the step has run."""
    if not step.is_pause:
        return f"since {duration(now - started)}"
    if step.pause_seconds is None:
        return f"waiting for `kubectl dspy promote {name}` (since {duration(now - started)})"
    end = started + timedelta(seconds=step.pause_seconds)
    if now < end:
        return f"{duration(end - now)} left (until {end.strftime('%H:%M:%SZ')})"
    passed = parse_time((state.last_analysis or {}).get("passedAt"))
    if plan.analysis is not None and (passed is None or passed <= started):
        return "time is up; the next step waits for a passing analysis"
    return "time is up; the next step comes on the operator's next pass"


def _analysis(plan: Plan, state: RolloutState, now: datetime, paint: Callable[[str], str]) -> list[str]:
    last = state.last_analysis or {}
    if not last:
        if plan.strategy == "Canary" and state.canary:
            every = f"every {duration(timedelta(seconds=plan.interval_seconds))} once the canary takes traffic"
            return [_kv("Analysis", f"none yet ({every})" if plan.analysis is not None
                         else "not configured: steps advance on time alone")]
        return []
    when = parse_time(last.get("time"))
    verdict = paint(str(last.get("verdict") or "-"))
    ago = f" {duration(now - when)} ago ({when.strftime('%H:%M:%SZ')})" if when else ""
    requests = f": {count(last.get('requests'))} canary requests" if last.get("requests") is not None else ""
    lines = [_kv("Analysis", f"{verdict}{ago}{requests}")]
    if last.get("message"):
        lines.append(_kv("", str(last["message"])))
    measurements = last.get("measurements") or []
    if measurements:
        rows = [_measurement_row(measurement) for measurement in measurements]
        lines += table(("MEASUREMENT", "VALUE", "LIMIT", "RESULT", "NOTE"), rows, align="lrrll",
                       paint={3: paint})
    lines.append(f"{INDENT}failures {last.get('failures', 0)} (limit {plan.failure_limit}), "
                 f"inconclusive in a row {last.get('inconclusive', 0)} (limit {plan.inconclusive_limit})")
    figures = _figure_rows(state, last)
    if figures:
        lines += ["", *table(("REVISION", "ROLE", "REQUESTS", "ERRORS", "ERROR RATE", "P95", "COST/REQ", "CACHE HIT"),
                             figures, align="llrrrrrr")]
    return lines


def _measurement_row(measurement: Mapping[str, Any]) -> list[str]:
    """One judged figure: a skipped one carries `skipped` (the reason) and no `passed`; a counted
    relative one may carry `detail` (both sides of the ratio)."""
    name = str(measurement.get("name", "?"))
    passed = measurement.get("passed")
    result = "skipped" if passed is None else ("pass" if passed else "FAIL")
    note = measurement.get("skipped") or measurement.get("detail") or ""
    threshold = measurement.get("threshold")
    limit = f"{'>=' if name.startswith('min') else '<='} {figure(name, threshold)}" if threshold is not None else "-"
    return [name, figure(name, measurement.get("value")), limit, result, str(note)]


def _figure_rows(state: RolloutState, last: Mapping[str, Any]) -> list[list[str]]:
    """Per-revision figures of the interval. The canary row keeps its name after an abort
    (canaryRevision is cleared then; the analysis names what it measured)."""
    canary = str(last.get("revision") or state.canary or state.aborted or "-")
    rows = []
    for role, revision in (("canary", canary), ("stable", state.stable or "-")):
        window = last.get(role)
        if window:
            rows.append([revision, role, count(window.get("requests")), count(window.get("errors")),
                         percent(window.get("errorRate")), seconds(window.get("p95LatencySeconds")),
                         usd(window.get("costPerRequestUsd")), percent(window.get("cacheHitRatio"))])
    return rows


def _evaluation(plan: Plan, state: RolloutState, paint: Callable[[str], str]) -> list[str]:
    evaluation = state.evaluation or {}
    if not evaluation:
        if plan.gate is not None and state.canary:
            return [_kv("Evaluation", "not requested yet")]
        return []
    gate = plan.gate
    about = [gate.metric] if gate else []
    if evaluation.get("revision"):
        about.append(f"of {evaluation['revision']}")
    if evaluation.get("runner"):
        about.append(f"run by {evaluation['runner']}")
    header = paint(str(evaluation.get("state") or "-")) + (f" ({', '.join(about)})" if about else "")
    lines = [_kv("Evaluation", header)]
    scores = evaluation.get("scores") or {}
    canary, stable = scores.get("canary"), scores.get("stable")
    rows = []
    if canary is not None:
        limit = f">= {gate.min_score:.2f} (minScore)" if gate and gate.min_score is not None else ""
        rows.append(["canary", f"{canary:.3f}", limit])
    if stable is not None:
        rows.append(["stable", f"{stable:.3f}", ""])
    if canary is not None and stable is not None:
        limit = f"<= {gate.max_regression:.2f} (maxRegression)" if gate and gate.max_regression is not None else ""
        rows.append(["drop", f"{stable - canary:.3f}", limit])
    if rows:
        lines += table(("SCORE", "VALUE", "LIMIT"), rows, align="lrl")
    if evaluation.get("message"):
        lines.append(INDENT + str(evaluation["message"]))
    return lines


def _experiment(experiment: Mapping[str, Any] | None, now: datetime) -> list[str]:
    variants = (experiment or {}).get("variants") or []
    if not variants:
        return []
    window = experiment.get("window") or {}
    start, end = parse_time(window.get("start")), parse_time(window.get("end"))
    span = f"{start.strftime('%H:%M:%SZ')} to {end.strftime('%H:%M:%SZ')} ({duration(end - start)}, " \
           f"ended {duration(now - end)} ago)" if start and end else "-"
    test = f", {experiment['test']} against the first variant" if experiment.get("test") else ""
    rows = [_variant_row(index, variant) for index, variant in enumerate(variants)]
    header = ("VARIANT", "REQUESTS", "SUCCESS (95% CI)", "P95", "COST/REQ", "CACHE HIT", "P-VALUE", "SIGNIFICANT",
              "SAMPLES/ARM")
    return [_kv("Experiment", f"window {span}{test}"), *table(header, rows, align="lrrrrrrlr")]


def _variant_row(index: int, variant: Mapping[str, Any]) -> list[str]:
    """A variant's figures; the baseline has no comparison, and `SAMPLES/ARM` is what a
    difference not yet significant would need per variant at 80% power."""
    success = percent(variant.get("successRate"))
    interval = variant.get("successRateCI") or []
    if len(interval) == 2:
        success += f" ({interval[0] * 100:.1f}-{interval[1] * 100:.1f})"
    versus = variant.get("vsBaseline") or {}
    if index == 0:
        p_value, significant, needed = "baseline", "", ""
    else:
        p_value = p_text(versus.get("pValue"))
        significant = "yes" if versus.get("significant") else "no" if versus else "-"
        needed = count(versus.get("samplesNeededPerArm"))
    return [str(variant.get("name", "?")), count(variant.get("requests")), success,
            seconds(variant.get("p95LatencySeconds")), usd(variant.get("costPerRequestUsd")),
            percent(variant.get("cacheHitRatio")), p_value, significant, needed]


def _shadow(shadow: Mapping[str, Any] | None, now: datetime) -> list[str]:
    """status.shadow: per shadow target, how often its answers agreed with the live ones (95% Wilson
    interval), its failures, its p95 beside the p95 of the live requests it copied, cost, drops."""
    if not shadow:
        return []
    updated = parse_time(shadow.get("updated"))
    when = f", updated {duration(now - updated)} ago" if updated else ""
    header = _kv("Shadow", f"window {shadow.get('window', '-')}{when}")
    targets = shadow.get("targets") or []
    if not targets:
        return [header, f"{INDENT}no copies compared yet"]
    rows = []
    for target in targets:
        agreement = percent(target.get("agreementRate"))
        interval = target.get("agreementCI") or []
        if len(interval) == 2:
            agreement += f" ({interval[0] * 100:.1f}-{interval[1] * 100:.1f})"
        rows.append([f"{target.get('revision', '?')}/{target.get('variant', '?')}", count(target.get("requests")),
                     agreement, percent(target.get("errorRate")), seconds(target.get("p95LatencySeconds")),
                     seconds(target.get("liveP95LatencySeconds")), usd(target.get("costPerRequestUsd")),
                     count(target.get("dropped"))])
    header_row = ("TARGET", "COMPARED", "AGREEMENT (95% CI)", "ERRORS", "P95 SHADOW", "P95 LIVE", "COST/REQ", "DROPPED")
    return [header, *table(header_row, rows, align="lrrrrrrr")]


def _conditions(conditions: Sequence[Mapping[str, Any]], now: datetime) -> list[str]:
    if not conditions:
        return []
    rows = []
    for condition in conditions:
        since = parse_time(condition.get("lastTransitionTime"))
        rows.append([str(condition.get("type", "")), str(condition.get("status", "")), str(condition.get("reason", "")),
                     duration(now - since) if since else "-", str(condition.get("message", ""))])
    return [_kv("Conditions", ""), *table(("TYPE", "STATUS", "REASON", "AGE", "MESSAGE"), rows, align="lllrl")]


def _last_request(last: Mapping[str, Any] | None, now: datetime, paint: Callable[[str], str]) -> list[str]:
    if not last:
        return []
    answered = parse_time(last.get("time"))
    ago = f" {duration(now - answered)} ago" if answered else ""
    request_id = str(last.get("id", ""))[:8]
    return [_kv("Last request", f"{last.get('action', '?')} ({request_id}) {paint(str(last.get('result', '?')))}{ago}: "
                                f"{last.get('message', '')}")]


# --- history -------------------------------------------------------------------------------------


def render_history(body: Mapping[str, Any], now: datetime) -> str:
    """status.history newest first (how each rollout ended: promoted, aborted, rolled back), with
    the revision in progress (canary or preview) or held on top, since neither has ended, and the
    stable one and the one `undo` would return to marked."""
    state = RolloutState.from_status(body.get("status") or {})
    undo_target = state.undo_target()
    rows = []
    if state.canary:
        where = f"preview ({state.preview_color})" if state.preview_color else f"canary ({state.weight}%)"
        rows.append([state.canary, "InProgress", "-", "-", where])
    if state.aborted and state.aborted != state.canary:
        rows.append([state.aborted, "Held", "-", "-", "retry or a new spec rolls it out"])
    marked: set[str] = set()
    for entry in state.history:
        revision = str(entry.get("revision", ""))
        when = parse_time(entry.get("time"))
        mark = ""
        if revision not in marked and entry.get("outcome") == "Promoted":
            mark = "stable" if revision == state.stable else "undo returns here" if revision == undo_target else ""
            if mark:
                marked.add(revision)
        rows.append([revision, str(entry.get("outcome", "-")), str(entry.get("time", "-")),
                     duration(now - when) if when else "-", mark])
    if not rows:
        return "no revision has been rolled out yet\n"
    return "\n".join(table(("REVISION", "OUTCOME", "WHEN", "AGE", ""), rows, align="lllrl", indent="")) + "\n"


# --- building blocks -----------------------------------------------------------------------------


def table(header: Sequence[str], rows: Sequence[Sequence[str]], *, align: str = "", indent: str = INDENT,
          paint: Mapping[int, Callable[[str], str]] | None = None) -> list[str]:
    """Aligned columns: `align` has one `l` or `r` per column (left when missing), `paint` colors
    cells of the given columns after padding, so escape codes never shift a column."""
    widths = [max(len(str(row[column])) for row in (header, *rows)) for column in range(len(header))]
    lines = []
    for number, row in enumerate((header, *rows)):
        cells = []
        for column, cell in enumerate(row):
            last = column == len(row) - 1
            right = column < len(align) and align[column] == "r"
            text = cell.rjust(widths[column]) if right else cell if last else cell.ljust(widths[column])
            if number and paint and column in paint:
                text = paint[column](text)
            cells.append(text)
        lines.append((indent + "  ".join(cells)).rstrip())
    return lines


def _kv(key: str, value: str) -> str:
    label = f"{key}:" if key else ""
    return f"{label:<{KEY_WIDTH}}{value}".rstrip()


def _painter(color: bool) -> Callable[[str], str]:
    """Colors a verdict word (compared stripped); identity without color."""
    def paint(text: str) -> str:
        word = text.strip()
        tone = _TONES.get(word) if color else None
        if not tone:
            return text
        start = text.index(word)  # padding stays outside the escape codes, so lines still rstrip
        return f"{text[:start]}\x1b[{tone}m{word}\x1b[0m{text[start + len(word):]}"
    return paint


def duration(delta: timedelta) -> str:
    """`45s`, `2m14s`, `3h05m`, `2d4h`: kubectl's age style, never negative (clock skew)."""
    total = max(int(delta.total_seconds()), 0)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def figure(name: str, value: Any) -> str:
    """A measurement in its unit, told by its name: `...Ratio` relative (x), latency in time,
    `errorRate` in percent, cost in dollars."""
    if value is None:
        return "-"
    if name.endswith("Ratio") and name != "cacheHitRatio":
        return f"{value:.2f}x"
    if "Latency" in name or name.endswith("Seconds"):
        return seconds(value)
    if name.endswith("Rate") or name == "cacheHitRatio":
        return percent(value)
    if "Cost" in name or name.endswith("Usd"):
        return usd(value)
    return f"{value:g}"


def percent(value: Any) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def seconds(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value * 1000:.0f}ms" if value < 1 else f"{value:.2f}s"


def usd(value: Any) -> str:
    """Three significant digits without an exponent: per-request LM costs are tiny."""
    if value is None:
        return "-"
    if value == 0:
        return "$0"
    decimals = min(max(2, 2 - math.floor(math.log10(abs(value)))), 10)
    return f"${value:.{decimals}f}"


def count(value: Any) -> str:
    return "-" if value is None else f"{int(value):,}"


def p_text(value: Any) -> str:
    if value is None:
        return "-"
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def answer_text(name: str, answer: Mapping[str, Any]) -> str:
    """The operator's answer to one request, in one line."""
    return f"{name}: {answer.get('action', '?')} {str(answer.get('result', '?')).lower()}: {answer.get('message', '')}"
