# shellcheck shell=bash
# Teardown used by `down` and by `up` when it finds stale state. Sourced after
# lib.sh. Every step tolerates "nothing there": it must work after a clean
# down, after a half-failed up, and after every cluster process was SIGKILLed
# (then shims, container processes, mounts, netns, bridges and iptables chains
# are left behind).

# Order matters: kubelet first so it does not restart what we stop.
DAEMONS=(kube-proxy kubelet kube-scheduler kube-controller-manager kube-apiserver etcd containerd)

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
	etcd | kube-* | kubelet | containerd | containerd-shim*) ;;
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
	log "killing ${alive[*]} (did not stop on SIGTERM within ${wait}s)"
	kill -KILL "${alive[@]}" 2>/dev/null || true
	sleep 0.2
}

stop_daemon() {
	local name=$1 pidf=$RUN_DIR/$1.pid pid
	[ -f "$pidf" ] || return 0
	pid=$(cat "$pidf" 2>/dev/null || true)
	if [[ $pid =~ ^[0-9]+$ ]] && is_ours "$pid"; then
		stop_pids 10 "$pid"
	elif [ -n "$pid" ]; then
		log "stale PID file for $name ($pid is not ours or gone); ignoring it"
	fi
	rm -f "$pidf"
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
# (KUBE-*, CNI-*) and our own rules (comment podrunner-cluster), table by
# table, first the rules that jump to them, then the chains.
clean_iptables() {
	local ipt table rule chain
	for ipt in iptables ip6tables; do
		command -v "$ipt" >/dev/null || continue
		for table in filter nat mangle raw; do
			"$ipt" -t "$table" -S >/dev/null 2>&1 || continue
			# Rules in built-in chains that jump to our chains or carry our comment.
			while read -r rule; do
				[ -n "$rule" ] || continue
				eval "$ipt -t $table -D ${rule#-A }" 2>/dev/null || true
			done < <("$ipt" -t "$table" -S | grep -E '^-A (INPUT|OUTPUT|FORWARD|PREROUTING|POSTROUTING) ' |
				grep -E -e '-j (KUBE-|CNI-)' -e 'podrunner-cluster' || true)
			mapfile -t chains < <("$ipt" -t "$table" -S | awk '$1 == "-N" && ($2 ~ /^KUBE-/ || $2 ~ /^CNI-/) {print $2}')
			for chain in "${chains[@]}"; do "$ipt" -t "$table" -F "$chain" 2>/dev/null || true; done
			for chain in "${chains[@]}"; do "$ipt" -t "$table" -X "$chain" 2>/dev/null || true; done
		done
	done
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
	# containerd still runs, then the rest in reverse start order.
	stop_daemon kube-proxy
	stop_daemon kubelet
	remove_sandboxes
	for d in "${DAEMONS[@]}"; do stop_daemon "$d"; done
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
