#!/usr/bin/env bash
# `make chart`: lint the Helm chart (`helm lint --strict`) and render it, with the pinned helm
# (hack/helm.sh), once per values file of charts/dspy-operator/ci/ (cluster-wide and namespaced
# RBAC). Prints what each render holds; the rendered YAML goes to .chart/<values>.yaml.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=lib/gobuild.sh
source "$REPO/hack/lib/gobuild.sh"
CHART="$REPO/charts/dspy-operator"
OUT="$REPO/.chart"
HELM="$("$REPO/hack/helm.sh" path)"

# helm says so on stderr each time it follows crds/'s symlink to the repository's CRD file:
# expected (the chart carries that very file), so that one line is dropped; any other is shown.
helm_() { "$HELM" "$@" 2> >(grep -v 'found symbolic link in path' >&2); }

mkdir -p "$OUT"
for values in "$CHART"/ci/*-values.yaml; do
  mode="$(basename "$values" -values.yaml)"
  say "helm lint --strict ($mode: ${values#"$REPO"/})"
  helm_ lint --strict "$CHART" -f "$values" | sed 's/^/    /'
  helm_ template dspy-operator "$CHART" --namespace dspy-system --include-crds -f "$values" >"$OUT/$mode.yaml"
  info "rendered $OUT/$mode.yaml: $(grep -E '^kind: ' "$OUT/$mode.yaml" | sort | uniq -c | awk '{printf "%s%s %s", sep, $1, $3; sep=", "}')"
done
say "chart OK"
