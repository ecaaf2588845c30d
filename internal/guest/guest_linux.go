// Package guest boots Debian guests under qemu (software emulation) for
// the tests whose subject this machine's kernel cannot hold: 802.1Q VLAN
// devices, VLAN-filtering bridges. Each guest runs Debian's own kernel
// from the image scripts/guest-image.sh builds; the guests' NICs are taps
// in a network namespace of the cluster's own, joined by a bridge there
// (the fibre), and every frame a NIC carries is written to a pcap by qemu.
// A directory of the host is shared into every guest at /host: bothnia's
// binary and the guest agent (guestd), which runs the host's requests.
//
// Guests are slow to make (about 5 s to boot, longer for several on two
// cores) and each holds about 300 MB: use them where namespaces cannot
// prove the point, and share one cluster per test binary.
package guest

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/bothnia/bothnia/internal/guest/wire"
)

// Image is a built guest image: vmlinux, initrd.img and rootfs.img.
type Image struct{ Dir string }

// DefaultCache is where BuildImage keeps images between runs.
const DefaultCache = "/var/cache/bothnia/guest"

// RepoRoot is the repository this package is in.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// BuildImage builds the guest image into cache, or finds it there.
func BuildImage(cache string) (Image, error) {
	cmd := exec.Command("bash", filepath.Join(RepoRoot(), "scripts", "guest-image.sh"), cache)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return Image{}, fmt.Errorf("guest: scripts/guest-image.sh: %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	return Image{Dir: strings.TrimSpace(string(out))}, nil
}

// Config is one guest to boot.
type Config struct {
	Name string
	// NICs are the guest's network cards, each a port of one of the
	// cluster's segments; the first is the guest's em1.
	NICs  []NIC
	MemMB int // 0: 512
}

// NIC is a guest's network card.
type NIC struct {
	Segment string // the cluster bridge it is plugged into
	MAC     string
}

// Options describe a cluster.
type Options struct {
	Prefix string // the cluster's namespace is <Prefix>-guests
	Image  Image
	Guests []Config
	// Share is the directory every guest mounts at /host; Start puts
	// guestd (and bothnia, with Bothnia) in it.
	Share   string
	Bothnia bool
	// Boot bounds how long the guests may take to answer (0: 90 s).
	Boot time.Duration
}

// Cluster is a set of running guests and the segments joining them.
type Cluster struct {
	NS     string // the host namespace holding the segments and taps
	Share  string
	Guests map[string]*Guest
	// Booted is how long the guests took from qemu's start until every
	// agent answered.
	Booted time.Duration
	order  []*Guest
	dir    string
}

// Guest is one running guest.
type Guest struct {
	Name   string
	Dir    string // its run directory: serial.log, <nic>.pcap, ctl.sock
	NICs   []NIC
	Taps   []string // the host-side tap of each NIC, in the cluster's namespace
	cmd    *exec.Cmd
	exited chan struct{}

	mu      sync.Mutex
	conn    net.Conn
	next    int64
	pending map[int64]chan wire.Response
	enc     *json.Encoder
}

// Start boots the guests and waits until every one's agent answers. On
// error everything it made is gone again.
func Start(ctx context.Context, o Options) (c *Cluster, err error) {
	if o.Boot == 0 {
		o.Boot = 90 * time.Second
	}
	dir, err := os.MkdirTemp("", "bothnia-guests-")
	if err != nil {
		return nil, err
	}
	c = &Cluster{NS: o.Prefix + "-guests", Share: o.Share, Guests: map[string]*Guest{}, dir: dir}
	made := c // the returns below set c to nil
	defer func() {
		if err != nil {
			made.Close()
			c = nil
		}
	}()
	if err := buildInto(o.Share, o.Bothnia); err != nil {
		return nil, err
	}
	if err := ip("netns", "add", c.NS); err != nil {
		return nil, err
	}
	if err := ip("-n", c.NS, "link", "set", "lo", "up"); err != nil {
		return nil, err
	}
	// A quieter switch: no IPv6 router solicitations of its ports on the
	// captures (the bridge still sends IGMP reports: SwitchMACs).
	if out, err := exec.Command("ip", "netns", "exec", c.NS, "sysctl", "-qw",
		"net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1").CombinedOutput(); err != nil {
		return nil, fmt.Errorf("guest: %s: sysctl: %w: %s", c.NS, err, out)
	}
	segments := map[string]bool{}
	for _, g := range o.Guests {
		for _, n := range g.NICs {
			if segments[n.Segment] {
				continue
			}
			segments[n.Segment] = true
			// A plain bridge: it forwards tagged frames as they are, as a
			// trunk port of a switch does, and learns like one.
			if err := ip("-n", c.NS, "link", "add", n.Segment, "type", "bridge"); err != nil {
				return nil, err
			}
			if err := ip("-n", c.NS, "link", "set", n.Segment, "up"); err != nil {
				return nil, err
			}
		}
	}
	booting := time.Now()
	for i, cfg := range o.Guests {
		g, err := c.boot(i, cfg, o)
		if err != nil {
			return nil, err
		}
		c.Guests[cfg.Name] = g
		c.order = append(c.order, g)
	}
	ctx, cancel := context.WithTimeout(ctx, o.Boot)
	defer cancel()
	var wg sync.WaitGroup
	errs := make([]error, len(c.order))
	for i, g := range c.order {
		wg.Add(1)
		go func(i int, g *Guest) {
			defer wg.Done()
			errs[i] = g.connect(ctx)
		}(i, g)
	}
	wg.Wait()
	c.Booted = time.Since(booting)
	return c, errors.Join(errs...)
}

// buildInto builds guestd (and bothnia) for the guests, statically.
func buildInto(share string, bothnia bool) error {
	targets := [][2]string{{"guestd", "./internal/guest/guestd"}}
	if bothnia {
		targets = append(targets, [2]string{"bothnia", "./cmd/bothnia"})
	}
	for _, t := range targets {
		cmd := exec.Command("go", "build", "-o", filepath.Join(share, t[0]), t[1])
		cmd.Dir = RepoRoot()
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("guest: go build %s: %w: %s", t[1], err, out)
		}
	}
	return nil
}

