package freeport

import (
	"net"
	"strconv"
	"testing"
)

// TestPortIsBindableAndUnique checks that every port handed out can be
// listened on, lies below the kernel's ephemeral range, and is never handed
// out twice.
func TestPortIsBindableAndUnique(t *testing.T) {
	seen := map[int]bool{}
	high := ephemeralStart()
	for range 1000 {
		p := Port(t)
		if p < low || p >= high {
			t.Fatalf("port %d outside [%d, %d)", p, low, high)
		}
		if seen[p] {
			t.Fatalf("port %d handed out twice", p)
		}
		seen[p] = true
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			t.Fatalf("listen on handed-out port %d: %v", p, err)
		}
		l.Close()
	}
}

// TestPortSkipsBusyPorts holds many listeners open on freeport's range and
// checks that it never hands one of them out.
func TestPortSkipsBusyPorts(t *testing.T) {
	busy := map[int]bool{}
	for p := low; p < low+2000; p++ {
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			continue
		}
		defer l.Close()
		busy[p] = true
	}
	for range 500 {
		if p := Port(t); busy[p] {
			t.Fatalf("port %d handed out while a listener holds it", p)
		}
	}
}
