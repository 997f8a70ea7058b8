#!/bin/bash
# Single-node Kubernetes 1.20.2 (Debian source package) on the local Docker engine (dockershim).
# Usage: scripts/k8s-cluster.sh build|start|wait|status|stop|up|down
#   build : build binaries/images/PKI that are missing (idempotent; kube-apiserver, kubelet, kube-scheduler and
#           kube-controller-manager; EXTRA_BINS="" builds only the first two, and start uses what exists in $K8S/bin)
#   start : start etcd, kube-apiserver, [kube-controller-manager, kube-scheduler], kubelet
#   wait  : wait until the node is Ready
#   up    : build + start + wait        down : stop (same as stop)
#   stop  : delete pods, stop kubelet/scheduler/controller-manager/apiserver/etcd (by PID file),
#           remove kubelet-made containers, restore sysctls, remove /var/log/{pods,containers} if we made them
#   clean : stop + wipe $K8S/run (etcd data, kubelet dir). Binaries, images, PKI are kept.
# Everything lives under $K8S (default ~/.cache/valet-k8s). Needs root, Docker with cgroupfs driver, curl, bc, patch, openssl.
# Client: export KUBECONFIG=$K8S/admin.kubeconfig   (token auth, AlwaysAllow authz, https://127.0.0.1:6443)
# Pods: node name is "localhost"; images must be local (imagePullPolicy: Never/IfNotPresent), e.g. local/busybox.
# Outside $K8S this touches: Debian packages rsync (+ golang-1.19-go, gcc if missing) for the build;
# /var/log/pods and /var/log/containers (hard-coded in kubelet 1.20); sysctls vm.overcommit_memory,
# kernel.panic, kernel.panic_on_oops (set by kubelet at start, restored right after Ready and at stop);
# the docker engine (containers named k8s_*, images local/pause:3.2 and local/busybox:latest).
set -euo pipefail

K8S=${K8S:-${XDG_CACHE_HOME:-$HOME/.cache}/valet-k8s}
SRC=$K8S/src/kubernetes-1.20.2
BIN=$K8S/bin
RUN=$K8S/run
PKI=$K8S/pki
LOGS=$K8S/logs
# The node is named "localhost": kubelet rejects a loopback --node-ip, so the apiserver reaches the
# kubelet through the node's Hostname address (= node name) which resolves to 127.0.0.1 via /etc/hosts.
NODE=localhost
ETCD_PORT=${ETCD_PORT:-2379}
ETCD_PEER_PORT=${ETCD_PEER_PORT:-2380}
API_PORT=${API_PORT:-6443}
KUBELET_PORT=${KUBELET_PORT:-10250}
ORIG_TGZ=${ORIG_TGZ:-}        # optional path to kubernetes_1.20.5+really1.20.2.orig.tar.gz
export KUBECONFIG=$K8S/admin.kubeconfig

log() { echo "+++ [$(date +%T)] $*" >&2; }

build_env() {
  export PATH=/usr/lib/go-1.19/bin:$PATH GOCACHE=$K8S/gocache GO111MODULE=off CGO_ENABLED=0 \
         HOME=$K8S/home KUBE_BUILD_PLATFORMS=linux/amd64
  mkdir -p "$HOME"
}

