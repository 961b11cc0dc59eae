package audit

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

func readLines(t *testing.T, path string) []map[string]any {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []map[string]any
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		m := map[string]any{}
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		out = append(out, m)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestFields: every field lands in its JSON name, empty ones are left
// out, and a key that is not UTF-8 goes as base64.
func TestFields(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	at := time.Date(2026, 12, 7, 2, 30, 0, 123, time.UTC)
	l, err := Open(Options{Path: path, Now: func() time.Time { return at }})
	if err != nil {
		t.Fatal(err)
	}
	l.Record(Event{Member: "m1", Kind: KindAuthChange, Method: "RoleGrantPermission", User: "root", Name: "app",
		Perm: "READ", Key: []byte("/app/"), RangeEnd: []byte("/app0"), Index: 42, AuthRevision: 7})
	l.Record(Event{Kind: KindRefused, Method: "Put", User: "alice", Key: []byte("\xff\x00"), Reason: "etcdserver: permission denied"})
	l.Record(Event{Kind: KindRefused, Method: "LeaseRevoke", User: "alice", Key: []byte("/x"), Lease: 0x694d7a2a1d1a4c04,
		Reason: "etcdserver: permission denied"})
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	got := readLines(t, path)
	want := []map[string]any{
		{"time": "2026-12-07T02:30:00.000000123Z", "member": "m1", "kind": "auth_change", "method": "RoleGrantPermission",
			"user": "root", "name": "app", "perm": "READ", "key": "/app/", "range_end": "/app0", "index": 42.0, "auth_revision": 7.0},
		{"time": "2026-12-07T02:30:00.000000123Z", "kind": "refused", "method": "Put", "user": "alice",
			"key_base64": "/wA=", "reason": "etcdserver: permission denied"},
		{"time": "2026-12-07T02:30:00.000000123Z", "kind": "refused", "method": "LeaseRevoke", "user": "alice",
			"key": "/x", "lease": "694d7a2a1d1a4c04", "reason": "etcdserver: permission denied"},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("lines\n%v\nwant\n%v", got, want)
	}
}

// TestRotation: the file rotates before a line would take it past
// MaxBytes, MaxFiles old files are kept, newest first, and no line is
// lost or split.
func TestRotation(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "audit.log")
	l, err := Open(Options{Path: path, MaxBytes: 1000, MaxFiles: 2})
	if err != nil {
		t.Fatal(err)
	}
	const n = 60
	for i := range n {
		l.Record(Event{Kind: KindRefused, Method: "Put", User: "u", Key: []byte(fmt.Sprintf("key-%03d", i)), Reason: "r"})
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if strings.Join(names, " ") != "audit.log audit.log.1 audit.log.2" {
		t.Fatalf("files %v, want the log and two rotated ones", names)
	}
	var keys []string
	for _, p := range []string{path + ".2", path + ".1", path} {
		fi, err := os.Stat(p)
		if err != nil || fi.Size() > 1000 || fi.Size() == 0 {
			t.Fatalf("%s: %v, %v; want 1..1000 bytes", p, fi, err)
		}
		for _, m := range readLines(t, p) {
			keys = append(keys, m["key"].(string))
		}
	}
	// The newest lines, in order, through to the last; older ones went
	// with the files removed.
	if len(keys) == 0 || keys[len(keys)-1] != fmt.Sprintf("key-%03d", n-1) {
		t.Fatalf("keys %v, want them to end with the last", keys)
	}
	for i := 1; i < len(keys); i++ {
		var a, b int
		fmt.Sscanf(keys[i-1], "key-%d", &a)
		fmt.Sscanf(keys[i], "key-%d", &b)
		if b != a+1 {
			t.Fatalf("keys %v: a gap between %s and %s", keys, keys[i-1], keys[i])
		}
	}
	if len(keys) >= n {
		t.Fatalf("%d lines kept of %d: nothing rotated away", len(keys), n)
	}
}

// TestAppendsAtOpen: a log opened again goes on after the lines already
// there, and counts them towards MaxBytes.
func TestAppendsAtOpen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	for i := range 2 {
		l, err := Open(Options{Path: path, MaxBytes: 1 << 20})
		if err != nil {
			t.Fatal(err)
		}
		l.Record(Event{Kind: KindRefused, Method: fmt.Sprint(i)})
		l.Close()
	}
	if got := readLines(t, path); len(got) != 2 || got[0]["method"] != "0" || got[1]["method"] != "1" {
		t.Fatalf("lines %v, want two in order", got)
	}
	l, err := Open(Options{Path: path, MaxBytes: 10, MaxFiles: -1})
	if err != nil {
		t.Fatal(err)
	}
	l.Record(Event{Kind: KindRefused, Method: "2"})
	l.Close()
	if got := readLines(t, path); len(got) != 1 || got[0]["method"] != "2" {
		t.Fatalf("lines %v, want the old file rotated away", got)
	}
	if _, err := os.Stat(path + ".1"); !os.IsNotExist(err) {
		t.Fatalf("MaxFiles -1 kept %s.1 (%v)", path, err)
	}
}

// TestDropsWhenFull: with the writer behind and the buffer full, Record
// returns at once and counts the line dropped.
func TestDropsWhenFull(t *testing.T) {
	reg := prometheus.NewRegistry()
	path := filepath.Join(t.TempDir(), "audit.log")
	l, err := openIdle(Options{Path: path, Buffer: 2, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	for range 5 {
		l.Record(Event{Kind: KindRefused, Method: "Put"})
	}
	if d := l.Dropped(); d != 3 {
		t.Fatalf("dropped %d, want 3", d)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, mf := range mfs {
		if mf.GetName() == "cairn_audit_log_dropped_total" && mf.GetMetric()[0].GetCounter().GetValue() == 3 {
			found = true
		}
	}
	if !found {
		t.Fatalf("cairn_audit_log_dropped_total is not 3 in %v", mfs)
	}
	go l.run()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if got := readLines(t, path); len(got) != 2 {
		t.Fatalf("%d lines written, want the 2 buffered", len(got))
	}
	l.Record(Event{Kind: KindRefused}) // after Close: ignored, no panic
}

// TestNilLog: a nil Log (the log off) records nothing and closes.
func TestNilLog(t *testing.T) {
	var l *Log
	l.Record(Event{Kind: KindRefused})
	if l.Enabled() || l.Dropped() != 0 || l.Close() != nil {
		t.Fatal("a nil Log is not inert")
	}
}
