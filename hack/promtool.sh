#!/usr/bin/env bash
# promtool (Prometheus's rule checker and rule unit-test runner), pinned and built from the
# Prometheus Go module into the shared cache, like helm and the control plane:
#
#   hack/promtool.sh build     build (or reuse) ${DSPY_CACHE_DIR:-~/.cache/dspy-operator}/promtool-<version>/bin/promtool
#   hack/promtool.sh path      print the cached binary's path (builds it first when missing)
#   hack/promtool.sh ARGS...   run the cached promtool with ARGS (builds it first when missing)
#
# Only promtool is built (not the Prometheus server): it is what `promtool check rules` and
# `promtool test rules` need, and it evaluates PromQL with the server's own engine. Safe to
# interrupt and rerun.
set -euo pipefail

# The Go module's v0.X.Y versions are Prometheus releases 3.X.Y.
PROMETHEUS_VERSION=v0.316.0
# Prometheus's own build tag that leaves out every service-discovery plugin (AWS, Azure, GCE,
# Kubernetes, ...): `check rules` and `test rules` need none, and the cold build drops from
# ~10 minutes to a few (see the README for both figures).
PROMTOOL_TAGS=remove_all_sd

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib/gobuild.sh
source "$HERE/lib/gobuild.sh"

CACHE="$DSPY_CACHE_ROOT/promtool-$PROMETHEUS_VERSION-$PROMTOOL_TAGS"
BIN="$CACHE/bin"
PROMTOOL="$BIN/promtool"

TOOL_VERSION="$PROMETHEUS_VERSION"
TOOL_PACKAGE=github.com/prometheus/prometheus/cmd/promtool
TOOL_TAGS="$PROMTOOL_TAGS"
TOOL_HINT="a cold build takes a few minutes the first time (plus module downloads); later runs reuse the cache"
p=github.com/prometheus/common/version
TOOL_LDFLAGS="-s -w -X $p.Version=$PROMETHEUS_VERSION -X $p.Branch=module -X $p.Revision=$PROMETHEUS_VERSION"
tool_version() { "$PROMTOOL" --version 2>&1 | head -1; }

cached_tool_main promtool "$PROMTOOL" 2,11p "$@"