fetch_source() {
  [ -d "$SRC" ] && return 0
  mkdir -p "$K8S/src" "$K8S/debs"
  if [ -z "$ORIG_TGZ" ]; then
    # needs a deb-src line for bookworm; use a private sources list so the system config is untouched
    local A=$K8S/apt; mkdir -p $A/lists/partial $A/cache/archives/partial
    # the deb-src twin of the machine's own Debian source (deb822 .sources or a one-line sources.list)
    local uri suite
    uri=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
    [ -n "$uri" ] || uri=$(awk '$1=="deb"{print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
    suite=$(. /etc/os-release && echo "$VERSION_CODENAME")
    [ -n "$uri" ] || { log "no Debian source URI found in the apt configuration"; exit 1; }
    echo "deb-src $uri $suite main" > $A/src.list
    local O=(-o Dir::Etc::SourceList=$A/src.list -o Dir::Etc::SourceParts=/dev/null
             -o Dir::State::Lists=$A/lists -o Dir::Cache=$A/cache)
    apt-get "${O[@]}" update -qq
    (cd "$K8S/src" && apt-get "${O[@]}" source --download-only kubernetes)
    ORIG_TGZ=$(ls "$K8S"/src/kubernetes_*.orig.tar.gz)
  fi
  tar -C "$K8S/src" -xzf "$ORIG_TGZ"
}

build() {
  mkdir -p "$BIN" "$LOGS" "$K8S/root"
  local need=()
  command -v rsync >/dev/null || need+=(rsync)     # hack/lib/golang.sh needs rsync
  command -v gcc >/dev/null || need+=(gcc libc6-dev)
  command -v bc >/dev/null || need+=(bc)
  [ -x /usr/lib/go-1.19/bin/go ] || need+=(golang-1.19-go)
  if [ ${#need[@]} -gt 0 ] || [ ! -x "$K8S/root/usr/bin/etcd" ]; then apt-get update -qq; fi
  [ ${#need[@]} -gt 0 ] && apt-get install -y -qq "${need[@]}"
  # etcd + busybox: unpack the Debian packages under $K8S/root (no system install, no service start)
  if [ ! -x "$K8S/root/usr/bin/etcd" ] || [ ! -x "$K8S/root/bin/busybox" ]; then
    mkdir -p "$K8S/debs"
    (cd "$K8S/debs" && apt-get download etcd-server busybox-static)
    for d in "$K8S"/debs/*.deb; do dpkg-deb -x "$d" "$K8S/root"; done
  fi
  local want=(kube-apiserver kubelet ${EXTRA_BINS-kube-controller-manager kube-scheduler})   # EXTRA_BINS="" for apiserver+kubelet only
  local missing=()
  for b in "${want[@]}"; do [ -x "$BIN/$b" ] || missing+=("$b"); done
  if [ ${#missing[@]} -gt 0 ]; then
    fetch_source
    build_env
    cd "$SRC"
    # this host has no CAP_SYS_RESOURCE, so runc cannot set the negative oom_score_adj (-998 sandbox,
    # -997 Guaranteed) dockershim asks for ("can't get final child's PID from pipe: EOF"): clamp to 0
    sed -i 's/defaultSandboxOOMAdj int = -998$/defaultSandboxOOMAdj int = 0 \/\/ local: no CAP_SYS_RESOURCE here/' \
      pkg/kubelet/dockershim/docker_sandbox.go
    sed -i 's/^\(\s*\)return guaranteedOOMScoreAdj$/\1return 0 \/\/ local: no CAP_SYS_RESOURCE here/' pkg/kubelet/qos/policy.go
    grep -q 'int = 0 // local' pkg/kubelet/dockershim/docker_sandbox.go && [ "$(grep -c 'return 0 // local' pkg/kubelet/qos/policy.go)" = 2 ] \
      || { log "the oom_score_adj edit did not apply"; exit 1; }
    # pkg/generated/openapi/zz_generated.openapi.go is not in the tarball: generate it
    [ -f pkg/generated/openapi/zz_generated.openapi.go ] || make generated_files
    for b in "${missing[@]}"; do
      log "building $b"
      make WHAT=cmd/$b
      cp "_output/local/bin/linux/amd64/$b" "$BIN/$b"
    done
    cd - >/dev/null
  fi
  build_images
  build_pki
}

build_images() {
  if ! docker image inspect local/pause:3.2 >/dev/null 2>&1; then
    mkdir -p "$K8S/images/pause"
    [ -f "$K8S/images/pause.c" ] || cp "$SRC/build/pause/linux/pause.c" "$K8S/images/pause.c"
    gcc -Os -Wall -Werror -static -DVERSION=v3.2-local -o "$K8S/images/pause/pause" "$K8S/images/pause.c"
    strip "$K8S/images/pause/pause"
    printf 'FROM scratch\nCOPY pause /pause\nUSER 65535:65535\nENTRYPOINT ["/pause"]\n' > "$K8S/images/pause/Dockerfile"
    DOCKER_BUILDKIT=0 docker build -q -t local/pause:3.2 "$K8S/images/pause"
  fi
  if ! docker image inspect local/busybox:latest >/dev/null 2>&1; then
    mkdir -p "$K8S/images/busybox"
    cp "$K8S/root/bin/busybox" "$K8S/images/busybox/busybox"
    printf 'FROM scratch\nCOPY busybox /bin/busybox\nRUN ["/bin/busybox", "--install", "-s", "/bin"]\nENV PATH=/bin\nCMD ["/bin/sh"]\n' \
      > "$K8S/images/busybox/Dockerfile"
    DOCKER_BUILDKIT=0 docker build -q -t local/busybox:latest "$K8S/images/busybox"
  fi
}

build_pki() {
  mkdir -p "$PKI"; cd "$PKI"
  if [ ! -f apiserver.crt ]; then
    cat > apiserver.cnf <<'EOF'
[req]
distinguished_name = dn
prompt = no
[dn]
CN = kube-apiserver
[ext]
basicConstraints = CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, IP:10.0.0.1, DNS:localhost, DNS:kubernetes, DNS:kubernetes.default, DNS:kubernetes.default.svc, DNS:kubernetes.default.svc.cluster.local
EOF
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 3650 -subj "/CN=local-k8s-ca" 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -keyout apiserver.key -out apiserver.csr -config apiserver.cnf 2>/dev/null
    openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out apiserver.crt \
      -days 3650 -extfile apiserver.cnf -extensions ext 2>/dev/null
  fi
  if [ ! -f sa.key ]; then
    openssl genrsa -out sa.key 2048 2>/dev/null; openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
  fi
  if [ ! -f tokens.csv ]; then
    printf 'admin-token-local,admin,admin,system:masters\nkubelet-token-local,system:node:%s,kubelet,system:nodes\n' "$NODE" > tokens.csv
  fi
  for who in admin kubelet; do
    cat > "$K8S/$who.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: local
  cluster:
    server: https://127.0.0.1:$API_PORT
    certificate-authority: $PKI/ca.crt
users:
- name: $who
  user:
    token: $who-token-local
contexts:
- name: local
  context: {cluster: local, user: $who, namespace: default}
current-context: local
EOF
  done
  cd - >/dev/null
}

# ---- process management -------------------------------------------------------------------
alive() { [ -f "$RUN/$1.pid" ] && kill -0 "$(cat "$RUN/$1.pid")" 2>/dev/null; }
spawn() { # name cmd...
  local name=$1; shift
  if alive "$name"; then log "$name already running (pid $(cat "$RUN/$name.pid"))"; return 0; fi
  nohup "$@" > "$LOGS/$name.log" 2>&1 &
  echo $! > "$RUN/$name.pid"
  log "started $name pid $!"
}
wait_http() { # url seconds
  local i; for i in $(seq 1 $(( $2 * 5 ))); do curl -sk --max-time 2 "$1" >/dev/null 2>&1 && return 0; sleep 0.2; done
  return 1
}

start() {
  mkdir -p "$RUN" "$LOGS"
  date +%s.%N > "$RUN/start.ts"
  # record state we may change so that stop can restore it
  [ -f "$RUN/sysctl.saved" ] || sysctl -n vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops > "$RUN/sysctl.saved"
  [ -f "$RUN/varlog.saved" ] || { for d in /var/log/pods /var/log/containers; do [ -e $d ] && echo "$d"; done; true; } > "$RUN/varlog.saved"

  spawn etcd "$K8S/root/usr/bin/etcd" --name default --data-dir "$RUN/etcd" \
    --listen-client-urls http://127.0.0.1:$ETCD_PORT --advertise-client-urls http://127.0.0.1:$ETCD_PORT \
    --listen-peer-urls http://127.0.0.1:$ETCD_PEER_PORT --initial-advertise-peer-urls http://127.0.0.1:$ETCD_PEER_PORT \
    --initial-cluster default=http://127.0.0.1:$ETCD_PEER_PORT
  wait_http http://127.0.0.1:$ETCD_PORT/health 60 || { log "etcd did not come up"; tail "$LOGS/etcd.log"; exit 1; }

  local admission=""
  [ -x "$BIN/kube-controller-manager" ] || admission="--disable-admission-plugins=ServiceAccount"
  spawn kube-apiserver "$BIN/kube-apiserver" \
    --etcd-servers=http://127.0.0.1:$ETCD_PORT \
    --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port=$API_PORT --insecure-port=0 \
    --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
    --client-ca-file="$PKI/ca.crt" --token-auth-file="$PKI/tokens.csv" \
    --authorization-mode=AlwaysAllow \
    --service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key" \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-cluster-ip-range=10.0.0.0/24 \
    --kubelet-preferred-address-types=Hostname --endpoint-reconciler-type=none \
    $admission
  wait_http https://127.0.0.1:$API_PORT/readyz 120 || { log "apiserver not ready"; tail -20 "$LOGS/kube-apiserver.log"; exit 1; }
  log "apiserver ready"

  if [ -x "$BIN/kube-controller-manager" ]; then
    spawn kube-controller-manager "$BIN/kube-controller-manager" --kubeconfig="$K8S/admin.kubeconfig" \
      --bind-address=127.0.0.1 --secure-port=10257 --port=0 --leader-elect=false \
      --service-account-private-key-file="$PKI/sa.key" --root-ca-file="$PKI/ca.crt" \
      --use-service-account-credentials=false --controllers='*,-nodeipam,-cloud-node-lifecycle,-service,-route'
  fi
  if [ -x "$BIN/kube-scheduler" ]; then
    spawn kube-scheduler "$BIN/kube-scheduler" --kubeconfig="$K8S/admin.kubeconfig" \
      --bind-address=127.0.0.1 --secure-port=10259 --port=0 --leader-elect=false
  fi

  if [ ! -x "$BIN/kubelet" ]; then log "no kubelet binary, control plane only"; return 0; fi
  mkdir -p "$RUN/kubelet" "$RUN/dockershim" "$RUN/volume-plugins"
  spawn kubelet "$BIN/kubelet" --kubeconfig="$K8S/kubelet.kubeconfig" \
    --hostname-override="$NODE" --address=127.0.0.1 --port=$KUBELET_PORT \
    --read-only-port=0 --healthz-bind-address=127.0.0.1 \
    --container-runtime=docker --pod-infra-container-image=local/pause:3.2 \
    --root-dir="$RUN/kubelet" --cert-dir="$RUN/kubelet/pki" \
    --experimental-dockershim-root-directory="$RUN/dockershim" \
    --volume-plugin-dir="$RUN/volume-plugins" \
    --cgroup-driver=cgroupfs --cgroups-per-qos=false --enforce-node-allocatable= \
    --fail-swap-on=false --make-iptables-util-chains=false --node-status-update-frequency=1s \
    --image-gc-high-threshold=100 --image-gc-low-threshold=99 \
    --eviction-hard= --eviction-soft= \
    --authentication-token-webhook=false --anonymous-auth=true --authorization-mode=AlwaysAllow
}

wait_ready() {
  local i
  for i in $(seq 1 600); do
    if kubectl get node "$NODE" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null | grep -q True; then
      local t0; t0=$(cat "$RUN/start.ts")
      log "node $NODE Ready after $(echo "$(date +%s.%N) - $t0" | bc) s since start"
      restore_sysctls   # kubelet sets them once at startup (setupKernelTunables); undo it on this shared host
      if alive kube-controller-manager; then
        # ServiceAccount admission is on: pods are refused until default/default has its token secret
        until [ -n "$(kubectl get sa default -o jsonpath='{.secrets[0].name}' 2>/dev/null)" ]; do sleep 0.5; done
        log "default service account token ready after $(echo "$(date +%s.%N) - $t0" | bc) s since start"
      fi
      return 0
    fi
    sleep 0.5
  done
  log "node not Ready after 300 s"; tail -20 "$LOGS/kubelet.log"; return 1
}

restore_sysctls() { # undo vm.overcommit_memory=1 kernel.panic=10 kernel.panic_on_oops=1 set by the kubelet
  [ -f "$RUN/sysctl.saved" ] || return 0
  local v=($(cat "$RUN/sysctl.saved"))
  sysctl -q -w vm.overcommit_memory=${v[0]} vm.panic_on_oom=${v[1]} kernel.panic=${v[2]} kernel.panic_on_oops=${v[3]} || true
}

status() {
  for n in kubelet kube-scheduler kube-controller-manager kube-apiserver etcd; do
    if alive $n; then echo "$n running pid $(cat "$RUN/$n.pid")"; else echo "$n stopped"; fi
  done
  kubectl get nodes -o wide 2>/dev/null || true
}

stop() {
  # delete pods first so kubelet removes its containers, then stop processes in reverse order
  if alive kube-apiserver && alive kubelet; then
    kubectl delete pods --all --all-namespaces --grace-period=0 --force --wait=false >/dev/null 2>&1 || true
    sleep 2
  fi
  for n in kubelet kube-scheduler kube-controller-manager kube-apiserver etcd; do
    if alive $n; then
      local p; p=$(cat "$RUN/$n.pid"); kill "$p"
      for i in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.2; done
      kill -0 "$p" 2>/dev/null && kill -9 "$p"
      log "stopped $n ($p)"
    fi
    rm -f "$RUN/$n.pid"
  done
  # containers created by the kubelet (dockershim labels them)
  local c; c=$(docker ps -aq --filter label=io.kubernetes.docker.type) || true
  [ -n "$c" ] && docker rm -f $c >/dev/null
  # unmount anything the kubelet left mounted (emptyDir tmpfs, secrets)
  grep -o " $RUN/kubelet[^ ]*" /proc/mounts | sort -r | xargs -r -n1 umount 2>/dev/null || true
  restore_sysctls; rm -f "$RUN/sysctl.saved"
  if [ -f "$RUN/varlog.saved" ]; then
    for d in /var/log/pods /var/log/containers; do grep -qx "$d" "$RUN/varlog.saved" || rm -rf "$d"; done
    rm -f "$RUN/varlog.saved"
  fi
}

case "${1:-up}" in
  build) build ;;
  start) build_pki; start ;;
  wait) wait_ready ;;
  up) build; start; wait_ready ;;
  status) status ;;
  stop|down) stop ;;
  clean) stop; rm -rf "$RUN" ;;
  *) echo "usage: $0 build|start|wait|up|status|stop|clean"; exit 2 ;;
esac
