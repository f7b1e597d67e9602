package kubernetes

import (
	"testing"

	"k8s.io/client-go/kubernetes/fake"
)

// A manager that has run no job (it only adopted and cleaned up) neither
// lists nor watches events; its first job starts the events informer.
func TestEventsWatchedFromTheFirstJob(t *testing.T) {
	cs := fake.NewClientset()
	ex := managerOn(t, cs, "s_aaaaaaaaaaaa")
	if _, err := ex.Adopt(t.Context()); err != nil {
		t.Fatal(err)
	}
	eventCalls := func() int {
		n := 0
		for _, a := range cs.Actions() {
			if a.GetResource().Resource == "events" {
				n++
			}
		}
		return n
	}
	if n := eventCalls(); n != 0 {
		t.Fatalf("%d event requests before any job", n)
	}
	w, err := ex.podWatch(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if err := w.watchEvents(t.Context()); err != nil {
		t.Fatal(err)
	}
	if !w.events.HasSynced() || eventCalls() == 0 {
		t.Fatalf("events not listed after watchEvents (%d requests)", eventCalls())
	}
	if err := w.watchEvents(t.Context()); err != nil { // once only
		t.Fatal(err)
	}
}
