#!/usr/bin/env bash
# helm, pinned and built from its Go module into the shared cache (like the control plane):
#
#   hack/helm.sh build       build (or reuse) ${DSPY_CACHE_DIR:-~/.cache/dspy-operator}/helm-<version>/bin/helm
#   hack/helm.sh path        print the cached binary's path (builds it first when missing)
#   hack/helm.sh ARGS...     run the cached helm with ARGS (builds it first when missing)
#
# The first build takes about 2 minutes of CPU on 2 cores (plus module downloads); later
# runs reuse the cache and say so. Safe to interrupt and rerun.
set -euo pipefail

HELM_VERSION=v3.22.0

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib/gobuild.sh
source "$HERE/lib/gobuild.sh"

CACHE="$DSPY_CACHE_ROOT/helm-$HELM_VERSION"
BIN="$CACHE/bin"
HELM="$BIN/helm"

build() {
  if [[ -x "$HELM" ]]; then
    [[ "${1:-}" == quiet ]] || say "reusing cached helm $HELM_VERSION in $BIN"
    return 0
  fi
  find_go
  say "building helm $HELM_VERSION into $BIN (Go: $("$GO" version))"
  info "a cold build takes ~2 minutes of CPU the first time; later runs reuse the cache"
  mkdir -p "$BIN"
  trap 'rm -rf "$BIN"/.helm-gobin.$$' EXIT
  local t
  t="$(now)"
  # Without the -X the binary reports a bare "v3.22" (helm's default) instead of its version.
  go_install_to "$BIN" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" \
    "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
  trap - EXIT
  info "helm done in $(since "$t") s: $("$HELM" version --short)"
}

case "${1:-}" in
  build) build ;;
  path) build quiet >&2; printf '%s\n' "$HELM" ;;
  -h|--help|help|"") sed -n '2,9p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' ;;
  *) build quiet >&2; exec "$HELM" "$@" ;;
esac
