"""Run a Deployment's container as a local process, with exactly the pod's command and environment.

The local control plane fakes its kubelets (kwok): pods become Ready but nothing
runs in them. To exercise the operator -> runtime contract for real, the demo
reads the runtime Deployment the operator wrote and starts its container here:

* env: literal values with Kubernetes' `$(VAR)` expansion, `secretKeyRef`,
  `configMapKeyRef`, `fieldRef` (pod name/namespace) and `envFrom`;
* volumes: ConfigMap, Secret, projected and emptyDir volumes are written under a temporary
  directory, and every mount path in env values and in those files is rewritten
  to it (a pod's `/etc/dspy/programs` becomes `<tmp>/etc/dspy/programs`);
* command: the container's `command`/`args`, or the image's entrypoint given
  with `--entrypoint` (the runtime image's is `dspy-runtime`).

Only `HOST` and `PORT` are overridden, so the process listens on loopback, and `HOSTNAME` is
set to the pod's name, as in a pod.
Usage: run_pod_locally.py --namespace NS --deployment NAME [--container C] --port P [--pod-name N] --entrypoint CMD
"""

from __future__ import annotations

import argparse
import base64
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

from kubernetes import client, config

_VAR_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes' dependent-variable expansion: `$(VAR)` if defined earlier, `$$` escapes."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env.get(name, match.group(0))

    return _VAR_REF.sub(replace, value)


class Resolver:
    """Reads the Secrets and ConfigMaps a pod refers to, once each."""

    def __init__(self, core: client.CoreV1Api, namespace: str) -> None:
        self.core = core
        self.namespace = namespace
        self._cache: dict[tuple[str, str], dict[str, str]] = {}

    def data(self, kind: str, name: str) -> dict[str, str]:
        if (kind, name) not in self._cache:
            if kind == "Secret":
                raw = self.core.read_namespaced_secret(name, self.namespace).data or {}
                self._cache[(kind, name)] = {k: base64.b64decode(v).decode() for k, v in raw.items()}
            else:
                self._cache[(kind, name)] = dict(self.core.read_namespaced_config_map(name, self.namespace).data or {})
        return self._cache[(kind, name)]


def resolve_env(container: dict[str, Any], resolver: Resolver, pod_name: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        ref = source.get("configMapRef") or source.get("secretRef")
        kind = "ConfigMap" if source.get("configMapRef") else "Secret"
        env.update({source.get("prefix", "") + k: v for k, v in resolver.data(kind, ref["name"]).items()})
    for item in container.get("env") or []:
        if "value" in item:
            env[item["name"]] = expand(item.get("value") or "", env)
            continue
        source = item["valueFrom"]
        if "secretKeyRef" in source or "configMapKeyRef" in source:
            kind = "Secret" if "secretKeyRef" in source else "ConfigMap"
            ref = source.get("secretKeyRef") or source.get("configMapKeyRef")
            data = resolver.data(kind, ref["name"])
            if ref["key"] in data:
                env[item["name"]] = data[ref["key"]]
            elif not ref.get("optional"):
                raise SystemExit(f"env {item['name']}: key {ref['key']!r} not in {kind} {ref['name']!r}")
        elif "fieldRef" in source:
            path = source["fieldRef"]["fieldPath"]
            env[item["name"]] = {"metadata.name": pod_name, "metadata.namespace": resolver.namespace}.get(path, "127.0.0.1")
    return env


def materialize_volumes(pod: dict[str, Any], container: dict[str, Any], resolver: Resolver, root: Path) -> dict[str, str]:
    """Write the container's mounted volumes under root; returns mountPath -> local path."""
    volumes = {v["name"]: v for v in pod.get("volumes") or []}
    mounts: dict[str, str] = {}
    for mount in container.get("volumeMounts") or []:
        local = root / mount["mountPath"].lstrip("/")
        volume = volumes[mount["name"]]
        # A projected volume is several ConfigMap/Secret sources merged into one directory.
        sources = [s for s in (volume.get("projected") or {}).get("sources") or [] if "configMap" in s or "secret" in s]
        if "configMap" in volume or "secret" in volume:
            sources = [volume]
        if sources:
            files: dict[str, str] = {}
            for entry in sources:
                kind = "ConfigMap" if "configMap" in entry else "Secret"
                source = entry.get("configMap") or entry.get("secret")
                data = resolver.data(kind, source.get("name") or source.get("secretName"))
                items = source.get("items") or [{"key": k, "path": k} for k in data]
                files.update({item["path"]: data[item["key"]] for item in items})
            if mount.get("subPath"):
                local.parent.mkdir(parents=True, exist_ok=True)
                local.write_text(files[mount["subPath"]])
            else:
                for rel, text in files.items():
                    (local / rel).parent.mkdir(parents=True, exist_ok=True)
                    (local / rel).write_text(text)
        else:  # emptyDir and anything else: an empty directory
            local.mkdir(parents=True, exist_ok=True)
        mounts[mount["mountPath"]] = str(local)
    return mounts


def rewrite_paths(text: str, mounts: dict[str, str]) -> str:
    """Point every mount path in text at its local copy, in one pass.

    One pass matters: the local copies live under /tmp, so a pod that also mounts
    /tmp must not have its already-rewritten paths rewritten again.
    """
    if not mounts:
        return text
    alternatives = "|".join(re.escape(path) for path in sorted(mounts, key=len, reverse=True))
    pattern = re.compile(rf"(?<![\w./-])({alternatives})(?=/|$|[^\w.-])")
    return pattern.sub(lambda match: mounts[match.group(1)], text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--deployment", required=True)
    parser.add_argument("--container", default=None)
    parser.add_argument("--port", required=True)
    parser.add_argument("--pod-name", default=None, help="the pod's name (HOSTNAME, metadata.name); default <deployment>-local")
    parser.add_argument("--entrypoint", required=True, help="the image's ENTRYPOINT, as a local command")
    parser.add_argument("--print-env", action="store_true", help="print the resolved environment names and exit")
    args = parser.parse_args()

    config.load_kube_config()
    api = client.ApiClient()
    deployment = api.sanitize_for_serialization(
        client.AppsV1Api(api).read_namespaced_deployment(args.deployment, args.namespace))
    pod = deployment["spec"]["template"]["spec"]
    containers = {c["name"]: c for c in pod["containers"]}
    container = containers[args.container] if args.container else pod["containers"][0]
    resolver = Resolver(client.CoreV1Api(api), args.namespace)

    root = Path(tempfile.mkdtemp(prefix=f"pod-{args.deployment}-"))
    mounts = materialize_volumes(pod, container, resolver, root)
    for path in root.rglob("*"):
        if path.is_file():
            path.write_text(rewrite_paths(path.read_text(), mounts))
    pod_name = args.pod_name or f"{args.deployment}-local"
    env = {k: rewrite_paths(v, mounts) for k, v in resolve_env(container, resolver, pod_name).items()}
    # As in a pod: the hostname is the pod's name (the runtime reports the table it serves under it).
    env.update(HOST="127.0.0.1", PORT=str(args.port), HOSTNAME=pod_name)
    if args.print_env:
        print("\n".join(sorted(env)))
        return
    argv = [*(container.get("command") or [args.entrypoint]), *(container.get("args") or [])]
    print(f"==> running {args.deployment}/{container['name']}: {' '.join(argv)} (volumes under {root})", file=sys.stderr)
    os.execvpe(argv[0], argv, {**{k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")}, **env})


if __name__ == "__main__":
    main()
