// kube-apiserver exactly as upstream's cmd/kube-apiserver builds it, plus an optional etcd
// (go.etcd.io/etcd/server/v3/embed, the version Kubernetes pins) running in the same process, so an
// offline check needs one pinned binary and leaves one process to stop.
//
// The embedded etcd is used only when --embedded-etcd-dir is given; these three flags are taken out
// of the arguments before upstream's command parses the rest:
//
//	--embedded-etcd-dir=DIR          etcd data directory (created if missing, reused if present)
//	--embedded-etcd-client-url=URL   e.g. http://127.0.0.1:2379; --etcd-servers is set to it
//	--embedded-etcd-peer-url=URL     e.g. http://127.0.0.1:2380 (single member, never contacted)
//
// Without them the binary is upstream's kube-apiserver, flag for flag.
package main

import (
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"
	_ "time/tzdata" // as upstream: time zone data for CronJob

	"go.etcd.io/etcd/server/v3/embed"
	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

func main() {
	args, etcdFlags := splitEmbeddedEtcdFlags(os.Args[1:])
	if dir, ok := etcdFlags["dir"]; ok {
		etcd, err := startEmbeddedEtcd(dir, etcdFlags["client-url"], etcdFlags["peer-url"])
		if err != nil {
			fmt.Fprintf(os.Stderr, "embedded etcd: %v\n", err)
			os.Exit(1)
		}
		args = append(args, "--etcd-servers="+etcdFlags["client-url"])
		code := runAPIServer(args)
		etcd.Close()
		os.Exit(code)
	}
	os.Exit(runAPIServer(args))
}

func runAPIServer(args []string) int {
	command := app.NewAPIServerCommand()
	command.SetArgs(args)
	return cli.Run(command)
}

func splitEmbeddedEtcdFlags(all []string) ([]string, map[string]string) {
	const prefix = "--embedded-etcd-"
	var rest []string
	flags := map[string]string{}
	for _, arg := range all {
		if name, value, ok := strings.Cut(strings.TrimPrefix(arg, prefix), "="); strings.HasPrefix(arg, prefix) && ok {
			flags[name] = value
			continue
		}
		rest = append(rest, arg)
	}
	return rest, flags
}

func startEmbeddedEtcd(dir, clientURL, peerURL string) (*embed.Etcd, error) {
	client, err := url.Parse(clientURL)
	if err != nil || clientURL == "" {
		return nil, fmt.Errorf("--embedded-etcd-client-url %q: want a URL like http://127.0.0.1:2379", clientURL)
	}
	peer, err := url.Parse(peerURL)
	if err != nil || peerURL == "" {
		return nil, fmt.Errorf("--embedded-etcd-peer-url %q: want a URL like http://127.0.0.1:2380", peerURL)
	}
	cfg := embed.NewConfig()
	cfg.Name = "embedded"
	cfg.Dir = dir
	cfg.ListenClientUrls = []url.URL{*client}
	cfg.AdvertiseClientUrls = []url.URL{*client}
	cfg.ListenPeerUrls = []url.URL{*peer}
	cfg.AdvertisePeerUrls = []url.URL{*peer}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.LogLevel = "error"
	// A throwaway test server: durability across power loss is not needed, speed is.
	cfg.UnsafeNoFsync = true
	etcd, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, err
	}
	select {
	case <-etcd.Server.ReadyNotify():
		return etcd, nil
	case err := <-etcd.Err():
		etcd.Close()
		return nil, err
	case <-time.After(60 * time.Second):
		etcd.Close()
		return nil, fmt.Errorf("not ready after 60s")
	}
}
