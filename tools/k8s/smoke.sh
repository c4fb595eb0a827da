#!/usr/bin/env bash
# Smoke test of the built control plane: etcd + kube-apiserver (RBAC, client-cert
# admin, service-account keys, audit log) + kube-controller-manager, on free
# 127.0.0.1 ports in a temporary directory. Checks /readyz, `kubectl get ns`,
# controller-manager leadership and the `default` ServiceAccount, prints the
# start-up times, then stops everything and removes the directory.
#
#   tools/k8s/smoke.sh            # builds (or reuses) the tools first
#   KEEP=1 tools/k8s/smoke.sh     # keep the temp dir (logs, certs) for a look
#   KUBECTL=/path/to/kubectl      # default: kubectl.1.33 from the kubectl package, else kubectl
#   KCM_CONTROLLERS='*'           # default: the list the testbed needs (see README)
#   TOOLS_BIN=DIR                 # use binaries from DIR instead of running build.sh
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
bin="${TOOLS_BIN:-$("$here/build.sh" | tail -n1)}"
dir="$(mktemp -d -t k8s-smoke.XXXXXX)"
pids=()

log() { printf '[smoke] %s\n' "$*" >&2; }
# Stop in reverse start order (controller-manager, apiserver, etcd): an
# apiserver whose etcd is already gone can hang in shutdown for minutes.
# SIGTERM, up to 10s to exit, then SIGKILL.
stop() {
  local pid=$1 i
  kill -TERM "$pid" 2>/dev/null || return 0
  for i in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
cleanup() {
  local rc=$? i
  for (( i = ${#pids[@]} - 1; i >= 0; i-- )); do stop "${pids[i]}"; done
  if [[ $rc -ne 0 ]]; then
    for f in "$dir"/etcd.log "$dir"/apiserver.log "$dir"/controller-manager.log; do
      [[ -f $f ]] && { log "--- tail $f"; grep -v '^I' "$f" | tail -n 15 >&2; }
    done
  fi
  if [[ -n "${KEEP:-}" ]]; then log "kept $dir"; else rm -rf "$dir"; fi
  exit "$rc"
}
trap cleanup EXIT INT TERM

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2fs", b - a }'; }

# A free TCP port on 127.0.0.1 (not one handed out earlier in this run).
taken=" "
free_port() {
  local p
  while :; do
    p=$(( 20000 + RANDOM % 40000 ))
    [[ $taken == *" $p "* ]] && continue
    [[ -z "$(ss -Htln "sport = :$p")" ]] && { taken+="$p "; echo "$p"; return; }
  done
}

# wait_for SECONDS DESCRIPTION COMMAND...: poll until COMMAND succeeds.
wait_for() {
  local limit=$1 what=$2; shift 2
  local deadline=$(( SECONDS + limit ))
  local pid
  until "$@" >/dev/null 2>&1; do
    (( SECONDS < deadline )) || { log "timed out waiting for $what"; return 1; }
    for pid in "${pids[@]}"; do
      kill -0 "$pid" 2>/dev/null || { log "a process exited while waiting for $what"; return 1; }
    done
    sleep 0.1
  done
}

kubectl="${KUBECTL:-$(dpkg -L kubectl 2>/dev/null | grep '/kubectl\.1\.33$' | head -n1 || true)}"
kubectl="${kubectl:-$(command -v kubectl || true)}"

etcd_port=$(free_port); etcd_peer_port=$(free_port)
api_port=$(free_port); kcm_port=$(free_port)

# --- PKI ------------------------------------------------------------------------
cd "$dir"
ossl() { openssl "$@" 2>/dev/null; }
ossl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
  -subj "/CN=hibernator-testbed-ca" -keyout ca.key -out ca.crt \
  -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign,digitalSignature
# cert NAME SUBJECT EXTENSIONS
cert() {
  ossl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -subj "$2" -keyout "$1.key" -out "$1.csr"
  printf '%s\n' "$3" > "$1.ext"
  ossl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 1 \
    -extfile "$1.ext" -out "$1.crt"
}
cert apiserver "/CN=kube-apiserver" \
  "subjectAltName=IP:127.0.0.1,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local
extendedKeyUsage=serverAuth
keyUsage=critical,digitalSignature"
client_ext="extendedKeyUsage=clientAuth
keyUsage=critical,digitalSignature"
cert admin "/O=system:masters/CN=admin" "$client_ext"
cert kcm "/CN=system:kube-controller-manager" "$client_ext"
cert kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" "$client_ext"
# Service-account token signing key pair (RSA: every verifier accepts RS256).
ossl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out sa.key
ossl pkey -in sa.key -pubout -out sa.pub

kubeconfig() { # kubeconfig FILE CERT
  cat > "$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: testbed
  cluster:
    server: https://127.0.0.1:$api_port
    certificate-authority: $dir/ca.crt
users:
- name: $2
  user:
    client-certificate: $dir/$2.crt
    client-key: $dir/$2.key
contexts:
- name: testbed
  context: {cluster: testbed, user: $2}
current-context: testbed
EOF
}
kubeconfig admin.kubeconfig admin
kubeconfig kcm.kubeconfig kcm

cat > audit-policy.yaml <<'EOF'
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: None
  verbs: [get, list, watch]
- level: Metadata
  resources: [{group: "", resources: [secrets, configmaps]}, {group: authentication.k8s.io, resources: [tokenreviews]}]
- level: Request
EOF

# --- etcd ---------------------------------------------------------------------------
t0=$(now)
"$bin/etcd" \
  --name=testbed \
  --data-dir="$dir/etcd" \
  --listen-client-urls="http://127.0.0.1:$etcd_port" \
  --advertise-client-urls="http://127.0.0.1:$etcd_port" \
  --listen-peer-urls="http://127.0.0.1:$etcd_peer_port" \
  --initial-advertise-peer-urls="http://127.0.0.1:$etcd_peer_port" \
  --initial-cluster="testbed=http://127.0.0.1:$etcd_peer_port" \
  --unsafe-no-fsync \
  --log-level=warn \
  > etcd.log 2>&1 &
pids+=($!)
wait_for 30 "etcd /health" curl -fsS "http://127.0.0.1:$etcd_port/health"
log "etcd healthy after $(since "$t0")"

# --- kube-apiserver ---------------------------------------------------------------------
t1=$(now)
"$bin/kube-apiserver" \
  --etcd-servers="http://127.0.0.1:$etcd_port" \
  --bind-address=127.0.0.1 \
  --advertise-address=127.0.0.1 \
  --secure-port="$api_port" \
  --tls-cert-file="$dir/apiserver.crt" \
  --tls-private-key-file="$dir/apiserver.key" \
  --client-ca-file="$dir/ca.crt" \
  --requestheader-client-ca-file="$dir/ca.crt" \
  --requestheader-allowed-names=front-proxy-client \
  --requestheader-username-headers=X-Remote-User \
  --requestheader-group-headers=X-Remote-Group \
  --requestheader-extra-headers-prefix=X-Remote-Extra- \
  --authorization-mode=Node,RBAC \
  --service-account-issuer=https://kubernetes.default.svc.cluster.local \
  --service-account-key-file="$dir/sa.pub" \
  --service-account-signing-key-file="$dir/sa.key" \
  --service-cluster-ip-range=10.0.0.0/24 \
  --kubelet-client-certificate="$dir/kubelet-client.crt" \
  --kubelet-client-key="$dir/kubelet-client.key" \
  --allow-privileged=true \
  --endpoint-reconciler-type=none \
  --audit-policy-file="$dir/audit-policy.yaml" \
  --audit-log-path="$dir/audit.log" \
  --audit-log-mode=blocking \
  > apiserver.log 2>&1 &
pids+=($!)
readyz() { curl -fsS --cacert "$dir/ca.crt" --cert "$dir/admin.crt" --key "$dir/admin.key" \
  "https://127.0.0.1:$api_port/readyz"; }
wait_for 120 "kube-apiserver /readyz" readyz
log "kube-apiserver ready after $(since "$t1") (etcd + apiserver: $(since "$t0"))"

if [[ -n "$kubectl" ]]; then
  "$kubectl" --kubeconfig admin.kubeconfig version >&2 || true
  "$kubectl" --kubeconfig admin.kubeconfig get ns >&2
else
  log "no kubectl found; skipped 'kubectl get ns'"
fi

# --- kube-controller-manager -----------------------------------------------------
testbed_controllers=job-controller,cronjob-controller,ttl-after-finished-controller
testbed_controllers+=,deployment-controller,replicaset-controller,disruption-controller
testbed_controllers+=,garbage-collector-controller,pod-garbage-collector-controller,namespace-controller
testbed_controllers+=,serviceaccount-controller,serviceaccount-token-controller
testbed_controllers+=,root-ca-certificate-publisher-controller,clusterrole-aggregation-controller
testbed_controllers+=,endpointslice-controller
t2=$(now)
"$bin/kube-controller-manager" \
  --kubeconfig="$dir/kcm.kubeconfig" \
  --authentication-kubeconfig="$dir/kcm.kubeconfig" \
  --authorization-kubeconfig="$dir/kcm.kubeconfig" \
  --bind-address=127.0.0.1 \
  --secure-port="$kcm_port" \
  --controllers="${KCM_CONTROLLERS:-$testbed_controllers}" \
  --use-service-account-credentials \
  --service-account-private-key-file="$dir/sa.key" \
  --root-ca-file="$dir/ca.crt" \
  --flex-volume-plugin-dir="$dir/flexvolume" \
  --cluster-signing-cert-file="$dir/ca.crt" \
  --cluster-signing-key-file="$dir/ca.key" \
  --leader-elect-lease-duration=15s \
  --leader-elect-renew-deadline=10s \
  --leader-elect-retry-period=2s \
  > controller-manager.log 2>&1 &
pids+=($!)
api_get() { curl -fsS --cacert "$dir/ca.crt" --cert "$dir/admin.crt" --key "$dir/admin.key" \
  "https://127.0.0.1:$api_port$1"; }
wait_for 60 "controller-manager leader lease" api_get /apis/coordination.k8s.io/v1/namespaces/kube-system/leases/kube-controller-manager
log "controller-manager leader after $(since "$t2"): $(api_get /apis/coordination.k8s.io/v1/namespaces/kube-system/leases/kube-controller-manager | grep -o '"holderIdentity": *"[^"]*"')"
wait_for 30 "controller-manager /healthz" curl -fsSk "https://127.0.0.1:$kcm_port/healthz"
log "controller-manager /healthz ok after $(since "$t2")"
wait_for 60 "ServiceAccount default/default" api_get /api/v1/namespaces/default/serviceaccounts/default
log "ServiceAccount default/default exists after $(since "$t2")"

# A short-lived token for it through the TokenRequest API, checked by TokenReview.
token=$(curl -fsS --cacert ca.crt --cert admin.crt --key admin.key -H 'Content-Type: application/json' \
  -d '{"apiVersion":"authentication.k8s.io/v1","kind":"TokenRequest","spec":{"expirationSeconds":600}}' \
  "https://127.0.0.1:$api_port/api/v1/namespaces/default/serviceaccounts/default/token" \
  | sed -n 's/.*"token": *"\([^"]*\)".*/\1/p')
review=$(curl -fsS --cacert ca.crt --cert admin.crt --key admin.key -H 'Content-Type: application/json' \
  -d "{\"apiVersion\":\"authentication.k8s.io/v1\",\"kind\":\"TokenReview\",\"spec\":{\"token\":\"$token\"}}" \
  "https://127.0.0.1:$api_port/apis/authentication.k8s.io/v1/tokenreviews")
grep -q '"authenticated": *true' <<<"$review" || { log "TokenReview failed: $review"; exit 1; }
log "TokenReview of a default/default token: authenticated"
grep -q '"kind":"Event"' audit.log && log "audit log written ($(wc -l < audit.log) events)"

wait_for 30 "ConfigMap default/kube-root-ca.crt" api_get /api/v1/namespaces/default/configmaps/kube-root-ca.crt
log "ConfigMap default/kube-root-ca.crt exists (projected service-account volumes need it)"

log "total start-up (etcd -> ServiceAccount): $(since "$t0")"

# The Job controller (running under its own service-account credentials) acts:
# a Job gets a Pod (which stays Pending: there is no kubelet here).
curl -fsS -o /dev/null --cacert ca.crt --cert admin.crt --key admin.key -H 'Content-Type: application/json' \
  -d '{"apiVersion":"batch/v1","kind":"Job","metadata":{"name":"smoke"},"spec":{"template":{"spec":{"restartPolicy":"Never","containers":[{"name":"c","image":"example.invalid/none"}]}}}}' \
  "https://127.0.0.1:$api_port/apis/batch/v1/namespaces/default/jobs"
t4=$(now)
job_pod() { api_get "/api/v1/namespaces/default/pods?labelSelector=job-name%3Dsmoke" | grep -q '"generateName": *"smoke-"'; }
wait_for 30 "a Pod for Job default/smoke" job_pod
log "Job controller created the Job's Pod after $(since "$t4")"
t3=$(now)
for (( i = ${#pids[@]} - 1; i >= 0; i-- )); do stop "${pids[i]}"; done
pids=()
log "stopped controller-manager, apiserver, etcd in $(since "$t3")"
echo "ok"
