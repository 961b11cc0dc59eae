package server

import "testing"

// TestWaitCancelAfterTrigger checks the answer a waiter that gives up gets
// once its result was delivered: cancel reports that trigger came first,
// and the result is still in the channel, so a request that was applied
// just before the member stopped is reported done, not failed.
func TestWaitCancelAfterTrigger(t *testing.T) {
	w := newWaitRegistry()
	ch := w.register(7)
	if !w.trigger(7, result{index: 42}) {
		t.Fatal("trigger found no waiter")
	}
	if w.cancel(7, ch) {
		t.Fatal("cancel after trigger reported that it cancelled")
	}
	if res := <-ch; res.index != 42 {
		t.Fatalf("result in the channel: %+v, want index 42", res)
	}
}

// TestWaitCancelBeforeTrigger checks the other order: the waiter is gone,
// and a late trigger delivers nothing.
func TestWaitCancelBeforeTrigger(t *testing.T) {
	w := newWaitRegistry()
	ch := w.register(7)
	if !w.cancel(7, ch) {
		t.Fatal("cancel of a waiting proposal reported that trigger came first")
	}
	if w.trigger(7, result{index: 42}) {
		t.Fatal("trigger after cancel found a waiter")
	}
	if w.has(7) {
		t.Fatal("cancelled proposal still has a waiter")
	}
}
