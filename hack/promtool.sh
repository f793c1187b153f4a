#!/usr/bin/env bash
# promtool (Prometheus's rule checker and rule unit-test runner), pinned and built from the
# Prometheus Go module into the shared cache, like helm and the control plane:
#
#   hack/promtool.sh build     build (or reuse) ${DSPY_CACHE_DIR:-~/.cache/dspy-operator}/promtool-<version>/bin/promtool
#   hack/promtool.sh path      print the cached binary's path (builds it first when missing)
#   hack/promtool.sh ARGS...   run the cached promtool with ARGS (builds it first when missing)
#
# `promtool check rules` and `promtool test rules` evaluate PromQL with the server's own engine;
# the server itself is hack/prometheus.sh, from the same module (lib/prometheus-module.sh).
# Safe to interrupt and rerun.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib/gobuild.sh
source "$HERE/lib/gobuild.sh"
# shellcheck source=lib/prometheus-module.sh
source "$HERE/lib/prometheus-module.sh"

PROMTOOL="$DSPY_CACHE_ROOT/promtool-$PROMETHEUS_VERSION-$PROMETHEUS_TAGS/bin/promtool"
TOOL_PACKAGE=github.com/prometheus/prometheus/cmd/promtool
TOOL_HINT="a cold build takes a few minutes the first time (plus module downloads); later runs reuse the cache"
tool_version() { "$PROMTOOL" --version 2>&1 | head -1; }

cached_tool_main promtool "$PROMTOOL" 2,11p "$@"
