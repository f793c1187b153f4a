# Shared by the scripts that build pinned Go tools into the cache (tests/cluster/cluster.sh
# for the control plane; hack/helm.sh, hack/promtool.sh and hack/prometheus.sh through
# `cached_tool_main`): messages, timing, finding Go, and a `go install` that never leaves a
# half-written binary. Source it; it defines functions only.
#
# Cache layout: ${DSPY_CACHE_DIR:-$HOME/.cache/dspy-operator}/<tool>-<version>/bin/<binary>,
# shared by every checkout on the machine.

DSPY_CACHE_ROOT="${DSPY_CACHE_DIR:-$HOME/.cache/dspy-operator}"

say() { printf '==> %s\n' "$*"; }
info() { printf '    %s\n' "$*"; }
die() { printf '%s: error: %s\n' "$(basename "$0")" "$*" >&2; exit 1; }

now() { date +%s.%N; }
# Seconds since $1 (a `now` value), one decimal.
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# find_go: set GO to the Go toolchain (PATH first, then /usr/local/go).
find_go() {
  if command -v go >/dev/null 2>&1; then
    GO="$(command -v go)"
  elif [[ -x /usr/local/go/bin/go ]]; then
    GO=/usr/local/go/bin/go
  else
    die "no Go toolchain found (need Go >= 1.26 on PATH or at /usr/local/go/bin/go)"
  fi
}

# go_install_to BIN_DIR PACKAGE@VERSION [LDFLAGS] [TAGS]: `go install` into a temporary GOBIN,
# then rename into BIN_DIR, so an interrupted build never leaves a half-written binary. Needs GO.
go_install_to() {
  local bin="$1" pkg="$2" ldflags="${3:-}" tags="${4:-}" name
  name="$(basename "${pkg%@*}")"
  local tmpbin="$bin/.$name-gobin.$$"
  mkdir -p "$tmpbin"
  # `go install pkg@version` ignores any enclosing module; run it from the bin dir anyway.
  (cd "$bin" && GOBIN="$tmpbin" GOFLAGS='' "$GO" install ${tags:+-tags "$tags"} ${ldflags:+-ldflags "$ldflags"} "$pkg")
  mv -f "$tmpbin/$name" "$bin/$name"
  rmdir "$tmpbin"
}

# cached_tool_main NAME BINARY HELP_LINES ARGS...: the command line of a script that builds one
# pinned Go tool into the cache (hack/helm.sh, hack/promtool.sh, hack/prometheus.sh). The script
# sets, before the call: TOOL_VERSION, TOOL_PACKAGE (module path of the command, no @version), TOOL_LDFLAGS,
# TOOL_TAGS (may be empty), TOOL_HINT (how long a cold build takes), and defines
# `tool_version` (what the built binary says it is). ARGS: `build`, `path`, `help`, or
# arguments for the tool itself (built first when missing).
cached_tool_main() {
  local name="$1" binary="$2" help="$3"
  shift 3
  local bin
  bin="$(dirname "$binary")"
  case "${1:-}" in
    build) _cached_tool_build "$name" "$binary" "$bin" ;;
    path) _cached_tool_build "$name" "$binary" "$bin" quiet >&2; printf '%s\n' "$binary" ;;
    -h|--help|help|"") sed -n "$help" "$0" | sed 's/^# \{0,1\}//' ;;
    *) _cached_tool_build "$name" "$binary" "$bin" quiet >&2; exec "$binary" "$@" ;;
  esac
}

_cached_tool_build() {
  local name="$1" binary="$2" bin="$3" quiet="${4:-}"
  if [[ -x "$binary" ]]; then
    [[ "$quiet" == quiet ]] || say "reusing cached $name $TOOL_VERSION in $bin"
    return 0
  fi
  find_go
  say "building $name $TOOL_VERSION into $bin (Go: $("$GO" version))"
  info "$TOOL_HINT"
  mkdir -p "$bin"
  # shellcheck disable=SC2064  # expanded now: the paths of this build
  trap "rm -rf '$bin'/.$name-gobin.$$" EXIT
  local t
  t="$(now)"
  go_install_to "$bin" "$TOOL_PACKAGE@$TOOL_VERSION" "$TOOL_LDFLAGS" "$TOOL_TAGS"
  trap - EXIT
  info "$name done in $(since "$t") s: $(tool_version)"
}
