# Shared by the scripts that build pinned Go tools into the cache (tests/cluster/cluster.sh
# for the control plane, hack/helm.sh for helm): messages, timing, finding Go, and a
# `go install` that never leaves a half-written binary. Source it; it defines functions only.
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
