"""The hand-over of spec.replicas to the HPA: when it is needed, and what it writes."""

from __future__ import annotations

from dspy_operator.reconcile.handover import handover_manager, replicas_handover


def deployment(name: str = "qa", replicas: int | None = None) -> dict:
    spec = {"template": {}} if replicas is None else {"replicas": replicas, "template": {}}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": "ns"}, "spec": spec}


def hpa(target: str) -> dict:
    return {"kind": "HorizontalPodAutoscaler", "metadata": {"name": "qa"},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target}}}


def test_turning_autoscaling_on_keeps_the_live_count_under_another_manager():
    handover = replicas_handover(deployment(), {"Deployment/qa": deployment(replicas=5)})
    assert handover == {"apiVersion": "apps/v1", "kind": "Deployment",
                        "metadata": {"name": "qa", "namespace": "ns"}, "spec": {"replicas": 5}}
    assert handover_manager("dspy-operator") == "dspy-operator-handover"


def test_no_hand_over_once_the_hpa_targets_the_deployment():
    observed = {"Deployment/qa": deployment(replicas=5), "HorizontalPodAutoscaler/qa": hpa("qa")}
    assert replicas_handover(deployment(), observed) is None


def test_a_blue_green_switch_hands_over_the_color_the_hpa_moves_to():
    observed = {"Deployment/qa-green": deployment("qa-green", replicas=4), "HorizontalPodAutoscaler/qa": hpa("qa-blue")}
    assert replicas_handover(deployment("qa-green"), observed)["spec"] == {"replicas": 4}


def test_nothing_to_hand_over_for_a_count_a_new_deployment_or_another_kind():
    assert replicas_handover(deployment(replicas=3), {"Deployment/qa": deployment(replicas=5)}) is None
    assert replicas_handover(deployment(), {}) is None
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "qa", "namespace": "ns"}, "spec": {}}
    assert replicas_handover(service, {"Service/qa": service}) is None
