// Package servecmd is cairn's serving command, the root of the cairn
// binary: it takes etcd's server flags (or CAIRN_* environment variables,
// or etcd's configuration file), turns them into an internal/embed
// configuration, and runs a member until a signal or a fatal error.
//
// It lives outside cmd/cairn so that more than one program can run the very
// same command: cmd/cairn, which adds the tool subcommands (bench,
// snapshot), and the process test tiers (tests/kit/proc), whose test
// binaries re-execute themselves as a cairn member, so that a test's cached
// result depends on the server code it ran and a -race test runs a
// race-built member.
package servecmd
