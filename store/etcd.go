package store

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"

	"github.com/bothnia/bothnia/spec"
)

// ClientConfig says how to reach the store: the endpoints of an etcd
// cluster (https:// with client certificates between the sites, or the
// lab's unix:// socket), and the certificate files where TLS is used.
type ClientConfig struct {
	Endpoints         []string
	CertFile, KeyFile string // client certificate and key
	TrustedCAFile     string
	DialTimeout       time.Duration
}

// Connect returns an etcd client. It does not wait for the cluster: a
// client that cannot reach it retries on every call.
func Connect(c ClientConfig) (*clientv3.Client, error) {
	if len(c.Endpoints) == 0 {
		return nil, errors.New("store: no etcd endpoints; pass --etcd-endpoints (the lab's are in its state directory)")
	}
	var tlsCfg *tls.Config
	if c.CertFile != "" || c.TrustedCAFile != "" {
		info := transport.TLSInfo{CertFile: c.CertFile, KeyFile: c.KeyFile, TrustedCAFile: c.TrustedCAFile}
		var err error
		if tlsCfg, err = info.ClientConfig(); err != nil {
			return nil, fmt.Errorf("store: client certificates: %w", err)
		}
	}
	if c.DialTimeout == 0 {
		c.DialTimeout = 2 * time.Second
	}
	// Keepalive pings find a connection to a member that hangs, or one
	// cut with the link under it, and the client then uses the others;
	// gRPC pings every 10 s at the most. Callers that cannot wait that
	// long give each request a deadline of its own (PushRetrying, the
	// agent's progress probe).
	cli, err := clientv3.New(clientv3.Config{Endpoints: c.Endpoints, DialTimeout: c.DialTimeout, TLS: tlsCfg, Logger: zap.NewNop(),
		DialKeepAliveTime: 10 * time.Second, DialKeepAliveTimeout: 2 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("store: connect %v: %w", c.Endpoints, err)
	}
	return cli, nil
}

// Load reads every object and the revision they were read at.
func Load(ctx context.Context, cli *clientv3.Client) (Objects, int64, error) {
	objs, rev, _, err := LoadFabric(ctx, cli)
	return objs, rev, err
}

// LoadFabric is Load, and also the revision of the newest fabric object
// (agents' status keys change the store's revision without changing the
// fabric: a node converged to fabricRev is converged to rev).
func LoadFabric(ctx context.Context, cli *clientv3.Client) (objs Objects, rev, fabricRev int64, err error) {
	resp, err := cli.Get(ctx, Prefix, clientv3.WithPrefix())
	if err != nil {
		return nil, 0, 0, fmt.Errorf("store: read %s: %w", Prefix, err)
	}
	objs = Objects{}
	for _, kv := range resp.Kvs {
		objs[string(kv.Key)] = kv.Value
		if !strings.HasPrefix(string(kv.Key), Prefix+KindStatus+"/") {
			fabricRev = max(fabricRev, kv.ModRevision)
		}
	}
	return objs, resp.Header.Revision, fabricRev, nil
}

// Fabric reads every object and assembles the fabric they describe, its
// refused objects left out.
func Fabric(ctx context.Context, cli *clientv3.Client) (*spec.Spec, error) {
	objs, _, err := Load(ctx, cli)
	if err != nil {
		return nil, err
	}
	s, _, err := Assemble(objs)
	return s, err
}

// ErrConflict says the store changed between the read a push was
// computed from and the write.
var ErrConflict = errors.New("store: the store changed since it was read; run the push again")

// MaxTxnOps is how many operations one transaction carries: etcd's
// default --max-txn-ops, which a cluster bothnia does not run may keep.
const MaxTxnOps = 128

// Write applies the changes that turn have (read at rev) into want, and
// fails with ErrConflict if any object changed after rev: a push never
// overwrites what it did not see. Up to MaxTxnOps changes go in one
// transaction. More go in a chain of them, each guarded by the revision
// the one before wrote, in an order whose every step is a fabric the
// agents can use: what is added or changed first, networks and groups
// before the ports that name them, then what is removed, ports before
// their groups and networks.
func Write(ctx context.Context, cli *clientv3.Client, want Objects, changes []Change, rev int64) (int64, error) {
	rank := map[string]int{KindFabric: 0, KindNetwork: 1, KindGroup: 2, KindPort: 3}
	ordered := slices.Clone(changes)
	slices.SortStableFunc(ordered, func(a, b Change) int {
		ra, rb := rank[kindOf(a.Key)], rank[kindOf(b.Key)]
		if (a.Op == '-') != (b.Op == '-') {
			if a.Op == '-' {
				return 1
			}
			return -1
		}
		if a.Op == '-' {
			return rb - ra
		}
		return ra - rb
	})
	done := 0
	for len(ordered) > 0 {
		n := min(len(ordered), MaxTxnOps)
		var ops []clientv3.Op
		for _, c := range ordered[:n] {
			if c.Op == '-' {
				ops = append(ops, clientv3.OpDelete(c.Key))
			} else {
				ops = append(ops, clientv3.OpPut(c.Key, string(want[c.Key])))
			}
		}
		// Status keys change all the time and are no push's business.
		cmps := []clientv3.Cmp{
			clientv3.Compare(clientv3.ModRevision(Prefix+KindFabric), "<", rev+1),
			clientv3.Compare(clientv3.ModRevision(Prefix+KindNetwork+"/"), "<", rev+1).WithPrefix(),
			clientv3.Compare(clientv3.ModRevision(Prefix+KindPort+"/"), "<", rev+1).WithPrefix(),
			clientv3.Compare(clientv3.ModRevision(Prefix+KindGroup+"/"), "<", rev+1).WithPrefix(),
		}
		resp, err := cli.Txn(ctx).If(cmps...).Then(ops...).Commit()
		if err != nil {
			return 0, fmt.Errorf("store: write changes %d-%d of %d: %w", done+1, done+n, len(changes), err)
		}
		if !resp.Succeeded {
			if done > 0 {
				return 0, fmt.Errorf("%w (%d of its %d changes were written first)", ErrConflict, done, len(changes))
			}
			return 0, ErrConflict
		}
		rev = resp.Header.Revision
		done += n
		ordered = ordered[n:]
	}
	return rev, nil
}

// Push computes what turns the store into the spec and, with write,
// writes it (failing with ErrConflict if the store changed after the
// read). The revision is the write's, or with nothing written that of the
// newest fabric object: a node converged to it is converged to the spec.
func Push(ctx context.Context, cli *clientv3.Client, s *spec.Spec, write bool) ([]Change, int64, error) {
	want, err := Split(s)
	if err != nil {
		return nil, 0, err
	}
	have, rev, fabricRev, err := LoadFabric(ctx, cli)
	if err != nil {
		return nil, 0, err
	}
	changes := Diff(have, want)
	if !write || len(changes) == 0 {
		return changes, fabricRev, nil
	}
	rev, err = Write(ctx, cli, want, changes, rev)
	return changes, rev, err
}

// PushRetrying pushes as Push does, giving each attempt at most attempt:
// a member that hangs (a stuck host, a link cut under an open
// connection) holds a request until the client gives up its connection,
// which gRPC does after ten seconds at the earliest, while the next
// attempt goes to another member. An attempt that timed out or met a
// conflict is made again from a fresh read until ctx ends; a push is a
// diff, so one made again after an attempt that did land writes nothing.
func PushRetrying(ctx context.Context, cli *clientv3.Client, s *spec.Spec, write bool, attempt time.Duration) ([]Change, int64, error) {
	for {
		actx, cancel := context.WithTimeout(ctx, attempt)
		changes, rev, err := Push(actx, cli, s, write)
		timedOut := actx.Err() != nil
		cancel()
		if err == nil || ctx.Err() != nil || !timedOut && !errors.Is(err, ErrConflict) {
			return changes, rev, err
		}
	}
}

// Server is an embedded etcd member: the default store for the lab and
// for a single machine. Beyond one machine, run an etcd cluster and point
// the agents at it.
type Server struct {
	e *embed.Etcd
	// ClientURL is where clients connect.
	ClientURL string
}

// Member configures one etcd member. The zero values make the lab's
// single member: peers on a free loopback port, no TLS.
type Member struct {
	Name string // default "bothnia"
	Dir  string // data directory
	// ClientURL is where clients connect (unix:///path or
	// https://addr:2379), or several such URLs, comma-separated: a unix
	// socket for the agents and an HTTP address for bothnia's ML2 driver,
	// which reads the store through etcd's JSON gateway.
	ClientURL string
	// PeerURL is where the other members reach this one (https://addr:2380
	// between sites); InitialCluster names every member
	// ("knox-1=https://...,knox-2=https://...,epouta-1=https://..."), and
	// State is "new" when the cluster is first formed, "existing" when a
	// member joins a running one.
	PeerURL        string
	InitialCluster string
	State          string
	// TLS: client-facing and peer certificates; with a CA set, clients
	// and peers must present a certificate it signed.
	ClientCert, ClientKey, ClientCA string
	PeerCert, PeerKey, PeerCA       string
}

// StartServer starts a one-member etcd in dir, serving clients on
// clientURL (unix:///path/etcd.sock keeps it off every network: agents in
// network namespaces reach it through the file system).
func StartServer(dir, clientURL string) (*Server, error) {
	return StartMember(Member{Dir: dir, ClientURL: clientURL})
}

// StartMember starts an etcd member and waits until it serves.
func StartMember(m Member) (*Server, error) {
	var cus []url.URL
	for _, c := range strings.Split(m.ClientURL, ",") {
		cu, err := url.Parse(strings.TrimSpace(c))
		if err != nil {
			return nil, fmt.Errorf("store: client URL %q: %w", c, err)
		}
		cus = append(cus, *cu)
	}
	if err := os.MkdirAll(m.Dir, 0o700); err != nil {
		return nil, err
	}
	cfg := embed.NewConfig()
	cfg.Dir = filepath.Join(m.Dir, "data")
	cfg.Name = m.Name
	if cfg.Name == "" {
		cfg.Name = "bothnia"
	}
	if m.PeerURL == "" {
		// A single member still listens for peers: on a free loopback
		// port (etcd cannot name a unix peer socket by an absolute path).
		port, err := FreeLoopbackPort()
		if err != nil {
			return nil, err
		}
		m.PeerURL = fmt.Sprintf("http://127.0.0.1:%d", port)
	}
	peer, err := url.Parse(m.PeerURL)
	if err != nil {
		return nil, fmt.Errorf("store: peer URL %q: %w", m.PeerURL, err)
	}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*peer}, []url.URL{*peer}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = cus, cus
	cfg.InitialCluster = m.InitialCluster
	if cfg.InitialCluster == "" {
		cfg.InitialCluster = cfg.Name + "=" + peer.String()
	}
	if m.State != "" {
		cfg.ClusterState = m.State
	}
	cfg.ClientTLSInfo = transport.TLSInfo{CertFile: m.ClientCert, KeyFile: m.ClientKey, TrustedCAFile: m.ClientCA, ClientCertAuth: m.ClientCA != ""}
	cfg.PeerTLSInfo = transport.TLSInfo{CertFile: m.PeerCert, KeyFile: m.PeerKey, TrustedCAFile: m.PeerCA, ClientCertAuth: m.PeerCA != ""}
	// etcd's own log would be the operator's noise: bothnia reports
	// what matters (ready, failed).
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	for _, cu := range cus {
		if cu.Scheme == "unix" {
			_ = os.Remove(cu.Host + cu.Path) // a socket left by a killed server
		}
	}
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, fmt.Errorf("store: start etcd member %s in %s: %w", cfg.Name, m.Dir, err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(60 * time.Second):
		e.Close()
		return nil, fmt.Errorf("store: etcd member %s not ready after 60s (are the other members of %s up?)", cfg.Name, cfg.InitialCluster)
	}
	return &Server{e: e, ClientURL: m.ClientURL}, nil
}

