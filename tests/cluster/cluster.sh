#!/usr/bin/env bash
# A real Kubernetes control plane on this machine, built from Go modules:
# etcd, kube-apiserver, kube-controller-manager, kube-scheduler, and kwok
# standing in for kubelets. No Docker, no network beyond 127.0.0.1.
#
#   cluster.sh build    build (or reuse) the cached binaries
#   cluster.sh up       start the control plane; writes .cluster/kubeconfig
#   cluster.sh down     stop every process `up` started, remove its data
#   cluster.sh status   say whether it runs, and where
#
# Binaries are cached under ${DSPY_CACHE_DIR:-$HOME/.cache/dspy-operator}/k8s-<version>/
# and shared by every checkout on the machine. State of a running control plane
# (pids, ports, data dir, component logs) lives under <checkout>/.cluster/.
#
# Environment: DSPY_CACHE_DIR (binary cache root), DSPY_CLUSTER_DIR (state dir,
# default <checkout>/.cluster), DSPY_CLUSTER_NODES (kwok nodes, default 2),
# DSPY_CLUSTER_READY_TIMEOUT / DSPY_CLUSTER_STOP_TIMEOUT (seconds per step).
set -euo pipefail

K8S_VERSION=v1.37.2
KWOK_VERSION=v0.8.0

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
WRAPPER="$HERE/k8s"
CACHE="${DSPY_CACHE_DIR:-$HOME/.cache/dspy-operator}/k8s-$K8S_VERSION"
BIN="$CACHE/bin"
STAGES="$CACHE/stages"
STATE_DIR="${DSPY_CLUSTER_DIR:-$REPO/.cluster}"
STATE_FILE="$STATE_DIR/state.env"
KUBECONFIG_OUT="$STATE_DIR/kubeconfig"
LOG_DIR="$STATE_DIR/logs"
# Fake nodes kwok keeps Ready.
NODE_COUNT="${DSPY_CLUSTER_NODES:-2}"
# How long `up` waits for each readiness step, and `down` for each process.
READY_TIMEOUT="${DSPY_CLUSTER_READY_TIMEOUT:-120}"
STOP_TIMEOUT="${DSPY_CLUSTER_STOP_TIMEOUT:-30}"

COMPONENTS_BUILT=(kube-apiserver kube-controller-manager kube-scheduler etcd kubectl kwok)
# Stop order is the reverse dependency order.
STOP_ORDER=(kwok kube-scheduler kube-controller-manager kube-apiserver etcd)

# say, info, die, now, since, find_go, go_install_to: shared with hack/helm.sh.
# shellcheck source=../../hack/lib/gobuild.sh
source "$REPO/hack/lib/gobuild.sh"

# --------------------------------------------------------------------------
# build
# --------------------------------------------------------------------------

k8s_ldflags() {
  local minor="${K8S_VERSION#v1.}"
  minor="${minor%%.*}"
  local p=k8s.io/component-base/version
  # Without these the server reports v0.0.0-master+$Format:%H$, which kubectl
  # and helm cannot parse.
  printf '%s' "-s -w -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
}

# build_one NAME PACKAGE: go build in the wrapper module to a temporary name,
# then rename, so an interrupted build never leaves a half-written binary.
build_k8s_binary() {
  local name="$1" pkg="$2" ldflags="${3:-}"
  local tmp="$BIN/.$name.tmp.$$"
  (cd "$WRAPPER" && "$GO" build -ldflags "$ldflags" -o "$tmp" "$pkg")
  mv -f "$tmp" "$BIN/$name"
}

build_kwok() {
  go_install_to "$BIN" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
}

