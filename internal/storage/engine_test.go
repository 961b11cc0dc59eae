package storage

import (
	"errors"
	"testing"
)

func TestAppliedIndexSurvivesReopen(t *testing.T) {
	dir := t.TempDir()
	e, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := e.AppliedIndex(); got != 0 {
		t.Fatalf("new engine applied index = %d, want 0", got)
	}
	b := e.NewBatch()
	b.Set([]byte("k/x"), []byte("v"), nil)
	b.SetAppliedIndex(42)
	if err := b.Commit(true); err != nil {
		t.Fatal(err)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	e, err = Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if got, _ := e.AppliedIndex(); got != 42 {
		t.Fatalf("applied index after reopen = %d, want 42", got)
	}
	if v, err := e.Get([]byte("k/x")); err != nil || string(v) != "v" {
		t.Fatalf("Get = %q, %v; want \"v\"", v, err)
	}
	if _, err := e.Get([]byte("k/none")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get of a missing key: err = %v, want ErrNotFound", err)
	}
}

func TestSecondOpenIsRefused(t *testing.T) {
	dir := t.TempDir()
	e, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if _, err := Open(dir, Options{}); !errors.Is(err, ErrLocked) {
		t.Fatalf("second Open: err = %v, want ErrLocked", err)
	}
}

func TestDiscardedBatchLeavesNoTrace(t *testing.T) {
	e, err := Open(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	b := e.NewBatch()
	b.Set([]byte("k/y"), []byte("v"), nil)
	b.SetAppliedIndex(7)
	b.Discard()
	if got, _ := e.AppliedIndex(); got != 0 {
		t.Fatalf("applied index = %d after a discarded batch, want 0", got)
	}
}
