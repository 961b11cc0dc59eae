package server

import "errors"

// Errors returned by the server. Their text is etcdserver's, except
// ErrNoSpace, which carries the text clients receive for it; the api maps
// each to the rpctypes status clients expect. mvcc's errors pass through
// unchanged.
var (
	// ErrRequestTooLarge: the marshaled request exceeds MaxRequestBytes.
	ErrRequestTooLarge = errors.New("etcdserver: request is too large")
	// ErrTimeout: the request did not complete within the request timeout.
	// Its outcome is unknown: it may still be applied.
	ErrTimeout = errors.New("etcdserver: request timed out")
	// ErrCanceled: the caller's context ended before the request completed.
	// Its outcome is unknown.
	ErrCanceled = errors.New("etcdserver: request cancelled")
	// ErrStopped: the server stopped (or is stopping).
	ErrStopped = errors.New("etcdserver: server stopped")
	// ErrNoLeader: no leader is known. The server itself waits for a leader
	// until the request times out; the api returns this error for requests
	// that ask to fail fast without one.
	ErrNoLeader = errors.New("etcdserver: no leader")
	// ErrTooManyRequests: the applied index trails the committed index by
	// more than 5000 entries.
	ErrTooManyRequests = errors.New("etcdserver: too many requests")
	// ErrNoSpace: the engine exceeds its quota, or the NOSPACE alarm is
	// active; writes that add data are refused.
	ErrNoSpace = errors.New("etcdserver: mvcc: database space exceeded")
	// ErrUnsupportedRequest: a committed request of a kind this member
	// cannot apply (for example written by a newer version).
	ErrUnsupportedRequest = errors.New("etcdserver: unknown method")
)
