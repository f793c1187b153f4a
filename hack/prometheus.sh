#!/usr/bin/env bash
# The Prometheus server, pinned and built from the same Go module as hack/promtool.sh into the
# shared cache, for the tests that scrape a live runtime and operator and judge canaries with it:
#
#   hack/prometheus.sh build     build (or reuse) ${DSPY_CACHE_DIR:-~/.cache/dspy-operator}/prometheus-<version>/bin/prometheus
#   hack/prometheus.sh path      print the cached binary's path (builds it first when missing)
#   hack/prometheus.sh ARGS...   run the cached prometheus with ARGS (builds it first when missing)
#
# Built without the web UI's assets (they come from an npm build, not the Go module): the HTTP
# API the tests and the canary analysis use is all there. Safe to interrupt and rerun.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib/gobuild.sh
source "$HERE/lib/gobuild.sh"
# shellcheck source=lib/prometheus-module.sh
source "$HERE/lib/prometheus-module.sh"

PROMETHEUS="$DSPY_CACHE_ROOT/prometheus-$PROMETHEUS_VERSION-$PROMETHEUS_TAGS/bin/prometheus"
TOOL_PACKAGE=github.com/prometheus/prometheus/cmd/prometheus
TOOL_HINT="a cold build takes a few minutes the first time (plus module downloads, shared with promtool's); later runs reuse the cache"
tool_version() { "$PROMETHEUS" --version 2>&1 | head -1; }

cached_tool_main prometheus "$PROMETHEUS" 2,11p "$@"
