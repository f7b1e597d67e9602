package kubernetes

import (
	"context"
	"fmt"
	"io"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/gentype"
	"k8s.io/client-go/rest"
)

// kubeAPI is the part of the Kubernetes API the executor uses: five
// resources of two API groups. The runner's client (newAPI) is built from
// client-go's REST client with a scheme of just these groups, so the
// binary links neither client-go's clientset nor the types and apply
// configurations of every other API group: that is most of the manager's
// idle memory (bench/README.md). Unit tests adapt client-go's fake
// clientset to it.
type kubeAPI interface {
	Pods(namespace string) podAPI
	Secrets(namespace string) secretAPI
	Events(namespace string) eventAPI
	Nodes() nodeAPI
	Leases(namespace string) leaseAPI
	// PodLogs streams a container's log (GET pods/log).
	PodLogs(ctx context.Context, namespace, pod string, opts *corev1.PodLogOptions) (io.ReadCloser, error)
}

// resourceAPI is what the executor does with one resource; client-go's
// typed clients have these methods with these signatures.
type resourceAPI[T, L runtime.Object] interface {
	Get(ctx context.Context, name string, opts metav1.GetOptions) (T, error)
	List(ctx context.Context, opts metav1.ListOptions) (L, error)
	Watch(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error)
	Create(ctx context.Context, obj T, opts metav1.CreateOptions) (T, error)
	Update(ctx context.Context, obj T, opts metav1.UpdateOptions) (T, error)
	Delete(ctx context.Context, name string, opts metav1.DeleteOptions) error
}

type (
	podAPI    = resourceAPI[*corev1.Pod, *corev1.PodList]
	secretAPI = resourceAPI[*corev1.Secret, *corev1.SecretList]
	eventAPI  = resourceAPI[*corev1.Event, *corev1.EventList]
	nodeAPI   = resourceAPI[*corev1.Node, *corev1.NodeList]
	leaseAPI  = resourceAPI[*coordinationv1.Lease, *coordinationv1.LeaseList]
)

// apiScheme knows core/v1, coordination/v1 and the meta types the API
// server answers with (Status, watch events).
var apiScheme, apiParams = func() (*runtime.Scheme, runtime.ParameterCodec) {
	s := runtime.NewScheme()
	metav1.AddToGroupVersion(s, schema.GroupVersion{Version: "v1"})
	for _, add := range []func(*runtime.Scheme) error{corev1.AddToScheme, coordinationv1.AddToScheme} {
		if err := add(s); err != nil {
			panic(fmt.Sprintf("kubernetes API scheme: %v", err))
		}
	}
	return s, runtime.NewParameterCodec(s)
}()

// restAPI is kubeAPI over one REST client per API group.
type restAPI struct {
	core, coordination rest.Interface
}

// newAPI builds the clients; cfg is not changed.
func newAPI(cfg *rest.Config) (*restAPI, error) {
	httpClient, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return nil, err
	}
	group := func(gv schema.GroupVersion, apiPath string) (rest.Interface, error) {
		c := rest.CopyConfig(cfg)
		c.GroupVersion, c.APIPath = &gv, apiPath
		c.NegotiatedSerializer = serializer.NewCodecFactory(apiScheme).WithoutConversion()
		return rest.RESTClientForConfigAndClient(c, httpClient)
	}
	a := &restAPI{}
	if a.core, err = group(corev1.SchemeGroupVersion, "/api"); err != nil {
		return nil, err
	}
	if a.coordination, err = group(coordinationv1.SchemeGroupVersion, "/apis"); err != nil {
		return nil, err
	}
	return a, nil
}

// typedClient is a typed client of one resource, asking for protobuf as
// client-go's generated clients of these built-in types do.
func typedClient[T interface {
	runtime.Object
	metav1.Object
}, L runtime.Object](c rest.Interface, name, namespace string, newObj func() T, newList func() L) resourceAPI[T, L] {
	return gentype.NewClientWithList(name, c, apiParams, namespace, newObj, newList, gentype.PrefersProtobuf[T]())
}

func (a *restAPI) Pods(ns string) podAPI {
	return typedClient(a.core, "pods", ns, func() *corev1.Pod { return &corev1.Pod{} }, func() *corev1.PodList { return &corev1.PodList{} })
}

func (a *restAPI) Secrets(ns string) secretAPI {
	return typedClient(a.core, "secrets", ns, func() *corev1.Secret { return &corev1.Secret{} }, func() *corev1.SecretList { return &corev1.SecretList{} })
}

func (a *restAPI) Events(ns string) eventAPI {
	return typedClient(a.core, "events", ns, func() *corev1.Event { return &corev1.Event{} }, func() *corev1.EventList { return &corev1.EventList{} })
}

func (a *restAPI) Nodes() nodeAPI {
	return typedClient(a.core, "nodes", "", func() *corev1.Node { return &corev1.Node{} }, func() *corev1.NodeList { return &corev1.NodeList{} })
}

func (a *restAPI) Leases(ns string) leaseAPI {
	return typedClient(a.coordination, "leases", ns, func() *coordinationv1.Lease { return &coordinationv1.Lease{} },
		func() *coordinationv1.LeaseList { return &coordinationv1.LeaseList{} })
}

func (a *restAPI) PodLogs(ctx context.Context, ns, pod string, opts *corev1.PodLogOptions) (io.ReadCloser, error) {
	return a.core.Get().Namespace(ns).Resource("pods").Name(pod).SubResource("log").
		VersionedParams(opts, apiParams).Stream(ctx)
}
