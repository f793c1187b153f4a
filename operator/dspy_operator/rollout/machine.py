"""The rollout decision of one pass, by strategy: `canary.decide` for RollingUpdate and
Canary, `bluegreen.decide` for BlueGreen (both pure, both resumable from status alone)."""

from __future__ import annotations

from dspy_operator.rollout import bluegreen, canary
from dspy_operator.rollout.canary import Observations
from dspy_operator.rollout.state import Decision, Plan, RolloutState


def decide(plan: Plan, state: RolloutState, obs: Observations) -> Decision:
    if plan.strategy == "BlueGreen":
        return bluegreen.decide(plan, state, obs)
    return canary.decide(plan, state, obs)
