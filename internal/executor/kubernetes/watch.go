package kubernetes

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"
)

// Label keys (docs/kubernetes-executor.md) used to select a runner's pods.
const (
	LabelManaged = "podrunner.io/managed"
	LabelRunner  = "podrunner.io/runner"
	LabelJobID   = "podrunner.io/job-id"
)

// eventsByPod indexes events by the name of the pod they are about.
const eventsByPod = "involvedObject.name"

// podWatch is the executor's one view of its pods: one informer on the
// runner's pods (label-selected) and, from the first job on, one on the
// namespace's pod events.
// Jobs subscribe by pod name and are woken on every change; they read the
// latest state from the subscription, so nothing is polled.
type podWatch struct {
	ns           string
	pods, events cache.SharedIndexInformer
	// running holds the informers' goroutines. (The informers are built
	// without client-go's informer factory: that links informers and
	// listers of every API group, 119 packages the manager never uses.)
	running sync.WaitGroup
	// stop is start's; eventsOnce starts the events informer (watchEvents).
	stop       <-chan struct{}
	eventsOnce sync.Once

	mu   sync.Mutex
	subs map[string]*podSub
}

// podSub is one job's view of its pod.
type podSub struct {
	name   string
	notify chan struct{} // capacity 1: a pending wake-up is never lost

	mu      sync.Mutex
	pod     *corev1.Pod
	deleted bool
	// claims is the claim count under which this manager owns the pod;
	// lost is closed once the pod shows a later claim (another manager
	// took it over). Set by own.
	owning   bool
	claims   int64
	lost     chan struct{}
	lostOnce sync.Once
}

// own starts watching the pod's ownership: lost is closed when the pod
// shows a claim count above claims.
func (s *podSub) own(claims int64) {
	s.mu.Lock()
	s.owning, s.claims = true, claims
	pod := s.pod
	s.mu.Unlock()
	if pod != nil {
		s.checkOwner(pod)
	}
}

func (s *podSub) checkOwner(pod *corev1.Pod) {
	s.mu.Lock()
	taken := s.owning && claimCount(pod) > s.claims
	s.mu.Unlock()
	if taken {
		s.markLost()
	}
}

func (s *podSub) markLost() { s.lostOnce.Do(func() { close(s.lost) }) }

// handedOver reports whether another manager took the pod over.
func (s *podSub) handedOver() bool {
	select {
	case <-s.lost:
		return true
	default:
		return false
	}
}

// snapshot returns the latest pod seen (nil before the informer saw it)
// and whether it was deleted.
func (s *podSub) snapshot() (*corev1.Pod, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pod, s.deleted
}

func (s *podSub) wake() {
	select {
	case s.notify <- struct{}{}:
	default:
	}
}

func runnerSelector(shortToken string) string {
	return labels.Set{LabelManaged: "true", LabelRunner: shortToken}.String()
}

// newInformer is client-go's informer of one resource, as its informers
// package builds it, over kubeAPI; tweak narrows the list and the watch.
// cs says whether it can stream lists (client-go's fake cannot).
func newInformer[T, L runtime.Object](cs kubeAPI, r resourceAPI[T, L], obj T, tweak func(*metav1.ListOptions)) cache.SharedIndexInformer {
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			tweak(&o)
			return r.List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			tweak(&o)
			return r.Watch(ctx, o)
		},
	}
	return cache.NewSharedIndexInformer(cache.ToListWatcherWithWatchListSemantics(lw, cs), obj, 0, cache.Indexers{})
}

func newPodWatch(cs kubeAPI, namespace, shortToken string) (*podWatch, error) {
	w := &podWatch{ns: namespace, subs: map[string]*podSub{}}
	sel := runnerSelector(shortToken)
	w.pods = newInformer(cs, cs.Pods(namespace), &corev1.Pod{},
		func(o *metav1.ListOptions) { o.LabelSelector = sel })
	w.events = newInformer(cs, cs.Events(namespace), &corev1.Event{},
		func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("involvedObject.kind", "Pod").String()
		})
	if err := w.events.SetTransform(trimEvent); err != nil {
		return nil, fmt.Errorf("event transform: %w", err)
	}
	if err := w.events.AddIndexers(cache.Indexers{eventsByPod: func(obj any) ([]string, error) {
		if ev, ok := obj.(*corev1.Event); ok {
			return []string{ev.InvolvedObject.Name}, nil
		}
		return nil, nil
	}}); err != nil {
		return nil, fmt.Errorf("event index: %w", err)
	}
	if _, err := w.pods.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { w.podChanged(obj, false) },
		UpdateFunc: func(_, obj any) { w.podChanged(obj, false) },
		DeleteFunc: func(obj any) { w.podChanged(obj, true) },
	}); err != nil {
		return nil, fmt.Errorf("pod handler: %w", err)
	}
	evHandler := func(obj any) {
		if ev, ok := obj.(*corev1.Event); ok {
			w.wake(ev.InvolvedObject.Name)
		}
	}
	if _, err := w.events.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    evHandler,
		UpdateFunc: func(_, obj any) { evHandler(obj) },
	}); err != nil {
		return nil, fmt.Errorf("event handler: %w", err)
	}
	return w, nil
}