func (c *Cluster) boot(i int, cfg Config, o Options) (*Guest, error) {
	g := &Guest{Name: cfg.Name, Dir: filepath.Join(c.dir, cfg.Name), NICs: cfg.NICs,
		pending: map[int64]chan wire.Response{}, exited: make(chan struct{})}
	if err := os.MkdirAll(g.Dir, 0o755); err != nil {
		return nil, err
	}
	mem := cfg.MemMB
	if mem == 0 {
		mem = 512
	}
	em1 := ""
	if len(cfg.NICs) > 0 {
		em1 = cfg.NICs[0].MAC
	}
	img := o.Image.Dir
	args := []string{"netns", "exec", c.NS, "qemu-system-x86_64",
		"-name", cfg.Name, "-accel", "tcg", "-cpu", "max", "-m", fmt.Sprint(mem), "-smp", "1",
		"-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
		"-serial", "file:" + filepath.Join(g.Dir, "serial.log"),
		"-bios", "/usr/share/qemu/qboot.rom",
		"-kernel", filepath.Join(img, "vmlinux"), "-initrd", filepath.Join(img, "initrd.img"),
		"-append", fmt.Sprintf("console=ttyS0 panic=-1 quiet bothnia.name=%s bothnia.em1=%s", cfg.Name, em1),
		"-drive", "file=" + filepath.Join(img, "rootfs.img") + ",if=virtio,format=raw,snapshot=on",
		"-virtfs", "local,path=" + o.Share + ",mount_tag=host,security_model=none",
		"-chardev", "socket,id=ctl,path=" + filepath.Join(g.Dir, "ctl.sock") + ",server=on,wait=off",
		"-device", "virtio-serial-pci", "-device", "virtserialport,chardev=ctl,name=ctl",
	}
	for j, n := range cfg.NICs {
		tap := fmt.Sprintf("g%dn%d", i, j)
		g.Taps = append(g.Taps, tap)
		// No virtio-net header on the tap: the capture holds plain frames.
		args = append(args,
			"-netdev", fmt.Sprintf("tap,id=n%d,ifname=%s,script=no,downscript=no,vnet_hdr=off", j, tap),
			"-device", fmt.Sprintf("virtio-net-pci,netdev=n%d,mac=%s", j, n.MAC),
			"-object", fmt.Sprintf("filter-dump,id=d%d,netdev=n%d,file=%s", j, j, g.PcapPath(j)))
	}
	cmd := exec.Command("ip", args...)
	log, err := os.Create(filepath.Join(g.Dir, "qemu.log"))
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		log.Close()
		return nil, fmt.Errorf("guest %s: start qemu: %w", cfg.Name, err)
	}
	g.cmd = cmd
	go func() { _ = cmd.Wait(); log.Close(); close(g.exited) }()
	// qemu makes the taps as it starts; plug each into its segment.
	for j, tap := range g.Taps {
		if err := c.plug(g, tap, cfg.NICs[j].Segment); err != nil {
			return nil, err
		}
	}
	return g, nil
}

