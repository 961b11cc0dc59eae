// Package audit writes cairn's audit log (--audit-log): one JSON object per
// line for every auth change a member applies and every request it refuses
// for an auth reason. It knows nothing of auth or raft; the server builds
// the Events.
//
// # Never in the way
//
// Record encodes the event and hands the line to one writer goroutine
// through a buffer of Options.Buffer lines; it never waits for the disk. A
// line that finds the buffer full is dropped and counted
// (cairn_audit_log_dropped_total, Dropped). The goroutine writes lines as
// they come, flushing whenever the buffer runs empty, so a line reaches
// the file shortly after its event. A failed write is counted
// (cairn_audit_log_write_errors_total) and the line lost; the next line
// tries again.
//
// # Rotation
//
// When a line would take the file past Options.MaxBytes, the file is
// renamed path.1 (path.1 to path.2, and so on, path.MaxFiles removed) and
// a new one started; a single line longer than MaxBytes still gets a file
// of its own. MaxFiles 0 keeps no old file. An existing file is appended
// to at Open.
//
// # Lines
//
// Event's fields, in JSON: time (RFC 3339, UTC, nanoseconds), member,
// kind ("auth_change" or "refused"), method, user, then whichever of name,
// role, perm, key, range_end, lease, reason, index and auth_revision are
// set. Keys that are not valid UTF-8 are written as key_base64 and
// range_end_base64; a lease ID is in hexadecimal, as etcdctl prints it.
// A nil *Log records nothing, which is the log switched off.
package audit
