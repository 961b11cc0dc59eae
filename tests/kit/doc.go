// Package kit is the shared kit of cairn's tests: what more than one
// package's tests need, written once. It is imported by tests only; nothing
// a cairn binary links depends on it.
//
// This package holds what any test may import without pulling in a server:
//
//   - WaitFor, WaitForNil and Poll wait on a condition with a generous
//     deadline that fails the test clearly (a test waits for what a user
//     would wait for; it never asserts how long it took), and WaitKeys
//     waits for a number of keys under a prefix, such as the waiters queued
//     on a lock.
//   - Model is the porcupine model of etcd's key-value semantics (values,
//     versions, create and mod revisions, the store's revision) that the
//     cluster tier (internal/clustertest) and the process tier
//     (tests/process) check their histories against; Resolve settles the
//     writes whose outcome a client never learned from the store's
//     history, and CheckLinearizable runs the check and reports a
//     violation. TestModel checks the model itself on histories whose
//     verdict is known.
//   - Tmpfs and ResizeTmpfs mount a small tmpfs and grow it, for the tests
//     that fill a device (skipped without root, failed on CI).
//
// Its sub-packages hold the heavier parts:
//
//   - kit/oracle starts an embedded etcd, the oracle that differential
//     tests compare cairn against.
//   - kit/proc starts cairn (or etcd, to check a test itself) as a real
//     process by re-executing the test binary, so that a test's result
//     depends on the server code it ran.
package kit
