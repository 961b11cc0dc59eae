// Package mvcc is cairn's revisioned key-value state machine on Pebble.
package mvcc
