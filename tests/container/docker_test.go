//go:build docker

package container

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// label marks everything the tests create, so a run that was itself killed
// can be cleaned up by hand: docker ps -a --filter label=cairn-containertest
const label = "cairn-containertest"

// docker runs the docker CLI and returns its trimmed output.
func docker(args ...string) (string, error) {
	out, err := exec.Command("docker", args...).CombinedOutput()
	s := strings.TrimSpace(string(out))
	if err != nil {
		return s, fmt.Errorf("docker %s: %w: %s", strings.Join(args, " "), err, s)
	}
	return s, nil
}

func mustDocker(t testing.TB, args ...string) string {
	t.Helper()
	out, err := docker(args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// image is the one image every test runs, built on first use and removed
// (with its build directory) by TestMain.
var image struct {
	once     sync.Once
	name     string
	buildDir string
	err      error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if image.name != "" {
		if out, err := docker("rmi", "--force", image.name); err != nil {
			fmt.Fprintf(os.Stderr, "containertest: remove image %s: %v\n%s\n", image.name, err, out)
			code = 1
		}
	}
	if image.buildDir != "" {
		os.RemoveAll(image.buildDir)
	}
	os.Exit(code)
}

// testImage builds the static binary into a temporary build context and
// the image from the repository's Dockerfile, once, and returns its tag.
func testImage(t testing.TB) string {
	t.Helper()
	image.once.Do(func() {
		if _, image.err = docker("info", "--format", "{{.ServerVersion}}"); image.err != nil {
			image.err = fmt.Errorf("no docker engine to run the container tests: %w", image.err)
			return
		}
		gomod, err := exec.Command("go", "env", "GOMOD").Output()
		if err != nil {
			image.err = fmt.Errorf("go env GOMOD: %w", err)
			return
		}
		root := filepath.Dir(strings.TrimSpace(string(gomod)))
		if image.buildDir, image.err = os.MkdirTemp("", "cairn-containertest-"); image.err != nil {
			return
		}
		build := exec.Command("go", "build", "-buildvcs=false", "-o", filepath.Join(image.buildDir, "bin", "cairn"), "./cmd/cairn")
		build.Dir = root
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := build.CombinedOutput(); err != nil {
			image.err = fmt.Errorf("static build of cmd/cairn: %w\n%s", err, out)
			return
		}
		tag := fmt.Sprintf("cairn-containertest:%08x", rand.Uint32())
		start := time.Now()
		if _, image.err = docker("build", "--quiet", "--label", label, "-t", tag, "-f", filepath.Join(root, "Dockerfile"), image.buildDir); image.err != nil {
			return
		}
		image.name = tag
		t.Logf("built image %s in %v", tag, time.Since(start).Round(time.Millisecond))
	})
	if image.err != nil {
		t.Fatal(image.err)
	}
	return image.name
}

// env is one test's Docker resources; t.Cleanup removes them in reverse
// order of creation (containers, then networks).
type env struct {
	t      testing.TB
	suffix string
	image  string
}

func newEnv(t testing.TB) *env {
	t.Helper()
	return &env{t: t, suffix: fmt.Sprintf("%08x", rand.Uint32()), image: testImage(t)}
}

func (e *env) name(what string) string { return "cairn-ct-" + e.suffix + "-" + what }

// network creates a bridge network with a free /24 of 10.0.0.0/8 and
// returns its name and the subnet's first three octets.
func (e *env) network(what string) (name, prefix string) {
	t := e.t
	t.Helper()
	name = e.name(what)
	var lastErr error
	for range 20 {
		prefix = fmt.Sprintf("10.%d.%d", 160+rand.IntN(90), rand.IntN(256))
		_, lastErr = docker("network", "create", "--driver", "bridge", "--label", label,
			"--subnet", prefix+".0/24", "--gateway", prefix+".1", name)
		if lastErr == nil {
			t.Cleanup(func() {
				if _, err := docker("network", "rm", name); err != nil {
					t.Errorf("remove network: %v", err)
				}
			})
			return name, prefix
		}
		if !strings.Contains(lastErr.Error(), "overlap") {
			break
		}
	}
	t.Fatalf("create network %s: %v", name, lastErr)
	return "", ""
}

// container is one member's container.
type container struct {
	name     string // the member's name (m1, ...)
	docker   string // the container's name
	peerIP   string
	clientIP string
}

func (c *container) clientURL() string { return "http://" + c.clientIP + ":2379" }
func (c *container) peerURL() string   { return "http://" + c.peerIP + ":2380" }

// startMembers creates and starts one container per member, each on the
// peer network (the address its peer URL names) and on the client
// network (the address the test dials).
func (e *env) startMembers(n int, peerNet, peerPrefix, clientNet, clientPrefix string) []*container {
	t := e.t
	t.Helper()
	var cs []*container
	var initial []string
	for i := 1; i <= n; i++ {
		c := &container{
			name:     fmt.Sprintf("m%d", i),
			docker:   e.name(fmt.Sprintf("m%d", i)),
			peerIP:   fmt.Sprintf("%s.%d", peerPrefix, 10+i),
			clientIP: fmt.Sprintf("%s.%d", clientPrefix, 10+i),
		}
		cs = append(cs, c)
		initial = append(initial, c.name+"="+c.peerURL())
	}
	for _, c := range cs {
		mustDocker(t, "create", "--name", c.docker, "--label", label, "--hostname", c.name,
			"--network", peerNet, "--ip", c.peerIP, e.image,
			"--name", c.name,
			"--data-dir", "/var/lib/cairn",
			"--listen-client-urls", "http://0.0.0.0:2379",
			"--advertise-client-urls", c.clientURL(),
			"--listen-peer-urls", "http://0.0.0.0:2380",
			"--initial-advertise-peer-urls", c.peerURL(),
			"--initial-cluster", strings.Join(initial, ","),
			"--initial-cluster-state", "new",
			"--initial-cluster-token", e.name("cluster"),
			"--heartbeat-interval", "100",
			"--election-timeout", "1000",
		)
		t.Cleanup(func() {
			if t.Failed() {
				logs, _ := docker("logs", "--tail", "80", c.docker)
				t.Logf("===== last log lines of %s (%s) =====\n%s", c.name, c.docker, logs)
			}
			if _, err := docker("rm", "--force", "--volumes", c.docker); err != nil {
				t.Errorf("remove container: %v", err)
			}
		})
		mustDocker(t, "network", "connect", "--ip", c.clientIP, clientNet, c.docker)
	}
	for _, c := range cs {
		mustDocker(t, "start", c.docker)
	}
	return cs
}
