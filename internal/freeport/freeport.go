// Package freeport picks 127.0.0.1 ports for servers whose address must be
// known before they listen, such as the peer URLs of a cluster's founding
// members, which every member is told before any of them starts.
//
// Asking the kernel for port 0 and closing the listener is not enough: the
// kernel hands the same range out for every outgoing connection, so on a
// busy test machine a client dialing anywhere can take the port before the
// server binds it. freeport picks below the kernel's ephemeral range
// instead, where only listeners that ask for a port by number go, and never
// hands a port out twice in one process.
package freeport

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"sync"
	"testing"
)

// low is the first port freeport hands out; ports below it are left to
// services a machine runs on well-known numbers.
const low = 10000

var (
	mu     sync.Mutex
	issued = map[int]bool{}
)

// Get returns a port on 127.0.0.1 that nothing listened on a moment ago,
// that the kernel does not give out on its own, and that Get has not
// returned before in this process.
func Get() (int, error) {
	high := ephemeralStart()
	mu.Lock()
	defer mu.Unlock()
	for range 1000 {
		p := low + rand.IntN(high-low)
		if issued[p] {
			continue
		}
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			continue
		}
		l.Close()
		issued[p] = true
		return p, nil
	}
	return 0, errors.New("freeport: no free port found below the ephemeral range")
}

// Port is Get for a test: it fails the test if no port is free.
func Port(tb testing.TB) int {
	tb.Helper()
	p, err := Get()
	if err != nil {
		tb.Fatal(err)
	}
	return p
}

// Addr is Port as a "127.0.0.1:port" address.
func Addr(tb testing.TB) string {
	tb.Helper()
	return fmt.Sprintf("127.0.0.1:%d", Port(tb))
}

// ephemeralStart is the first port of the kernel's ephemeral range, from
// /proc on Linux; elsewhere, or if the range leaves too little room below
// it, the IANA start, 49152.
func ephemeralStart() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 49152
	}
	var start, end int
	if _, err := fmt.Sscan(string(b), &start, &end); err != nil || start < low+1000 {
		return 49152
	}
	return start
}
