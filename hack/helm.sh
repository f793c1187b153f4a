#!/usr/bin/env bash
# helm, pinned and built from its Go module into the shared cache (like the control plane):
#
#   hack/helm.sh build       build (or reuse) ${DSPY_CACHE_DIR:-~/.cache/dspy-operator}/helm-<version>-kube<k8s>/bin/helm
#   hack/helm.sh path        print the cached binary's path (builds it first when missing)
#   hack/helm.sh ARGS...     run the cached helm with ARGS (builds it first when missing)
#
# The first build takes about 2 minutes of CPU on 2 cores (plus module downloads); later
# runs reuse the cache and say so. Safe to interrupt and rerun.
set -euo pipefail

HELM_VERSION=v3.22.0
# The Kubernetes version helm assumes without a cluster (`helm template`, `helm lint`): its
# release Makefile sets it from the client-go it is built with (v0.37.0 for v3.22.0, so
# 1.37); `go install` alone leaves helm's fallback, 1.20, which fails any kubeVersion >= 1.21.
HELM_KUBE_MAJOR=1
HELM_KUBE_MINOR=37

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib/gobuild.sh
source "$HERE/lib/gobuild.sh"

# Keyed by everything the build bakes in.
CACHE="$DSPY_CACHE_ROOT/helm-$HELM_VERSION-kube$HELM_KUBE_MAJOR.$HELM_KUBE_MINOR"
BIN="$CACHE/bin"
HELM="$BIN/helm"

TOOL_VERSION="$HELM_VERSION"
TOOL_PACKAGE=helm.sh/helm/v3/cmd/helm
TOOL_TAGS=""
TOOL_HINT="a cold build takes ~2 minutes of CPU the first time; later runs reuse the cache"
h=helm.sh/helm/v3
TOOL_LDFLAGS="-s -w -X $h/internal/version.version=$HELM_VERSION -X $h/internal/version.gitTreeState=clean"
TOOL_LDFLAGS+=" -X $h/pkg/chartutil.k8sVersionMajor=$HELM_KUBE_MAJOR -X $h/pkg/chartutil.k8sVersionMinor=$HELM_KUBE_MINOR"
TOOL_LDFLAGS+=" -X $h/pkg/lint/rules.k8sVersionMajor=$HELM_KUBE_MAJOR -X $h/pkg/lint/rules.k8sVersionMinor=$HELM_KUBE_MINOR"
tool_version() { printf '%s, Kubernetes %s by default' "$("$HELM" version --short)" "$HELM_KUBE_MAJOR.$HELM_KUBE_MINOR"; }

cached_tool_main helm "$HELM" 2,9p "$@"
