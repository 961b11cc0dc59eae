package proc

import (
	"context"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/cairn-db/cairn/internal/freeport"
	"github.com/cairn-db/cairn/tests/kit"
)

func TestMain(m *testing.M) { Main(m) }

// TestServeAndStop starts each server as a process, writes through it, and
// stops it with SIGTERM: it must exit with status 0.
func TestServeAndStop(t *testing.T) {
	for _, server := range []Server{Cairn, Etcd} {
		t.Run(string(server), func(t *testing.T) {
			url := "http://" + freeport.Addr(t)
			p := Start(t, server, filepath.Join(t.TempDir(), "out.log"),
				"--name", "n1", "--data-dir", t.TempDir(),
				"--listen-client-urls", url, "--advertise-client-urls", url,
				"--listen-peer-urls", "http://127.0.0.1:0")
			cli, err := clientv3.New(clientv3.Config{Endpoints: []string{url}, Logger: zap.NewNop()})
			if err != nil {
				t.Fatal(err)
			}
			defer cli.Close()
			err = kit.Poll(kit.WaitTimeout, func() error {
				select {
				case <-p.Exited():
					t.Fatalf("%s exited before serving (%v); its output:\n%s", server, p.Err(), p.Output(8<<10))
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				defer cancel()
				_, err := cli.Put(ctx, "k", "v")
				return err
			})
			if err != nil {
				t.Fatalf("%s does not take a put: %v; its output:\n%s", server, err, p.Output(8<<10))
			}
			if err := p.Stop(syscall.SIGTERM, time.Minute); err != nil {
				t.Fatalf("stop %s: %v", server, err)
			}
			if p.Err() != nil {
				t.Fatalf("%s exited with %v after SIGTERM; want status 0. Its output:\n%s", server, p.Err(), p.Output(8<<10))
			}
		})
	}
}
