# shellcheck shell=bash
# Shared settings and helpers for the hack/cluster scripts. Sourced, not run.
#
# Everything machine-wide lives outside the clone so that a later run from
# another folder (CI uses a fresh clone) finds and cleans what an earlier run
# left behind.

K8S_VERSION=v1.36.3          # k8s.io/kubernetes; staging modules are v0.36.3
ETCD_VERSION=v3.6.8          # the etcd version k8s v1.36.3's go.mod pins
CRICTL_VERSION=v1.36.0
# containerd from its Go module, not Debian's 1.6: image volumes (the pod's
# agent from the helper image without a second container) need 2.1 or later.
CONTAINERD_VERSION=v2.4.2
PAUSE_TAG=3.10
BUILD_DATE=2026-01-01T00:00:00Z  # fixed so an unchanged rebuild does not relink

CLUSTER_CACHE=${PODRUNNER_CLUSTER_CACHE:-/var/cache/podrunner-cluster}
BIN_DIR=$CLUSTER_CACHE/$K8S_VERSION/bin
# Our containerd, its shim and ctr come before Debian's (the shim is looked
# up on containerd's PATH).
PATH="$BIN_DIR:$PATH"
# ctr 2.x repeats the daemon's deprecation notices (cgroup v1, registry
# configs) on every command.
export CONTAINERD_SUPPRESS_DEPRECATION_WARNINGS=1
STATE_DIR=${PODRUNNER_CLUSTER_STATE:-/var/lib/podrunner-cluster}
RUN_DIR=$STATE_DIR/run     # PID files
LOG_DIR=$STATE_DIR/logs
PKI_DIR=$STATE_DIR/pki
CONF_DIR=$STATE_DIR/conf
KUBECONFIG_ADMIN=$STATE_DIR/admin.kubeconfig

# Networking. 10.x ranges are picked at run time to avoid eth0's network
# (see pick_ranges); these defaults are what is used on this machine.
NODE_NAME=podrunner-node
NODE_BRIDGE=prnode0     # port-less bridge holding the node /32
POD_BRIDGE=prcni0       # CNI bridge for pods
CNI_NET_NAME=podrunner

CONTAINERD_ROOT=$STATE_DIR/containerd
CONTAINERD_STATE=/run/podrunner-cluster/containerd
CONTAINERD_SOCK=/run/podrunner-cluster/containerd/containerd.sock
KUBELET_ROOT=$STATE_DIR/kubelet
CNI_CONF_DIR=$STATE_DIR/cni/net.d
CNI_BIN_DIR=/usr/lib/cni

# The container registry (hack/registry): CNCF distribution on the node
# address, TLS from the cluster CA, htpasswd (bcrypt) basic auth. containerd
# uses it as the mirror of docker.io (hosts.toml under $REGISTRY_HOSTS_DIR).
REGISTRY_PORT=5000
REGISTRY_DIR=$STATE_DIR/registry      # storage, htpasswd, passwords
REGISTRY_HOSTS_DIR=$STATE_DIR/conf/certs.d
REGISTRY_NODE_USER=podrunner-node     # the node's pull credentials
REGISTRY_PUSH_USER=podrunner-push     # what the scripts and tests push with

log() { printf '[cluster %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

need_root() {
	[ "$(id -u)" = 0 ] || die "must run as root (it creates bridges, mounts and iptables rules)"
}

# The address ranges. A candidate /16 is used only if it overlaps no route of
# the machine outside our own bridges, so eth0's network is never shadowed. All
# addresses live on interfaces this script creates; nothing routes off the
# machine. The choice is remembered in $STATE_DIR/ranges so a restart keeps it.
ip2int() { local IFS=.; set -- $1; echo $(( ($1<<24) + ($2<<16) + ($3<<8) + $4 )); }
cidr_overlaps() { # cidr_overlaps A/len B/len
	local a=${1%/*} al=${1#*/} b=${2%/*} bl=${2#*/}
	[ "$al" = "$1" ] && al=32
	[ "$bl" = "$2" ] && bl=32
	local l=$(( al < bl ? al : bl ))
	local mask=$(( l == 0 ? 0 : (0xffffffff << (32 - l)) & 0xffffffff ))
	(( ($(ip2int "$a") & mask) == ($(ip2int "$b") & mask) ))
}
pick_ranges() {
	local p r routes=() ok
	if [ -s "$STATE_DIR/ranges" ]; then
		RANGE_PREFIX=$(cat "$STATE_DIR/ranges")
	else
		RANGE_PREFIX=
		mapfile -t routes < <(ip -4 route show table all |
			grep -v -e "dev $NODE_BRIDGE" -e "dev $POD_BRIDGE" -e '^default' |
			awk '{d=$1; if (d=="local"||d=="broadcast"||d=="unreachable"||d=="blackhole") d=$2; print d}')
		for p in 10.244 10.213 10.187 172.30; do
			ok=1
			for r in "${routes[@]}"; do
				if cidr_overlaps "$p.0.0/16" "$r"; then ok=0; break; fi
			done
			if [ $ok = 1 ]; then RANGE_PREFIX=$p; break; fi
		done
		[ -n "${RANGE_PREFIX:-}" ] || die "no free private /16 for the cluster (tried 10.244, 10.213, 10.187, 172.30)"
	fi
	NODE_IP=$RANGE_PREFIX.255.1         # /32 on $NODE_BRIDGE
	CLUSTER_CIDR=$RANGE_PREFIX.0.0/17   # pods; the node gets a /24 of it
	SERVICE_CIDR=$RANGE_PREFIX.128.0/18 # services
	KUBERNETES_SVC_IP=$RANGE_PREFIX.128.1
	REGISTRY=$NODE_IP:$REGISTRY_PORT
}
