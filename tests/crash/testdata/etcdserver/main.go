// Command etcdserver is a stand-in for the cairn binary made of embedded
// etcd, taking the same few flags the crash tests pass. With
// CAIRN_CRASH_ORACLE=etcd the crash tests run against it, which checks the
// tests themselves: etcd keeps every acknowledged write, so any failure
// then is a bug in the test.
package main

import (
	"flag"
	"fmt"
	"net/url"
	"os"
	"os/signal"
	"syscall"

	"go.etcd.io/etcd/server/v3/embed"

	"github.com/cairn-db/cairn/internal/freeport"
)

func main() {
	cfg := embed.NewConfig()
	var listen, advertise string
	flag.StringVar(&cfg.Name, "name", "default", "member name")
	flag.StringVar(&cfg.Dir, "data-dir", "", "data directory")
	flag.StringVar(&listen, "listen-client-urls", "", "client URL to listen on")
	flag.StringVar(&advertise, "advertise-client-urls", "", "client URL to advertise")
	flag.Parse()
	if err := run(cfg, listen, advertise); err != nil {
		fmt.Fprintln(os.Stderr, "etcdserver:", err)
		os.Exit(1)
	}
}

func run(cfg *embed.Config, listen, advertise string) error {
	lc, err := url.Parse(listen)
	if err != nil {
		return err
	}
	ac, err := url.Parse(advertise)
	if err != nil {
		return err
	}
	// A single member never dials its peer URL, but etcd wants one.
	port, err := freeport.Get()
	if err != nil {
		return err
	}
	peer, _ := url.Parse(fmt.Sprintf("http://127.0.0.1:%d", port))
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*lc}, []url.URL{*ac}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*peer}, []url.URL{*peer}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.LogLevel = "error"
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return err
	}
	defer e.Close()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	select {
	case err := <-e.Err():
		return err
	case <-sig:
		return nil
	}
}
