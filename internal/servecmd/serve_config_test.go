package servecmd

import (
	"bytes"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
)

func TestAutoPromoteLearnersFlag(t *testing.T) {
	cfg, _, err := parse(t, nil)
	if err != nil || cfg.AutoPromoteLearners {
		t.Fatalf("default: %v, auto-promote %v; want off", err, cfg.AutoPromoteLearners)
	}
	cfg, _, err = parse(t, []string{"--auto-promote-learners"})
	if err != nil || !cfg.AutoPromoteLearners {
		t.Fatalf("--auto-promote-learners: %v, %v", err, cfg.AutoPromoteLearners)
	}
	cfg, _, err = parse(t, nil, "CAIRN_AUTO_PROMOTE_LEARNERS=true")
	if err != nil || !cfg.AutoPromoteLearners {
		t.Fatalf("CAIRN_AUTO_PROMOTE_LEARNERS=true: %v, %v", err, cfg.AutoPromoteLearners)
	}
}

// TestConfigSummary: the start-up line gives the effective settings, with
// defaults resolved and the data directory absolute.
func TestConfigSummary(t *testing.T) {
	cfg, _, err := parse(t, []string{"--name", "n1", "--data-dir", "rel/dir", "--heartbeat-interval", "50",
		"--election-timeout", "500", "--snapshot-count", "1234"})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	slog.New(slog.NewTextHandler(&buf, nil)).Info("effective configuration", configSummary(cfg)...)
	line := buf.String()
	abs, _ := filepath.Abs("rel/dir")
	for _, want := range []string{
		"data-dir=" + abs + " ",
		"quota-backend-bytes=2147483648 ",
		"heartbeat-interval=50ms ",
		"election-timeout=500ms ",
		"snapshot-count=1234 ",
		"auto-promote-learners=false ",
	} {
		if !strings.Contains(line, want) {
			t.Errorf("summary %q lacks %q", line, want)
		}
	}
	if strings.Count(line, "\n") != 1 {
		t.Errorf("summary is not one line: %q", line)
	}
	cfg.QuotaBackendBytes = -1
	buf.Reset()
	slog.New(slog.NewTextHandler(&buf, nil)).Info("effective configuration", configSummary(cfg)...)
	if !strings.Contains(buf.String(), "quota-backend-bytes=none ") {
		t.Errorf("no quota: %q", buf.String())
	}
}