// trimEvent keeps what Classify reads of an event. The informer holds
// every Pod event of the namespace, other pods' too, for the cluster's
// event TTL (an hour by default); their managed fields and sources would
// be most of that memory.
func trimEvent(obj any) (any, error) {
	ev, ok := obj.(*corev1.Event)
	if !ok {
		return obj, nil
	}
	o := ev.InvolvedObject
	return &corev1.Event{
		ObjectMeta: metav1.ObjectMeta{Name: ev.Name, Namespace: ev.Namespace, UID: ev.UID,
			ResourceVersion: ev.ResourceVersion, CreationTimestamp: ev.CreationTimestamp},
		InvolvedObject: corev1.ObjectReference{Kind: o.Kind, Namespace: o.Namespace, Name: o.Name, UID: o.UID, FieldPath: o.FieldPath},
		Reason:         ev.Reason,
		Message:        ev.Message,
		Type:           ev.Type,
		Count:          ev.Count,
		FirstTimestamp: ev.FirstTimestamp,
		LastTimestamp:  ev.LastTimestamp,
		EventTime:      ev.EventTime,
	}, nil
}

// start runs the pod informer until stop is closed and waits for its
// first list. The events informer waits for the first job (watchEvents).
func (w *podWatch) start(ctx context.Context, stop <-chan struct{}) error {
	w.stop = stop
	w.running.Go(func() { w.pods.Run(stop) })
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	if !cache.WaitForCacheSync(ctx.Done(), w.pods.HasSynced) {
		return fmt.Errorf("the pod informer did not sync (check the Role: pods need list and watch): %w", context.Cause(ctx))
	}
	return nil
}

// watchEvents starts the events informer on the first job and waits for
// its first list (60 s at most). Events only explain pods that do not
// start, so a manager that has run no job keeps none: in a namespace
// with many pods they are most of an idle manager's heap.
func (w *podWatch) watchEvents(ctx context.Context) error {
	w.eventsOnce.Do(func() { w.running.Go(func() { w.events.Run(w.stop) }) })
	if w.events.HasSynced() {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if !cache.WaitForCacheSync(ctx.Done(), w.events.HasSynced) {
		return fmt.Errorf("the event informer did not sync (check the Role: events need list and watch): %w", context.Cause(ctx))
	}
	return nil
}

// shutdown waits for the informer goroutines once stop is closed.
func (w *podWatch) shutdown() {
	w.running.Wait()
}

func (w *podWatch) podChanged(obj any, deleted bool) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj, deleted = t.Obj, true
	}
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	w.mu.Lock()
	s := w.subs[pod.Name]
	w.mu.Unlock()
	if s == nil {
		return
	}
	s.mu.Lock()
	// A pod recreated under the same name is not ours (names are random).
	same := s.pod == nil || s.pod.UID == pod.UID
	if same {
		s.pod = pod
		s.deleted = s.deleted || deleted
	}
	s.mu.Unlock()
	if same {
		s.checkOwner(pod)
	}
	s.wake()
}

func (w *podWatch) wake(name string) {
	w.mu.Lock()
	s := w.subs[name]
	w.mu.Unlock()
	if s != nil {
		s.wake()
	}
}

// subscribe registers interest in a pod by name; call before creating it
// so no update is missed. The returned cancel func must be called.
func (w *podWatch) subscribe(name string) (*podSub, func()) {
	s := &podSub{name: name, notify: make(chan struct{}, 1), lost: make(chan struct{})}
	w.mu.Lock()
	w.subs[name] = s
	w.mu.Unlock()
	// The pod may already exist (adoption): seed from the cache.
	if obj, ok, _ := w.pods.GetStore().GetByKey(w.key(name)); ok {
		if pod, ok := obj.(*corev1.Pod); ok {
			s.mu.Lock()
			if s.pod == nil {
				s.pod = pod
			}
			s.mu.Unlock()
			s.wake()
		}
	}
	return s, func() {
		w.mu.Lock()
		if w.subs[name] == s {
			delete(w.subs, name)
		}
		w.mu.Unlock()
	}
}

func (w *podWatch) key(name string) string { return w.ns + "/" + name }

// podEvents returns the events about the pod (by UID when known), oldest
// first.
func (w *podWatch) podEvents(name string, uid types.UID) []corev1.Event {
	objs, err := w.events.GetIndexer().ByIndex(eventsByPod, name)
	if err != nil {
		return nil
	}
	out := make([]corev1.Event, 0, len(objs))
	for _, o := range objs {
		ev, ok := o.(*corev1.Event)
		if !ok || (uid != "" && ev.InvolvedObject.UID != "" && ev.InvolvedObject.UID != uid) {
			continue
		}
		out = append(out, *ev)
	}
	sort.SliceStable(out, func(i, j int) bool { return eventAt(out[i]).Before(eventAt(out[j])) })
	return out
}

// listPods lists the runner's pods from the informer's cache.
// pod is the cached pod name, or nil.
func (w *podWatch) pod(name string) *corev1.Pod {
	obj, ok, err := w.pods.GetIndexer().GetByKey(w.key(name))
	if err != nil || !ok {
		return nil
	}
	pod, _ := obj.(*corev1.Pod)
	return pod
}

func (w *podWatch) listPods() []*corev1.Pod {
	var out []*corev1.Pod
	for _, o := range w.pods.GetStore().List() {
		if pod, ok := o.(*corev1.Pod); ok {
			out = append(out, pod)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}
