"""Startup: kopf settings and the shared context (settings + API client) in memo."""

from __future__ import annotations

import logging
from typing import Any

import kopf

from dspy_operator import api
from dspy_operator.handlers.context import Context, from_memo
from dspy_operator.handlers.serialize import Serializer
from dspy_operator.kube import KubeClient, load_api_client
from dspy_operator.metrics import OperatorMetrics
from dspy_operator.observe import EXPERIMENT_REFRESH_SECONDS, RedisAddresses, Throttle
from dspy_operator.reconcile.inputs import RecentReads
from dspy_operator.runtimebus import RuntimeBuses
from dspy_operator.settings import OperatorSettings

# (group/version, plural) of every child kind: watched for deletions and hand edits, and indexed.
CHILD_RESOURCES: tuple[tuple[str, str], ...] = (
    ("apps/v1", "deployments"),
    ("v1", "services"),
    ("v1", "configmaps"),
    ("v1", "secrets"),
    ("autoscaling/v2", "horizontalpodautoscalers"),
    ("policy/v1", "poddisruptionbudgets"),
    ("networking.k8s.io/v1", "networkpolicies"),
)
MANAGED_SELECTOR = f"{api.LABEL_MANAGED_BY}={api.MANAGED_BY}"


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, logger: logging.Logger, **_: Any) -> None:
    """Keep kopf's bookkeeping in annotations (status is ours alone), post only our own Events,
    and watch children server-side filtered to the ones this operator manages."""
    operator_settings = OperatorSettings.from_env()
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=api.GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=api.GROUP)
    settings.persistence.finalizer = f"{api.GROUP}/finalizer"
    # Events only from explicit kopf.info/warn calls; log lines ("Timer succeeded") never become Events.
    settings.posting.loggers = False
    settings.posting.level = logging.INFO
    settings.posting.reporting_component = api.MANAGED_BY
    # Long watches, renewed by the server before idle proxies cut them.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 30
    settings.networking.request_timeout = 60
    for group_version, plural in CHILD_RESOURCES:
        settings.watching.label_selectors[group_version, plural] = MANAGED_SELECTOR
    # No cluster-wide watch of CRDs and Namespaces: namespaces are listed by exact name and the
    # CRD exists before the operator starts (checked below), so those watches would only need
    # RBAC the chart does not grant (kopf meets a 403 and warns otherwise).
    settings.scanning.disabled = True
    metrics = OperatorMetrics()
    kube = KubeClient(load_api_client(), metrics)
    require_crd(kube)
    # After the CRD check: kopf retries a startup handler that raised, and the port binds once.
    if operator_settings.metrics_port:
        try:
            metrics.serve(operator_settings.metrics_port)
        except OSError as error:
            raise kopf.PermanentError(
                f"cannot serve metrics on port {operator_settings.metrics_port} ({error}): set "
                "DSPY_OPERATOR_METRICS_PORT to a free port, or 0 to turn the exporter off") from error
    memo.context = Context(
        settings=operator_settings, kube=kube, references=RecentReads(kube.get), redis=RedisAddresses(kube.get),
        buses=RuntimeBuses(), serializer=Serializer(), experiments=Throttle(EXPERIMENT_REFRESH_SECONDS),
        shadows=Throttle(EXPERIMENT_REFRESH_SECONDS), metrics=metrics,
    )
    logger.info(
        "dspy-operator: namespaces=%s runtime image=%s metrics=%s",
        ",".join(operator_settings.namespaces) or "<all>", operator_settings.runtime_image,
        f":{operator_settings.metrics_port}/metrics" if operator_settings.metrics_port else "off",
    )


CRD_RETRY_SECONDS = 10.0


def require_crd(kube: KubeClient) -> None:
    """Wait (by retrying startup) until the API serves DSPyDeployments: with scanning disabled,
    kopf would otherwise never notice a CRD created after it started, and would serve nothing.
    A discovery read, which RBAC allows every authenticated user."""
    if api.PLURAL not in kube.served_resources(api.API_VERSION):
        raise kopf.TemporaryError(
            f"the API does not serve {api.PLURAL}.{api.GROUP} ({api.API_VERSION}): install the CRD first "
            f"(kubectl apply --server-side -f crds/{api.GROUP}_{api.PLURAL}.yaml)", delay=CRD_RETRY_SECONDS)


@kopf.on.cleanup()
def close_connections(memo: kopf.Memo, **_: Any) -> None:
    """Close the Redis pools and the metrics exporter on shutdown."""
    from_memo(memo).buses.close()
    from_memo(memo).metrics.close()