# The Stage objects kwok needs (it exits with "no stages found" without them):
# nodes become Ready and keep a heartbeat lease, pods become Ready at once.
copy_stages() {
  local dir
  dir="$(cd "$CACHE" && GOFLAGS='' "$GO" mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION" \
    | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
  [[ -d "$dir/kustomize/stage" ]] || die "kwok module source not found (got '$dir')"
  local tmp="$CACHE/.stages.tmp.$$"
  rm -rf "$tmp"
  mkdir -p "$tmp"
  cp "$dir/kustomize/stage/node/fast/node-initialize.yaml" \
     "$dir/kustomize/stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml" \
     "$dir/kustomize/stage/pod/fast/pod-ready.yaml" \
     "$dir/kustomize/stage/pod/fast/pod-complete.yaml" \
     "$dir/kustomize/stage/pod/fast/pod-delete.yaml" \
     "$tmp/"
  chmod -R u+w "$tmp"
  rm -rf "$STAGES"
  mv "$tmp" "$STAGES"
}

cmd_build() {
  mkdir -p "$BIN"
  local missing=()
  local c
  for c in "${COMPONENTS_BUILT[@]}"; do
    [[ -x "$BIN/$c" ]] || missing+=("$c")
  done
  [[ -d "$STAGES" ]] || missing+=(kwok-stages)
  if ((${#missing[@]} == 0)); then
    say "reusing cached control-plane binaries (Kubernetes $K8S_VERSION, kwok $KWOK_VERSION) in $BIN"
    return 0
  fi

  find_go
  say "building the control plane into $CACHE"
  info "Kubernetes $K8S_VERSION, etcd (from its module graph), kwok $KWOK_VERSION; Go: $("$GO" version)"
  info "to build: ${missing[*]}"
  info "a cold build takes ~15 minutes of CPU the first time (plus ~1.3 GB of module downloads);"
  info "later runs reuse the cache and finish in seconds. Safe to interrupt and rerun."
  # Clean up temporaries of this run if interrupted.
  trap 'rm -rf "$BIN"/.*.tmp.$$ "$BIN/.kwok-gobin.$$" "$CACHE/.stages.tmp.$$"' EXIT

  local t_all t
  t_all="$(now)"
  local ldf
  ldf="$(k8s_ldflags)"
  for c in "${missing[@]}"; do
    t="$(now)"
    say "building $c ..."
    case "$c" in
      kube-apiserver|kube-controller-manager|kube-scheduler|kubectl)
        build_k8s_binary "$c" "k8s.io/kubernetes/cmd/$c" "$ldf" ;;
      etcd)
        build_k8s_binary etcd go.etcd.io/etcd/server/v3 "-s -w" ;;
      kwok)
        build_kwok ;;
      kwok-stages)
        copy_stages ;;
    esac
    info "$c done in $(since "$t") s"
  done
  say "control plane built in $(since "$t_all") s"
}

# --------------------------------------------------------------------------
# state of a running control plane
# --------------------------------------------------------------------------