func (c *Cluster) plug(g *Guest, tap, segment string) error {
	deadline := time.Now().Add(20 * time.Second)
	for {
		err := ip("-n", c.NS, "link", "set", tap, "master", segment, "up")
		if err == nil {
			return nil
		}
		select {
		case <-g.exited:
			return fmt.Errorf("guest %s: qemu exited: %s", g.Name, g.tail("qemu.log", 20))
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("guest %s: tap %s never appeared: %w", g.Name, tap, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// SwitchMACs are the MACs of the host's side of the segments (bridges
// and taps), whose own frames (IGMP reports) are on the captures too.
func (c *Cluster) SwitchMACs() (map[string]bool, error) {
	out, err := exec.Command("ip", "-n", c.NS, "-j", "link", "show").Output()
	if err != nil {
		return nil, fmt.Errorf("guest: ip -n %s link: %w", c.NS, err)
	}
	var ls []struct {
		Address string `json:"address"`
	}
	if err := json.Unmarshal(out, &ls); err != nil {
		return nil, err
	}
	m := map[string]bool{}
	for _, l := range ls {
		m[l.Address] = true
	}
	return m, nil
}

// PcapPath is where qemu writes every frame NIC i carries, both ways.
func (g *Guest) PcapPath(i int) string { return filepath.Join(g.Dir, fmt.Sprintf("nic%d.pcap", i)) }

// Serial is what the guest wrote to its console so far (its last lines).
func (g *Guest) Serial(lines int) string { return g.tail("serial.log", lines) }

func (g *Guest) tail(file string, lines int) string {
	b, _ := os.ReadFile(filepath.Join(g.Dir, file))
	ls := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(ls) > lines {
		ls = ls[len(ls)-lines:]
	}
	return strings.Join(ls, "\n")
}

// connect dials the guest's serial port and waits for its agent.
func (g *Guest) connect(ctx context.Context) error {
	sock := filepath.Join(g.Dir, "ctl.sock")
	for {
		conn, err := net.Dial("unix", sock)
		if err == nil {
			g.conn, g.enc = conn, json.NewEncoder(conn)
			go g.read(conn)
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("guest %s: no control socket: %w", g.Name, err)
		case <-g.exited:
			return fmt.Errorf("guest %s: qemu exited: %s", g.Name, g.tail("qemu.log", 20))
		case <-time.After(20 * time.Millisecond):
		}
	}
	// Requests sent before guestd opens the port wait in qemu; ask again
	// now and then in case one was lost while the guest booted.
	for {
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := g.Do(pctx, wire.Request{Op: wire.OpPing})
		cancel()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("guest %s: the agent did not answer within the boot time; console:\n%s", g.Name, g.Serial(30))
		}
	}
}

func (g *Guest) read(conn net.Conn) {
	sc := bufio.NewScanner(conn)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for sc.Scan() {
		var r wire.Response
		if json.Unmarshal(sc.Bytes(), &r) != nil {
			continue // the console's noise before guestd owns the port
		}
		g.mu.Lock()
		ch := g.pending[r.ID]
		delete(g.pending, r.ID)
		g.mu.Unlock()
		if ch != nil {
			ch <- r
		}
	}
}

// Do sends a request and waits for its answer (or ctx).
func (g *Guest) Do(ctx context.Context, req wire.Request) (wire.Response, error) {
	ch := make(chan wire.Response, 1)
	g.mu.Lock()
	g.next++
	req.ID = g.next
	if req.TimeoutMS == 0 {
		if dl, ok := ctx.Deadline(); ok {
			req.TimeoutMS = time.Until(dl).Milliseconds()
		}
	}
	g.pending[req.ID] = ch
	err := g.enc.Encode(req)
	g.mu.Unlock()
	if err != nil {
		return wire.Response{}, fmt.Errorf("guest %s: send: %w", g.Name, err)
	}
	select {
	case r := <-ch:
		return r, nil
	case <-ctx.Done():
		g.mu.Lock()
		delete(g.pending, req.ID)
		g.mu.Unlock()
		return wire.Response{}, fmt.Errorf("guest %s: %s: %w", g.Name, req.Op, ctx.Err())
	case <-g.exited:
		return wire.Response{}, fmt.Errorf("guest %s: qemu exited; console:\n%s", g.Name, g.Serial(30))
	}
}

// Sh runs a shell script in the guest (PATH starts with /host) and
// returns its output; a non-zero exit is an error carrying both streams.
func (g *Guest) Sh(ctx context.Context, script string) (string, error) {
	r, err := g.Do(ctx, wire.Request{Op: wire.OpSh, Script: script})
	if err != nil {
		return "", err
	}
	if r.RC != 0 {
		return r.Out, fmt.Errorf("guest %s: exit %d: %s\n%s%s", g.Name, r.RC, firstLine(script), r.Out, r.Err)
	}
	return r.Out, nil
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i] + " …"
	}
	return s
}

// Close stops every guest and removes the cluster's namespace and files.
func (c *Cluster) Close() {
	for _, g := range c.order {
		if g.conn != nil {
			g.conn.Close()
		}
		if g.cmd != nil && g.cmd.Process != nil {
			_ = syscall.Kill(-g.cmd.Process.Pid, syscall.SIGKILL)
			<-g.exited
		}
	}
	_ = ip("netns", "del", c.NS)
	os.RemoveAll(c.dir)
}

// Guest returns a guest by name; the caller's test fails on a wrong name
// through the nil it gets.
func (c *Cluster) Guest(name string) *Guest { return c.Guests[name] }

func ip(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}
