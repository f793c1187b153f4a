#!/usr/bin/env bash
# The README's first command (`make demo`): the whole system on this machine.
#
#   hack/demo.sh        control plane, Redis, fake LM, CRD, operator, every example,
#                       then the runtime started from the operator's own Deployment
#   hack/demo.sh down   stop everything the demo started (also `make demo-down`)
#
# kwok's pods are Ready but run nothing, so the demo starts the `qa` runtime here with
# exactly the command and environment of the Deployment the operator wrote
# (hack/run_pod_locally.py resolves its Secrets and ConfigMaps). With OPENAI_API_KEY
# set, `qa` is pointed at openai/gpt-4o-mini instead of the fake LM.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
DEMO_DIR="$REPO/.demo"
CLUSTER_DIR="${DSPY_CLUSTER_DIR:-$REPO/.cluster}"   # cluster.sh honours the same variable
NS=dspy-demo
FAKE_LM_PORT=18080   # examples/01-minimal.yaml points at it
PY="$REPO/.venv/bin/python"
export PATH="$REPO/.venv/bin:$PATH" LITELLM_LOCAL_MODEL_COST_MAP=true

say() { printf '\n==> %s\n' "$*"; }
die() { printf 'demo: error: %s\n' "$*" >&2; exit 1; }

stop_pidfile() {
  local f="$1" pid
  [[ -f "$f" ]] || return 0
  pid="$(cat "$f")"
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$f"
}

down() {
  say "stopping the demo"
  for name in runtime operator fakelm redis; do stop_pidfile "$DEMO_DIR/$name.pid"; done
  tests/cluster/cluster.sh down
  echo "demo stopped (logs kept in .demo/)"
}

# start NAME CMD...: run CMD in the background with its log and pid under .demo/.
start() {
  local name="$1"; shift
  setsid "$@" >"$DEMO_DIR/$name.log" 2>&1 &
  echo $! >"$DEMO_DIR/$name.pid"
}

wait_http() {
  local url="$1" what="$2"
  for _ in $(seq 1 600); do
    curl -fsS -o /dev/null "$url" 2>/dev/null && return 0
    sleep 0.2
  done
  die "$what did not answer at $url (see .demo/)"
}

free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

if [[ "${1:-up}" == down ]]; then down; exit 0; fi

t0=$SECONDS
mkdir -p "$DEMO_DIR"
for name in runtime operator fakelm redis; do stop_pidfile "$DEMO_DIR/$name.pid"; done

say "1/7 control plane (kube-apiserver, etcd, controller-manager, scheduler, kwok)"
tests/cluster/cluster.sh up
export KUBECONFIG="$CLUSTER_DIR/kubeconfig"
# shellcheck disable=SC1091
KUBECTL="$(. "$CLUSTER_DIR/state.env" && echo "$KUBECTL")"
kc() { "$KUBECTL" "$@"; }

say "2/7 Redis and the fake LM on loopback"
REDIS_PORT="$(free_port)"
start redis redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no
if curl -fsS -o /dev/null "http://127.0.0.1:$FAKE_LM_PORT/stats" 2>/dev/null; then
  die "port $FAKE_LM_PORT is taken (the fake LM of examples/01-minimal.yaml); stop what uses it or run 'make demo-down'"
fi
start fakelm "$PY" -m dspy_runtime.fakelm --port "$FAKE_LM_PORT" --latency-ms 50
wait_http "http://127.0.0.1:$FAKE_LM_PORT/stats" "the fake LM"
echo "redis-server on 127.0.0.1:$REDIS_PORT, fake LM on 127.0.0.1:$FAKE_LM_PORT"

say "3/7 the DSPyDeployment CRD"
kc apply --server-side -f crds/
kc wait --for condition=Established --timeout=60s crd/dspydeployments.dspy.dev

say "4/7 the operator (log: .demo/operator.log)"
start operator "$REPO/.venv/bin/dspy-operator"