# pid_alive PID NAME: true when PID runs the cached binary NAME (guards against
# pid reuse; a zombie counts as gone).
pid_alive() {
  local pid="$1" name="$2"
  [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null || return 1
  local stat
  stat="$(cat "/proc/$pid/stat" 2>/dev/null)" || return 1
  stat="${stat##*) }"
  [[ "${stat%% *}" != Z ]] || return 1
  [[ "$(readlink "/proc/$pid/exe" 2>/dev/null)" == "$BIN/$name"* ]]
}

load_state() {
  [[ -f "$STATE_FILE" ]] || return 1
  # shellcheck disable=SC1090
  source "$STATE_FILE"
}

pid_of() { local v="PID_${1//-/_}"; printf '%s' "${!v:-}"; }

api_healthy() {
  curl -sf --max-time 2 --cacert "$DATA_DIR/pki/ca.crt" \
    "https://127.0.0.1:$API_PORT/readyz" >/dev/null 2>&1
}

# running: a state file whose every process is alive and an API that answers.
# A busy machine may answer slowly: retry before calling a live one dead.
running() {
  load_state || return 1
  local c try
  for c in etcd kube-apiserver kube-controller-manager kube-scheduler kwok; do
    pid_alive "$(pid_of "$c")" "$c" || return 1
  done
  for try in 1 2 3 4 5; do
    api_healthy && return 0
    ((try < 5)) && sleep 1
  done
  return 1
}

# --------------------------------------------------------------------------
# up
# --------------------------------------------------------------------------

# free_ports N: N distinct free TCP ports on 127.0.0.1, held open together
# while chosen so they differ from each other.
free_ports() {
  python3 - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

# cert NAME CN [O] [SAN]: an EC key and a certificate signed by the run's CA.
cert() {
  local name="$1" cn="$2" org="${3:-}" san="${4:-}"
  local pki="$DATA_DIR/pki" subj="/CN=$cn"
  [[ -n "$org" ]] && subj="/O=$org$subj"
  openssl ecparam -name prime256v1 -genkey -noout -out "$pki/$name.key" 2>/dev/null
  openssl req -new -key "$pki/$name.key" -subj "$subj" -out "$pki/$name.csr" 2>/dev/null
  local ext="$pki/$name.ext"
  {
    echo "basicConstraints=critical,CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    if [[ -n "$san" ]]; then
      echo "extendedKeyUsage=serverAuth,clientAuth"
      echo "subjectAltName=$san"
    else
      echo "extendedKeyUsage=clientAuth"
    fi
  } >"$ext"
  openssl x509 -req -in "$pki/$name.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" \
    -CAcreateserial -days 30 -sha256 -extfile "$ext" -out "$pki/$name.crt" 2>/dev/null
  rm -f "$pki/$name.csr" "$ext"
}

make_pki() {
  local pki="$DATA_DIR/pki"
  mkdir -p "$pki"
  openssl ecparam -name prime256v1 -genkey -noout -out "$pki/ca.key" 2>/dev/null
  openssl req -x509 -new -key "$pki/ca.key" -subj "/CN=dspy-operator-e2e-ca" -days 30 -sha256 \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
    -out "$pki/ca.crt" 2>/dev/null
  cert apiserver kube-apiserver "" \
    "IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  cert admin admin system:masters
  cert controller-manager system:kube-controller-manager
  cert scheduler system:kube-scheduler
  cert kwok kwok system:masters
  # The aggregation layer's client (front proxy); also stops the components
  # from complaining about an empty requestheader CA.
  cert front-proxy-client front-proxy-client
  # Service-account token signing key pair.
  openssl genrsa -out "$pki/sa.key" 2048 2>/dev/null
  openssl rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null
}

# kubeconfig OUT USER: a kubeconfig with the user's client cert embedded.
kubeconfig() {
  local out="$1" user="$2" pki="$DATA_DIR/pki"
  local tmp="$out.tmp.$$"
  cat >"$tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: dspy-e2e
  cluster:
    server: https://127.0.0.1:$API_PORT
    certificate-authority-data: $(base64 -w0 <"$pki/ca.crt")
users:
- name: $user
  user:
    client-certificate-data: $(base64 -w0 <"$pki/$user.crt")
    client-key-data: $(base64 -w0 <"$pki/$user.key")
contexts:
- name: dspy-e2e
  context: {cluster: dspy-e2e, user: $user}
current-context: dspy-e2e
EOF
  chmod 600 "$tmp"
  mv -f "$tmp" "$out"
}

write_state() {
  local tmp="$STATE_FILE.tmp.$$" c
  {
    printf '# written by tests/cluster/cluster.sh up; read by down/status and tests/e2e/conftest.py\n'
    printf 'K8S_VERSION=%q\n' "$K8S_VERSION"
    printf 'DATA_DIR=%q\n' "$DATA_DIR"
    printf 'KUBECONFIG_PATH=%q\n' "$KUBECONFIG_OUT"
    printf 'LOG_DIR=%q\n' "$LOG_DIR"
    printf 'KUBECTL=%q\n' "$BIN/kubectl"
    printf 'API_PORT=%q\nETCD_PORT=%q\nETCD_PEER_PORT=%q\nKCM_PORT=%q\nSCHED_PORT=%q\nKWOK_PORT=%q\n' \
      "$API_PORT" "$ETCD_PORT" "$ETCD_PEER_PORT" "$KCM_PORT" "$SCHED_PORT" "$KWOK_PORT"
    for c in etcd kube-apiserver kube-controller-manager kube-scheduler kwok; do
      printf 'PID_%s=%q\n' "${c//-/_}" "$(pid_of "$c")"
    done
  } >"$tmp"
  mv -f "$tmp" "$STATE_FILE"
}

# start NAME ARGS...: run a cached binary in its own session, log to a file.
start() {
  local name="$1"
  shift
  # fd 9 is the state lock: the long-lived children must not inherit it.
  setsid "$BIN/$name" "$@" >"$LOG_DIR/$name.log" 2>&1 </dev/null 9>&- &
  printf -v "PID_${name//-/_}" '%s' "$!"
  write_state
}

# wait_for WHAT CMD...: poll CMD until it succeeds; fail early when a component died.
wait_for() {
  local what="$1"
  shift
  local deadline=$((SECONDS + READY_TIMEOUT)) c
  until "$@" >/dev/null 2>&1; do
    for c in etcd kube-apiserver kube-controller-manager kube-scheduler kwok; do
      local pid
      pid="$(pid_of "$c")"
      if [[ -n "$pid" ]] && ! pid_alive "$pid" "$c"; then
        echo "cluster.sh: $c exited while waiting for $what; last lines of $LOG_DIR/$c.log:" >&2
        tail -n 30 "$LOG_DIR/$c.log" >&2 || true
        return 1
      fi
    done
    if ((SECONDS >= deadline)); then
      echo "cluster.sh: timed out after ${READY_TIMEOUT}s waiting for $what (logs in $LOG_DIR)" >&2
      return 1
    fi
    sleep 0.2
  done
}

kc() { "$BIN/kubectl" --kubeconfig "$KUBECONFIG_OUT" "$@"; }

nodes_ready() {
  local ready
  ready="$(kc get nodes -l type=kwok \
    -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' | grep -c '^True$')"
  ((ready >= NODE_COUNT))
}

create_nodes() {
  local i
  for ((i = 0; i < NODE_COUNT; i++)); do
    cat <<EOF
---
apiVersion: v1
kind: Node
metadata:
  name: kwok-node-$i
  annotations:
    node.alpha.kubernetes.io/ttl: "0"
    kwok.x-k8s.io/node: fake
  labels:
    type: kwok
    kubernetes.io/arch: amd64
    kubernetes.io/os: linux
    kubernetes.io/hostname: kwok-node-$i
EOF
  done | kc apply -f - >/dev/null
}

# On a failed `up`, stop what was started and drop its data; keep the logs.
up_failed() {
  local rc=$?
  ((rc == 0)) && return 0
  echo "cluster.sh: up failed; stopping what it started (logs kept in $LOG_DIR)" >&2
  stop_all >&2 || true
  exit "$rc"
}

cmd_up() {
  mkdir -p "$STATE_DIR"
  exec 9>"$STATE_DIR/.lock"
  flock 9
  if running; then
    say "reusing the running control plane (API https://127.0.0.1:$API_PORT, state $STATE_FILE)"
    info "kubeconfig: $KUBECONFIG_OUT"
    return 0
  fi
  if [[ -f "$STATE_FILE" ]]; then
    say "a previous control plane is half-dead; cleaning it up first"
    stop_all
  fi

  local t0 t c
  t0="$(now)"
  for c in etcd kube-apiserver kube-controller-manager kube-scheduler kwok; do
    printf -v "PID_${c//-/_}" '%s' ""
  done
  say "starting the control plane (Kubernetes $K8S_VERSION, $NODE_COUNT kwok nodes)"
  DATA_DIR="$(mktemp -d "${TMPDIR:-/tmp}/dspy-cluster.XXXXXX")"
  mkdir -p "$LOG_DIR"
  rm -f "$LOG_DIR"/*.log
  read -r API_PORT ETCD_PORT ETCD_PEER_PORT KCM_PORT SCHED_PORT KWOK_PORT <<<"$(free_ports 6)"
  # Any way out before "ready" (error, Ctrl-C, kill) stops what was started.
  trap up_failed EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  trap 'exit 129' HUP
  write_state

  t="$(now)"
  make_pki
  kubeconfig "$KUBECONFIG_OUT" admin
  kubeconfig "$DATA_DIR/controller-manager.kubeconfig" controller-manager
  kubeconfig "$DATA_DIR/scheduler.kubeconfig" scheduler
  kubeconfig "$DATA_DIR/kwok.kubeconfig" kwok
  info "certificates and kubeconfigs: $(since "$t") s"

  local pki="$DATA_DIR/pki"
  start etcd \
    --name dspy-e2e --data-dir "$DATA_DIR/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "dspy-e2e=http://127.0.0.1:$ETCD_PEER_PORT" \
    --unsafe-no-fsync --log-level warn

  start kube-apiserver \
    --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
    --bind-address 127.0.0.1 --secure-port "$API_PORT" \
    --advertise-address 127.0.0.1 --endpoint-reconciler-type none \
    --cert-dir "$DATA_DIR/apiserver" \
    --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
    --client-ca-file "$pki/ca.crt" \
    --authorization-mode Node,RBAC \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-account-key-file "$pki/sa.pub" \
    --service-account-signing-key-file "$pki/sa.key" \
    --service-cluster-ip-range 10.96.0.0/16 \
    --requestheader-client-ca-file "$pki/ca.crt" \
    --requestheader-allowed-names front-proxy-client \
    --requestheader-username-headers X-Remote-User \
    --requestheader-group-headers X-Remote-Group \
    --requestheader-extra-headers-prefix X-Remote-Extra- \
    --proxy-client-cert-file "$pki/front-proxy-client.crt" \
    --proxy-client-key-file "$pki/front-proxy-client.key" \
    --allow-privileged=true

  wait_for "kube-apiserver /readyz" api_healthy
  info "kube-apiserver ready: $(since "$t0") s"

  start kube-controller-manager \
    --kubeconfig "$DATA_DIR/controller-manager.kubeconfig" \
    --authentication-kubeconfig "$DATA_DIR/controller-manager.kubeconfig" \
    --authorization-kubeconfig "$DATA_DIR/controller-manager.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port "$KCM_PORT" \
    --cert-dir "$DATA_DIR/controller-manager" \
    --controllers '*,-nodeipam' \
    --service-account-private-key-file "$pki/sa.key" \
    --root-ca-file "$pki/ca.crt" \
    --cluster-signing-cert-file "$pki/ca.crt" --cluster-signing-key-file "$pki/ca.key" \
    --use-service-account-credentials=true \
    --leader-elect=false

  start kube-scheduler \
    --kubeconfig "$DATA_DIR/scheduler.kubeconfig" \
    --authentication-kubeconfig "$DATA_DIR/scheduler.kubeconfig" \
    --authorization-kubeconfig "$DATA_DIR/scheduler.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port "$SCHED_PORT" \
    --cert-dir "$DATA_DIR/scheduler" \
    --leader-elect=false

  local stage_args=() f
  for f in "$STAGES"/*.yaml; do stage_args+=(--config "$f"); done
  # --node-lease-duration-seconds: without it kwok keeps no node Leases (the
  # heartbeat-with-lease stage then only renews conditions rarely), and the node
  # lifecycle controller marks every node NotReady about once a minute, taking
  # all pods' readiness with it.
  start kwok \
    --kubeconfig "$DATA_DIR/kwok.kubeconfig" \
    "${stage_args[@]}" \
    --node-lease-duration-seconds 40 \
    --manage-all-nodes=false \
    --manage-nodes-with-annotation-selector kwok.x-k8s.io/node=fake \
    --server-address "127.0.0.1:$KWOK_PORT" \
    --node-ip 127.0.0.1

  t="$(now)"
  wait_for "creating the kwok nodes" create_nodes
  wait_for "$NODE_COUNT Ready kwok nodes" nodes_ready
  info "kwok nodes Ready: $(since "$t0") s"
  wait_for "the default ServiceAccount" kc -n default get serviceaccount default
  info "default ServiceAccount: $(since "$t0") s"

  trap - EXIT INT TERM HUP
  say "control plane ready in $(since "$t0") s"
  info "kubeconfig: $KUBECONFIG_OUT   (export KUBECONFIG=$KUBECONFIG_OUT)"
  info "kubectl:    $BIN/kubectl"
  info "logs:       $LOG_DIR/"
  info "stop with:  make cluster-down   (or tests/cluster/cluster.sh down)"
}

# --------------------------------------------------------------------------
# down
# --------------------------------------------------------------------------

# stop_pid NAME PID: SIGTERM, wait up to STOP_TIMEOUT, then SIGKILL and wait.
stop_pid() {
  local name="$1" pid="$2" t
  pid_alive "$pid" "$name" || return 0
  t="$(now)"
  kill -TERM "$pid" 2>/dev/null || true
  local deadline=$((SECONDS + STOP_TIMEOUT))
  while pid_alive "$pid" "$name"; do
    if ((SECONDS >= deadline)); then
      echo "    $name (pid $pid) ignored SIGTERM for ${STOP_TIMEOUT}s: killing it" >&2
      kill -KILL "$pid" 2>/dev/null || true
      local hard=$((SECONDS + 10))
      while pid_alive "$pid" "$name" && ((SECONDS < hard)); do sleep 0.1; done
      pid_alive "$pid" "$name" && { echo "cluster.sh: $name (pid $pid) survived SIGKILL" >&2; return 1; }
      break
    fi
    sleep 0.1
  done
  info "stopped $name (pid $pid) in $(since "$t") s"
}

# stop_all: stop the processes of the state file in order, remove the data dir.
stop_all() {
  load_state || return 0
  local c rc=0
  for c in "${STOP_ORDER[@]}"; do
    stop_pid "$c" "$(pid_of "$c")" || rc=1
  done
  if [[ -n "${DATA_DIR:-}" && -d "$DATA_DIR" && "$DATA_DIR" == */dspy-cluster.* ]]; then
    rm -rf "$DATA_DIR"
  fi
  rm -f "$STATE_FILE" "$KUBECONFIG_OUT"
  return "$rc"
}

