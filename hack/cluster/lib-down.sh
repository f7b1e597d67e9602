# shellcheck shell=bash
# Teardown used by `down` and by `up` when it finds stale state. Sourced after
# lib.sh. Every step tolerates "nothing there": it must work after a clean
# down, after a half-failed up, and after every cluster process was SIGKILLed
# (then shims, container processes, mounts, netns, bridges and iptables chains
# are left behind).

# Order matters: kubelet first so it does not restart what we stop.
DAEMONS=(kube-proxy kubelet kube-scheduler kube-controller-manager kube-apiserver etcd containerd registry)

# Sysctls that up, the kubelet or kube-proxy change; saved once by up.
SAVED_SYSCTLS=(
	net.ipv4.ip_forward net.bridge.bridge-nf-call-iptables net.bridge.bridge-nf-call-ip6tables
	vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops
	kernel.keys.root_maxkeys kernel.keys.root_maxbytes net.ipv4.conf.all.route_localnet
)

# is_ours PID: the process's command line names our state dir or socket, so a
# recycled PID or someone else's process is never killed.
is_ours() {
	local cmd exe
	cmd=$(tr '\0' ' ' 2>/dev/null <"/proc/$1/cmdline") || return 1
	exe=${cmd%% *}
	case ${exe##*/} in
	etcd | kube-* | kubelet | containerd | containerd-shim* | registry) ;;
	*) return 1 ;;
	esac
	[[ $cmd == *"$STATE_DIR/"* || $cmd == *"$CONTAINERD_SOCK"* ]]
}

