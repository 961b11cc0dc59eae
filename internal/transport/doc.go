// Package transport carries raft messages between the members of a cluster.
package transport