cmd_down() {
  if [[ ! -f "$STATE_FILE" ]]; then
    say "no control plane recorded in $STATE_FILE: nothing to stop"
    return 0
  fi
  mkdir -p "$STATE_DIR"
  exec 9>"$STATE_DIR/.lock"
  flock 9
  local t
  t="$(now)"
  say "stopping the control plane (kwok, scheduler, controller-manager, apiserver, etcd)"
  stop_all
  say "control plane stopped in $(since "$t") s; logs kept in $LOG_DIR"
}

cmd_status() {
  if running; then
    say "running: Kubernetes $K8S_VERSION, API https://127.0.0.1:$API_PORT"
    local c
    for c in etcd kube-apiserver kube-controller-manager kube-scheduler kwok; do
      info "$(printf '%-24s pid %s' "$c" "$(pid_of "$c")")"
    done
    info "kubeconfig: $KUBECONFIG_OUT"
    info "data:       $DATA_DIR"
    info "logs:       $LOG_DIR"
    return 0
  fi
  if [[ -f "$STATE_FILE" ]]; then
    say "not healthy: $STATE_FILE exists but a process is gone or the API does not answer (run: cluster.sh down)"
  else
    say "not running"
  fi
  return 1
}

# --------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------

usage() {
  sed -n '2,17p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

main() {
  local cmd="${1:-}"
  case "$cmd" in
    build) cmd_build ;;
    up) cmd_build; cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    -h|--help|help) usage ;;
    *) usage >&2; exit 2 ;;
  esac
}

main "$@"