say "5/7 every example into namespace $NS (examples/)"
kc create namespace "$NS" --dry-run=client -o yaml | kc apply -f -
kc apply -n "$NS" -f examples/
# The demo's own Redis for qa: a Secret with its URL, and qa switched to it (a spec change the operator rolls).
kc create secret generic demo-redis -n "$NS" --from-literal=url="redis://127.0.0.1:$REDIS_PORT/0" \
  --dry-run=client -o yaml | kc apply -f -
# The fake model has no list price: give it one, so the demo shows costs.
patch='{"spec":{"redis":{"mode":"External","urlSecretRef":{"name":"demo-redis"}},"lm":{"pricing":{"promptPerMillion":0.15,"completionPerMillion":0.6}}}}'
if [[ -n "${OPENAI_API_KEY:-}" ]]; then
  echo "OPENAI_API_KEY is set: qa will use openai/gpt-4o-mini"
  kc create secret generic demo-openai -n "$NS" --from-literal=api-key="$OPENAI_API_KEY" \
    --dry-run=client -o yaml | kc apply -f - >/dev/null
  patch='{"spec":{"redis":{"mode":"External","urlSecretRef":{"name":"demo-redis"}},"lm":{"model":"openai/gpt-4o-mini","apiBase":null,"apiKeySecretRef":{"name":"demo-openai","key":"api-key"}}}}'
fi
kc patch dspy qa -n "$NS" --type merge -p "$patch"

say "6/7 waiting until every DSPyDeployment is Healthy"
# Healthy for the current generation: a status written before the last change does not count.
not_yet() {
  kc get dspy -n "$NS" -o jsonpath='{range .items[*]}{.metadata.name} {.metadata.generation} {.status.observedGeneration} {.status.phase}{"\n"}{end}' \
    | awk '$2 != $3 || $4 != "Healthy" { print $1 }'
}
for _ in $(seq 1 360); do
  pending="$(not_yet)"
  [[ -z "$pending" ]] && break
  sleep 0.5
done
kc get dspy -n "$NS"
[[ -z "$pending" ]] || die "not Healthy: $pending; see .demo/operator.log and 'kubectl describe dspy -n $NS'"

say "7/7 the qa runtime, started from the operator's Deployment (log: .demo/runtime.log)"
RUNTIME_PORT="$(free_port)"
start runtime "$PY" hack/run_pod_locally.py --namespace "$NS" --deployment qa --port "$RUNTIME_PORT" --entrypoint dspy-runtime
wait_http "http://127.0.0.1:$RUNTIME_PORT/ready" "the qa runtime"
ask() {
  curl -fsS "http://127.0.0.1:$RUNTIME_PORT/v1/predict" -H 'Content-Type: application/json' \
    -H 'X-Request-ID: demo-'"$1" -d '{"inputs": {"question": "What does a DSPy program compile into?"}}'
}
echo "first request (goes to the LM):"
ask 1 | "$PY" -m json.tool
echo "same question again (answered from the cache):"
ask 2 | "$PY" -c 'import json,sys; d=json.load(sys.stdin); print(json.dumps({"cached": d["metadata"]["cached"], "cache_level": d["metadata"]["cache_level"], "latency_ms": d["metadata"]["latency_ms"]}))'
echo "health:"
curl -fsS "http://127.0.0.1:$RUNTIME_PORT/health"; echo
echo "entries in the demo's Redis (the second cache level, shared by every replica): $(redis-cli -p "$REDIS_PORT" dbsize)"

say "demo is up after $((SECONDS - t0)) s"
cat <<MSG
  kubectl:   export KUBECONFIG=$KUBECONFIG; $KUBECTL get dspy -n $NS
  runtime:   curl -s localhost:$RUNTIME_PORT/v1/predict -H 'Content-Type: application/json' -d '{"input": "Why cache?"}'
             curl -s localhost:$RUNTIME_PORT/metrics | grep ^dspy_
  logs:      .demo/operator.log .demo/runtime.log $CLUSTER_DIR/logs/
  stop everything:  make demo-down
MSG
