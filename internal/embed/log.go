package embed

import (
	"fmt"
	"io"
	"log/slog"
)

// parseLogLevel reads etcd's log levels. slog has nothing above error, so
// etcd's "dpanic", "panic" and "fatal" (which only filter what is logged)
// log errors only.
func parseLogLevel(s string) (slog.Level, error) {
	switch s {
	case "debug":
		return slog.LevelDebug, nil
	case "", "info":
		return slog.LevelInfo, nil
	case "warn":
		return slog.LevelWarn, nil
	case "error", "dpanic", "panic", "fatal":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("unknown log level: %s, supported values debug, info, warn, error, dpanic, panic, fatal", s)
}

// NewLogger returns a logger writing to w at level in format ("json", the
// default as in etcd, or "console" for human-readable lines). The level and
// format are checked by Config.Validate.
func NewLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	lv, err := parseLogLevel(level)
	if err != nil {
		return nil, err
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "", "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	case "console":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("unknown log format: %s, supported values json, console", format)
}