# our_pids: every live process whose command line carries our marker
# (daemons and containerd shims), found even when the PID files are gone.
our_pids() {
	local f pid
	# One grep over all command lines; is_ours then checks each candidate.
	for f in $(grep -lsF -e "$STATE_DIR/" -e "$CONTAINERD_SOCK" /proc/[0-9]*/cmdline); do
		pid=${f#/proc/}
		pid=${pid%/cmdline}
		[ "$pid" = $$ ] || [ "$pid" = "$BASHPID" ] && continue
		is_ours "$pid" && echo "$pid"
	done
	return 0
}

# stop_pids SIGNAL-WAIT-SECONDS PID...: TERM, wait, then KILL.
stop_pids() {
	local wait=$1 pid deadline alive
	shift
	[ $# -gt 0 ] || return 0
	kill -TERM "$@" 2>/dev/null || true
	deadline=$((SECONDS + wait))
	while :; do
		alive=()
		for pid in "$@"; do kill -0 "$pid" 2>/dev/null && alive+=("$pid"); done
		[ "${#alive[@]}" = 0 ] && return 0
		[ $SECONDS -ge "$deadline" ] && break
		sleep 0.2
	done
	[ "$wait" -lt 5 ] || log "killing ${alive[*]} (did not stop on SIGTERM within ${wait}s)"
	kill -KILL "${alive[@]}" 2>/dev/null || true
	sleep 0.2
}

# stop_daemons WAIT NAME...: stops the daemons of these PID files together
# (SIGTERM, SIGKILL after WAIT seconds). State is wiped afterwards, so a
# graceful shutdown buys nothing beyond the CRI cleanup.
stop_daemons() {
	local wait=$1 name pidf pid pids=()
	shift
	for name in "$@"; do
		pidf=$RUN_DIR/$name.pid
		[ -f "$pidf" ] || continue
		pid=$(cat "$pidf" 2>/dev/null || true)
		if [[ $pid =~ ^[0-9]+$ ]] && is_ours "$pid"; then
			pids+=("$pid")
		elif [ -n "$pid" ]; then
			log "stale PID file for $name ($pid is gone or not ours); ignoring it"
		fi
	done
	stop_pids "$wait" "${pids[@]}"
	for name in "$@"; do rm -f "$RUN_DIR/$name.pid"; done
}

# Graceful part: while kubelet is stopped and containerd still answers, stop
# and remove pod sandboxes through CRI so the CNI plugins undo their network
# setup (veths, netns, host-local IPs, portmap chains).
remove_sandboxes() {
	local crictl=$BIN_DIR/crictl pods
	[ -x "$crictl" ] && [ -S "$CONTAINERD_SOCK" ] || return 0
	local c=("$crictl" --runtime-endpoint "unix://$CONTAINERD_SOCK" --timeout 10s)
	pods=$("${c[@]}" pods -q 2>/dev/null) || return 0
	[ -n "$pods" ] || return 0
	log "removing $(wc -w <<<"$pods") pod sandboxes"
	# shellcheck disable=SC2086
	timeout 60 "${c[@]}" stopp $pods >/dev/null 2>&1 || log "crictl stopp failed; continuing"
	# shellcheck disable=SC2086
	timeout 60 "${c[@]}" rmp -f $pods >/dev/null 2>&1 || log "crictl rmp failed; continuing"
}

# Container processes live in the kubelet's /kubepods cgroups (cgroupfs
# driver); after a crash nothing else would ever stop them.
kill_pod_cgroups() {
	local ctrl dir tasks round
	for round in 1 2 3 4 5; do
		tasks=$(cat /sys/fs/cgroup/*/kubepods/cgroup.procs /sys/fs/cgroup/*/kubepods/*/cgroup.procs \
			/sys/fs/cgroup/*/kubepods/*/*/cgroup.procs /sys/fs/cgroup/*/kubepods/*/*/*/cgroup.procs 2>/dev/null | sort -u || true)
		[ -n "$tasks" ] || break
		# shellcheck disable=SC2086
		kill -KILL $tasks 2>/dev/null || true
		sleep 0.3
	done
	for ctrl in /sys/fs/cgroup/*/; do
		[ -d "$ctrl/kubepods" ] || continue
		find "$ctrl/kubepods" -depth -type d -exec rmdir {} + 2>/dev/null || true
	done
}

unmount_ours() {
	local mps mp i
	for i in 1 2 3; do
		mapfile -t mps < <(awk -v a="$STATE_DIR" -v b="/run/podrunner-cluster" \
			'index($5, a) == 1 || index($5, b) == 1 {print $5}' /proc/self/mountinfo | sort -r)
		[ "${#mps[@]}" = 0 ] && return 0
		for mp in "${mps[@]}"; do
			mp=$(printf '%b' "$mp") # mountinfo escapes spaces as \040
			umount "$mp" 2>/dev/null || umount -l "$mp" 2>/dev/null || true
		done
	done
	log "warning: mounts left under $STATE_DIR: ${mps[*]}"
}

# Network namespaces that containerd made for our pods (/run/netns/cni-*),
# recognised by an address in our pod range.
remove_netns() {
	local prefix ns
	prefix=$(cat "$STATE_DIR/ranges" 2>/dev/null || true)
	[ -n "$prefix" ] || return 0
	for ns in /run/netns/cni-*; do
		[ -e "$ns" ] || continue
		if ip netns exec "${ns##*/}" ip -4 -o addr show 2>/dev/null | grep -q " inet ${prefix//./\\.}\."; then
			ip netns delete "${ns##*/}" 2>/dev/null || { umount "$ns" 2>/dev/null; rm -f "$ns"; }
		fi
	done
}

remove_links() {
	local l
	for l in $(ip -o link show master "$POD_BRIDGE" 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1); do
		ip link delete "$l" 2>/dev/null || true
	done
	for l in "$POD_BRIDGE" "$NODE_BRIDGE"; do
		ip link show "$l" >/dev/null 2>&1 && ip link delete "$l"
	done
	return 0
}

# Removes the chains the kubelet, kube-proxy and the CNI plugins create
# (KUBE-*, CNI-*) and our own rules (comment podrunner-cluster): first the
# rules in built-in chains that jump to them, then the chains. One
# iptables-restore per table (each iptables call costs ~0.1 s); rule by rule
# if that fails.
clean_iptables() {
	local ipt table rules chains script
	for ipt in iptables ip6tables; do
		command -v "$ipt" >/dev/null || continue
		for table in filter nat mangle raw; do
			"$ipt" -t "$table" -S >/dev/null 2>&1 || continue
			mapfile -t rules < <("$ipt" -t "$table" -S | grep -E '^-A (INPUT|OUTPUT|FORWARD|PREROUTING|POSTROUTING) ' |
				grep -E -e '-j (KUBE-|CNI-)' -e 'podrunner-cluster' || true)
			mapfile -t chains < <("$ipt" -t "$table" -S | awk '$1 == "-N" && ($2 ~ /^KUBE-/ || $2 ~ /^CNI-/) {print $2}')
			[ "${#rules[@]}" -gt 0 ] || [ "${#chains[@]}" -gt 0 ] || continue
			script="*$table"$'\n'
			for r in "${rules[@]}"; do [ -n "$r" ] && script+="-D ${r#-A }"$'\n'; done
			for c in "${chains[@]}"; do script+="-F $c"$'\n'; done
			for c in "${chains[@]}"; do script+="-X $c"$'\n'; done
			script+="COMMIT"$'\n'
			"$ipt-restore" --noflush <<<"$script" 2>/dev/null && continue
			for r in "${rules[@]}"; do [ -n "$r" ] && eval "$ipt -t $table -D ${r#-A }" 2>/dev/null; done
			for c in "${chains[@]}"; do "$ipt" -t "$table" -F "$c" 2>/dev/null; done
			for c in "${chains[@]}"; do "$ipt" -t "$table" -X "$c" 2>/dev/null; done
		done
	done
	return 0
}

restore_sysctls() {
	local f=$STATE_DIR/sysctl.saved k v
	[ -f "$f" ] || return 0
	while IFS='=' read -r k v; do
		[ -n "$k" ] && sysctl -q -w "$k=$v" >/dev/null 2>&1 || true
	done <"$f"
	rm -f "$f"
}

cluster_down() {
	local d pids
	mkdir -p "$RUN_DIR"
	# kubelet first (it would recreate sandboxes), then CRI cleanup while
	# containerd still runs, then the rest together; etcd last, since the
	# API server's shutdown hangs without it.
	stop_daemons 5 kube-proxy kubelet
	remove_sandboxes
	stop_daemons 3 kube-scheduler kube-controller-manager kube-apiserver containerd registry
	stop_daemons 1 "${DAEMONS[@]}"
	# Anything of ours left without a PID file: shims, daemons of a crashed run.
	mapfile -t pids < <(our_pids)
	if [ "${#pids[@]}" -gt 0 ]; then
		log "stopping leftover processes: ${pids[*]}"
		stop_pids 5 "${pids[@]}"
	fi
	kill_pod_cgroups
	remove_netns
	unmount_ours
	remove_links
	clean_iptables
	restore_sysctls
	# The kubelet links /var/log/containers/* to pod logs under our state dir.
	find /var/log/containers -maxdepth 1 -type l -lname "$STATE_DIR/*" -delete 2>/dev/null || true
	# Never delete through a mount that is still there (it could be a bind
	# mount of something else); the next down or up retries.
	if [ -n "$(awk -v a="$STATE_DIR" -v b=/run/podrunner-cluster 'index($5, a) == 1 || index($5, b) == 1' /proc/self/mountinfo)" ]; then
		log "warning: mounts under $STATE_DIR remain; state not removed"
		return 1
	fi
	# Fresh cluster each up: wipe state, keep logs for debugging.
	find "$STATE_DIR" -mindepth 1 -maxdepth 1 ! -name logs -exec rm -rf --one-file-system {} + 2>/dev/null || true
	rm -rf --one-file-system /run/podrunner-cluster
	return 0
}
