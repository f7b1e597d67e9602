# shellcheck shell=bash
# Starting and watching the cluster's daemons; used by `up` and
# `restart`. Sourced after lib.sh and lib-down.sh (is_ours), with
# pick_ranges done (NODE_IP, SERVICE_CIDR).

kubectl_() { "$BIN_DIR/kubectl" --kubeconfig "$KUBECONFIG_ADMIN" --request-timeout=5s "$@"; }

daemon_alive() {
	local pid
	pid=$(cat "$RUN_DIR/$1.pid" 2>/dev/null) && [[ $pid =~ ^[0-9]+$ ]] && is_ours "$pid"
}

# start_daemon NAME BINARY ARGS...: background process, own session, stdout
# and stderr to $LOG_DIR/NAME.log, PID file checked against its command line.
start_daemon() {
	local name=$1 pid
	shift
	[ -f "$LOG_DIR/$name.log" ] && mv -f "$LOG_DIR/$name.log" "$LOG_DIR/$name.log.prev"
	setsid "$@" >"$LOG_DIR/$name.log" 2>&1 </dev/null &
	pid=$!
	echo "$pid" >"$RUN_DIR/$name.pid"
	sleep 0.1
	is_ours "$pid" || { tail -20 "$LOG_DIR/$name.log" >&2; die "$name exited at once (log: $LOG_DIR/$name.log)"; }
}

# wait_for WHAT SECONDS DAEMON COMMAND...: polls COMMAND until it succeeds.
wait_for() {
	local what=$1 secs=$2 daemon=$3 deadline
	shift 3
	deadline=$((SECONDS + secs))
	until "$@" >/dev/null 2>&1; do
		if [ -n "$daemon" ] && ! daemon_alive "$daemon"; then
			tail -30 "$LOG_DIR/$daemon.log" >&2
			die "$daemon died while waiting for $what (log: $LOG_DIR/$daemon.log)"
		fi
		if [ $SECONDS -ge "$deadline" ]; then
			[ -n "$daemon" ] && tail -30 "$LOG_DIR/$daemon.log" >&2
			die "timed out after ${secs}s waiting for $what (logs: $LOG_DIR)"
		fi
		sleep 0.25
	done
}

tcp_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

# start_apiserver: kube-apiserver as `up` runs it (does not wait for it).
start_apiserver() {
	start_daemon kube-apiserver "$BIN_DIR/kube-apiserver" \
		--advertise-address "$NODE_IP" --bind-address "$NODE_IP" --secure-port 6443 \
		--etcd-servers "http://$NODE_IP:2379" \
		--service-cluster-ip-range "$SERVICE_CIDR" \
		--client-ca-file "$PKI_DIR/ca.crt" \
		--tls-cert-file "$PKI_DIR/apiserver.crt" --tls-private-key-file "$PKI_DIR/apiserver.key" \
		--kubelet-client-certificate "$PKI_DIR/apiserver-kubelet-client.crt" \
		--kubelet-client-key "$PKI_DIR/apiserver-kubelet-client.key" \
		--kubelet-certificate-authority "$PKI_DIR/ca.crt" \
		--kubelet-preferred-address-types InternalIP \
		--service-account-issuer https://kubernetes.default.svc.cluster.local \
		--service-account-key-file "$PKI_DIR/sa.pub" \
		--service-account-signing-key-file "$PKI_DIR/sa.key" \
		--authorization-mode Node,RBAC \
		--enable-admission-plugins NodeRestriction \
		--allow-privileged=true --profiling=false --v=1
}

# start_registry_daemon: the registry with the config, users and data `up`
# made (restart starts it again the same way).
start_registry_daemon() {
	local bindir
	bindir=$("$here/../registry/install") || die "building the registry failed"
	# No tracing exporter: nothing of the registry talks to anything.
	OTEL_SDK_DISABLED=true OTEL_TRACES_EXPORTER=none \
		start_daemon registry "$bindir/registry" serve "$CONF_DIR/registry.yml"
}

registry_ready() { curl -fsS --cacert "$PKI_DIR/ca.crt" -o /dev/null "https://$REGISTRY/"; }

start_etcd() {
	start_daemon etcd "$BIN_DIR/etcd" --name podrunner --data-dir "$STATE_DIR/etcd" \
		--listen-client-urls "http://$NODE_IP:2379" --advertise-client-urls "http://$NODE_IP:2379" \
		--listen-peer-urls "http://$NODE_IP:2380" --initial-advertise-peer-urls "http://$NODE_IP:2380" \
		--initial-cluster "podrunner=http://$NODE_IP:2380" \
		--unsafe-no-fsync --snapshot-count 10000 --log-level warn
}

# start_kubelet: the kubelet with the config files `up` wrote.
start_kubelet() {
	start_daemon kubelet "$BIN_DIR/kubelet" --config "$CONF_DIR/kubelet.yaml" \
		--kubeconfig "$CONF_DIR/kubelet.kubeconfig" --root-dir "$KUBELET_ROOT" \
		--hostname-override "$NODE_NAME" --node-ip "$NODE_IP" --v=1
}

node_ready() {
	kubectl_ get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null | grep -qx True
}