// Close stops the member; its data stays in its directory.
func (s *Server) Close() { s.e.Close() }

// Err is closed with the member's fatal error, if it fails.
func (s *Server) Err() <-chan error { return s.e.Err() }

// FreeLoopbackPort is a TCP port on 127.0.0.1 free at the time of the call,
// for a member's peer listener.
func FreeLoopbackPort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("store: find a free loopback port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// StartCluster starts a cluster of members on loopback ports in dir, one
// per name, and waits until all serve. Tests use it; a real cluster's
// members are `bothnia etcd` processes on their hosts.
func StartCluster(dir string, names []string) ([]*Server, error) {
	ports, err := freeLoopbackPorts(2 * len(names))
	if err != nil {
		return nil, err
	}
	var cluster []string
	for i, n := range names {
		cluster = append(cluster, fmt.Sprintf("%s=http://127.0.0.1:%d", n, ports[2*i+1]))
	}
	servers := make([]*Server, len(names))
	errs := make(chan error, len(names))
	for i, n := range names {
		go func(i int, n string) {
			srv, err := StartMember(Member{Name: n, Dir: filepath.Join(dir, n),
				ClientURL: fmt.Sprintf("http://127.0.0.1:%d", ports[2*i]), PeerURL: fmt.Sprintf("http://127.0.0.1:%d", ports[2*i+1]),
				InitialCluster: strings.Join(cluster, ","), State: "new"})
			servers[i] = srv
			errs <- err
		}(i, n)
	}
	var all []error
	for range names {
		all = append(all, <-errs)
	}
	if err := errors.Join(all...); err != nil {
		for _, s := range servers {
			if s != nil {
				s.Close()
			}
		}
		return nil, err
	}
	return servers, nil
}

// freeLoopbackPorts are n distinct free ports: every listener stays open
// until all are picked, or the kernel may hand one port out twice.
func freeLoopbackPorts(n int) ([]int, error) {
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("store: find a free loopback port: %w", err)
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
