package servecmd

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v2"
)

// etcd's configuration file (--config-file) is YAML whose keys are the flag
// names, except for TLS, which sits in two nested sections. These tables map
// a section's keys to flags.
var (
	clientSecurityKeys = map[string]string{
		"cert-file":        "cert-file",
		"key-file":         "key-file",
		"client-cert-file": "client-cert-file",
		"client-key-file":  "client-key-file",
		"client-cert-auth": "client-cert-auth",
		"trusted-ca-file":  "trusted-ca-file",
		"auto-tls":         "auto-tls",
		"allowed-cn":       "client-cert-allowed-cn",
		"allowed-hostname": "client-cert-allowed-hostname",
	}
	peerSecurityKeys = map[string]string{
		"cert-file":                    "peer-cert-file",
		"key-file":                     "peer-key-file",
		"client-cert-file":             "peer-client-cert-file",
		"client-key-file":              "peer-client-key-file",
		"client-cert-auth":             "peer-client-cert-auth",
		"trusted-ca-file":              "peer-trusted-ca-file",
		"auto-tls":                     "peer-auto-tls",
		"allowed-cn":                   "peer-cert-allowed-cn",
		"allowed-hostname":             "peer-cert-allowed-hostname",
		"skip-client-san-verification": "peer-skip-client-san-verification",
	}
)

// loadConfigFile sets the flags from an etcd configuration file. As in etcd,
// the file replaces the command line and the environment: f must be a fresh
// flag set. Keys etcd does not know are reported in the returned notes and
// otherwise ignored (etcd ignores them silently). Durations may be written as
// etcd reads them, integers of nanoseconds, or as Go durations ("5s").
func (f *serveFlags) loadConfigFile(path string) (notes []string, err error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--config-file: %w", err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("--config-file %s: %w", path, err)
	}
	for _, key := range sortedKeys(doc) {
		var keys map[string]string
		switch key {
		case "client-transport-security":
			keys = clientSecurityKeys
		case "peer-transport-security":
			keys = peerSecurityKeys
		}
		if keys == nil {
			n, err := f.setFromFile(path, key, key, doc[key])
			notes = append(notes, n...)
			if err != nil {
				return notes, err
			}
			continue
		}
		section, ok := doc[key].(map[any]any)
		if !ok {
			if doc[key] == nil {
				continue
			}
			return notes, fmt.Errorf("--config-file %s: %s must be a mapping", path, key)
		}
		for _, sub := range sortedKeys(section) {
			name, known := keys[sub]
			if !known {
				notes = append(notes, fmt.Sprintf("config file %s: unknown key %s.%s ignored", path, key, sub))
				continue
			}
			n, err := f.setFromFile(path, key+"."+sub, name, section[sub])
			notes = append(notes, n...)
			if err != nil {
				return notes, err
			}
		}
	}
	f.fromFile = true
	return notes, nil
}

// setFromFile sets flag name from the value of key.
func (f *serveFlags) setFromFile(path, key, name string, v any) ([]string, error) {
	fl := f.fs.Lookup(name)
	if fl == nil || name == "config-file" || name == "version" {
		return []string{fmt.Sprintf("config file %s: unknown key %s ignored", path, key)}, nil
	}
	if v == nil {
		return nil, nil
	}
	var s string
	switch x := v.(type) {
	case []any:
		parts := make([]string, len(x))
		for i, e := range x {
			parts[i] = fmt.Sprint(e)
		}
		s = strings.Join(parts, ",")
	case int:
		s = fmt.Sprint(x)
		if fl.Value.Type() == "duration" {
			s = time.Duration(x).String()
		}
	default:
		s = fmt.Sprint(x)
	}
	if err := f.fs.Set(name, s); err != nil {
		return nil, fmt.Errorf("--config-file %s: invalid value %q for %s: %w", path, s, key, err)
	}
	return nil, nil
}

func sortedKeys[K comparable, M ~map[K]any](m M) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, fmt.Sprint(k))
	}
	slices.Sort(out)
	return out
}
