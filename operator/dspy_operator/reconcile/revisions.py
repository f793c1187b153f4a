"""Revisions: the part of a spec that one runtime pod can serve side by side with another (pure).

A revision is what a canary rolls out: the program (signature, module, saved program),
the LM settings (model, apiBase, temperature, maxTokens, timeoutSeconds, pricing) and the
variants (a shadow variant's entry carries `shadow: true`). It is written down as the
routing-table entries the runtime serves, saved programs inline, and named by the hash of
that text, so equal content is one revision however the spec was spelled. Everything else in the spec (image, resources, env, Secrets,
fallbacks, cache, breaker, limits, budget, scheduling) is pod-level: the runtime reads it
from its environment, and a change of it replaces pods (see `desired.pod_template_hash`).

Under BlueGreen a revision is deployment-level: it also holds the rendered runtime pod
template (`pod`, without what belongs to a color), so each color's Deployment runs the
template of its own revision, however the spec has moved on, and every change of the spec
(program or pods) is a new revision that goes through the preview color.

Each live revision is kept as an immutable, content-named ConfigMap
`<name>-rev-<revision>` (the role a ControllerRevision plays for a StatefulSet), so the
operator can still route to the stable revision, roll back to it and prune it, after the
spec has moved on.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dspy_operator import api
from dspy_operator.reconcile.common import Obj, Owner, canonical_hash, metadata, section
from dspy_operator.reconcile.inputs import Inputs

REVISION_KEY = "revision.json"
POD_KEY = "pod.json"
# lm fields a variant entry carries (the runtime's routing-table names); the key is by env name.
_LM_FIELDS = ("model", "apiBase", "temperature", "maxTokens", "timeoutSeconds", "pricing")


@dataclass(frozen=True, slots=True)
class Revision:
    """One servable revision: its name and the variants it serves, as the runtime reads them."""

    name: str
    variants: tuple[Obj, ...]
    pod: Obj | None = None
    """The runtime pod template of a BlueGreen revision (None: the pods are the spec's)."""

    def definition(self) -> Obj:
        return {"variants": list(self.variants)}


def _name(variants: tuple[Obj, ...], pod: Obj | None) -> str:
    content: Obj = {"variants": variants} if pod is None else {"variants": variants, "pod": pod}
    return canonical_hash(content)[: api.REVISION_LENGTH]


def revision_of(spec: Mapping[str, Any], inputs: Inputs, pod: Obj | None = None) -> Revision:
    """The revision the spec asks for (with `pod`: the BlueGreen revision running that pod
    template). Defaults come from the CRD schema; a field the spec leaves unset stays unset,
    and the runtime's own default applies."""
    variants = spec.get("variants") or [{"name": "default", "weight": 100}]
    entries = tuple(_variant_entry(spec, inputs, index, variant) for index, variant in enumerate(variants))
    return Revision(name=_name(entries, pod), variants=entries, pod=pod)


def _variant_entry(spec: Mapping[str, Any], inputs: Inputs, index: int, variant: Mapping[str, Any]) -> Obj:
    base_program, base_lm = section(spec, "program"), section(spec, "lm")
    override = variant.get("program") or {}
    # A variant with a program override takes only the override's saved program: saved
    # state fits the module it was saved from (the CRD says the same).
    saved_path = f"spec.variants[{index}].program" if override else "spec.program"
    program: Obj = {"signature": base_program.get("signature"), "module": override.get("module") or base_program.get("module")}
    saved = inputs.programs.get(saved_path)
    if saved is not None:
        program["state"] = json.loads(saved.content)
    lm_override = variant.get("lm") or {}
    lm: Obj = {}
    for key in _LM_FIELDS:
        value = lm_override.get(key, base_lm.get(key)) if key != "pricing" else _pricing(base_lm, lm_override)
        if value is not None:
            lm[key] = value
    if lm_override.get("apiKeySecretRef"):
        lm["apiKeyEnv"] = api.variant_key_env(variant["name"])
    elif base_lm.get("apiKeySecretRef"):
        lm["apiKeyEnv"] = api.LM_API_KEY_ENV
    entry: Obj = {
        "name": variant["name"],
        "weight": variant.get("weight", 0),
        "program": {key: value for key, value in program.items() if value is not None},
        "lm": lm,
    }
    if variant.get("shadow"):  # only when true: the entries (and names) of other revisions stay as they were
        entry["shadow"] = True
    return entry


def _pricing(base_lm: Mapping[str, Any], override: Mapping[str, Any]) -> Any:
    """A variant on another model has that model's price, never the base model's."""
    if override.get("pricing") is not None:
        return override["pricing"]
    same_model = override.get("model") in (None, base_lm.get("model"))
    return base_lm.get("pricing") if same_model else None


def _text(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def revision_configmap(owner: Owner, revision: Revision) -> Obj:
    data = {REVISION_KEY: _text(revision.definition())}
    if revision.pod is not None:
        data[POD_KEY] = _text(revision.pod)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(owner, api.revision_name(owner.name, revision.name), api.COMPONENT_REVISION,
                             annotations={api.ANNOTATION_REVISION: revision.name}),
        "immutable": True,
        "data": data,
    }


def revision_from_configmap(configmap: Mapping[str, Any]) -> Revision | None:
    """The revision a live revision ConfigMap holds; None when it is not one (or was edited)."""
    name = ((configmap.get("metadata") or {}).get("annotations") or {}).get(api.ANNOTATION_REVISION)
    data = configmap.get("data") or {}
    text = data.get(REVISION_KEY)
    if not name or not text:
        return None
    try:
        variants = tuple(json.loads(text)["variants"])
        pod = json.loads(data[POD_KEY]) if POD_KEY in data else None
    except (ValueError, KeyError, TypeError):
        return None
    # Immutable, but a copy recreated by hand with other content must not be served under this name.
    return Revision(name=name, variants=variants, pod=pod) if _name(variants, pod) == name else None


def known_revisions(owner: Owner, observed: Mapping[str, Mapping[str, Any]]) -> dict[str, Revision]:
    """Every revision kept in this resource's revision ConfigMaps, by name."""
    found: dict[str, Revision] = {}
    prefix = f"ConfigMap/{api.revision_name(owner.name, '')}"
    for key, live in observed.items():
        if key.startswith(prefix):
            revision = revision_from_configmap(live)
            if revision is not None:
                found[revision.name] = revision
    return found
