//go:build !podrunner_shellonly

package main

import (
	"fmt"
	"net"
	"net/url"

	"k8s.io/client-go/tools/clientcmd"
)

// kubeTarget reads the kubeconfig (--kubeconfig, else $KUBECONFIG or
// ~/.kube/config, as kubectl) for the namespace and the API server.
func (o *execOptions) kubeTarget() (*kubeTarget, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if o.kubeconfig != "" {
		rules.ExplicitPath = o.kubeconfig
	}
	cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{})
	rc, err := cc.ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("kubeconfig: %w (name one with --kubeconfig, or set KUBECONFIG)", err)
	}
	t := &kubeTarget{namespace: o.namespace}
	if t.namespace == "" {
		// Namespace() answers "default" when the context names none.
		if t.namespace, _, err = cc.Namespace(); err != nil || t.namespace == "" {
			t.namespace = "default"
		}
	}
	if o.listenAddress != "" {
		t.listen, err = listenHostPort(o.listenAddress)
		return t, err
	}
	ip, err := routeTo(rc.Host)
	if err != nil {
		return nil, err
	}
	t.listen = net.JoinHostPort(ip.String(), "0")
	return t, nil
}

// routeTo returns this machine's address on the route to the API server:
// the pods' node reaches this machine the way this machine reaches the
// API server, at least on local clusters. A loopback answer (an API
// server behind a port forward, as kind and minikube set up) is of no use
// to pods, so it is an error asking for --listen-address.
func routeTo(apiServer string) (net.IP, error) {
	u, err := url.Parse(apiServer)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("kubeconfig: API server %q is not a URL: pass --listen-address", apiServer)
	}
	port := u.Port()
	if port == "" {
		port = "443"
		if u.Scheme == "http" {
			port = "80"
		}
	}
	// A UDP "connection" sends nothing; it only asks the kernel for the
	// route and so the local address.
	c, err := net.Dial("udp", net.JoinHostPort(u.Hostname(), port))
	if err != nil {
		return nil, fmt.Errorf("find this machine's address on the route to the API server %s: %w (pass --listen-address)", apiServer, err)
	}
	defer c.Close()
	ip := c.LocalAddr().(*net.UDPAddr).IP
	if ip.IsLoopback() {
		return nil, fmt.Errorf("the API server %s is reached over loopback, which pods cannot use to reach this machine: "+
			"pass --listen-address with an address of this machine the cluster's pods can reach", apiServer)
	}
	return ip, nil
}
