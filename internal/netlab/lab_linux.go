package netlab

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// labSeq numbers the labs of this process; with the pid it makes namespace
// names unique across parallel tests and parallel test binaries.
var labSeq atomic.Uint64

// stopGrace is how long a process gets between SIGTERM and SIGKILL at
// teardown: enough for a daemon to release its VIPs, short enough that a
// hung one does not stall the test run.
const stopGrace = 3 * time.Second

// switchLabel names the switch namespace within a lab, so no host may use it.
const switchLabel = "sw"

// validLabel keeps host labels usable as file names under RunDir.
var validLabel = regexp.MustCompile(`^[A-Za-z0-9_-]{1,32}$`)

// Lab is a network of namespaces owned by one test. Its methods that take no
// error return report failures with t.Fatalf, so call them from the test's
// own goroutine.
type Lab struct {
	// Prefix starts the name of every namespace of this lab
	// ("dl<pid>-<n>-"), so a leftover can be traced to its test process.
	Prefix string
	// Switch is the name of the namespace that holds the bridges.
	Switch string
	// LAN is the segment AddHost plugs eth0 into.
	LAN *Segment

	t     testing.TB
	ipCmd string // iproute2 ip for `ip netns exec`; "" to enter by setns

	mu       sync.Mutex
	closed   bool
	swNS     netns.NsHandle
	swNL     *netlink.Handle
	owned    []string        // namespace names in creation order
	labels   map[string]bool // host labels in use
	ports    map[string]bool // interface names in use in the switch namespace
	segments []*Segment
	hosts    []*Host
	procs    []*Proc

	closeOnce sync.Once
	closeErr  error
}

// Segment is one broadcast domain: a bridge in the lab's switch namespace.
// A second segment keeps, for example, VRRP sync or a backend network apart
// from the client-facing LAN.
type Segment struct {
	// Name is the label given to NewSegment ("lan" for Lab.LAN).
	Name string
	// Bridge is the bridge's interface name inside the switch namespace.
	Bridge string

	lab *Lab
}

// New creates an empty lab (a switch namespace with the LAN bridge) and
// registers its teardown with t.Cleanup. It calls Require first, so a test
// that cannot have namespaces skips (or fails in CI) right here.
func New(t testing.TB) *Lab {
	t.Helper()
	Require(t)
	lab := &Lab{
		Prefix: fmt.Sprintf("dl%d-%d-", os.Getpid(), labSeq.Add(1)),
		t:      t,
		swNS:   netns.None(),
		labels: map[string]bool{switchLabel: true},
		ports:  map[string]bool{"lo": true},
	}
	lab.Switch = lab.Prefix + switchLabel
	// Registered before anything exists, so a failure halfway through
	// setup still removes what was made.
	t.Cleanup(func() {
		if err := lab.Close(); err != nil {
			t.Errorf("netlab teardown: %v", err)
		}
	})
	if err := lab.setup(); err != nil {
		t.Fatalf("netlab: %v", err)
	}
	return lab
}

func (lab *Lab) setup() error {
	if ip, err := iproute2(); err == nil {
		lab.ipCmd = ip
	}
	if err := shareRunDir(); err != nil {
		return err
	}
	sweepStale()
	ns, err := newNamedNS(lab.Switch)
	if err != nil {
		return err
	}
	lab.mu.Lock()
	lab.swNS = ns
	lab.owned = append(lab.owned, lab.Switch)
	lab.mu.Unlock()

	// The switch forwards frames only; with IPv6 off its bridges and ports
	// send no router solicitations or MLD reports into packet captures,
	// and where br_netfilter is loaded, bridged frames skip the host's
	// iptables as they would on a real switch (the hooks cost each frame
	// time that is charged to whichever process sent it).
	if err := doIn(lab.switchPath(), func() error {
		return errors.Join(
			writeSysctl("net.ipv6.conf.all.disable_ipv6", "1"),
			writeSysctl("net.ipv6.conf.default.disable_ipv6", "1"),
			writeSysctl("net.bridge.bridge-nf-call-iptables", "0"),
			writeSysctl("net.bridge.bridge-nf-call-ip6tables", "0"),
			writeSysctl("net.bridge.bridge-nf-call-arptables", "0"),
		)
	}); err != nil {
		return fmt.Errorf("switch %s: %w", lab.Switch, err)
	}
	lab.swNL, err = netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("netlink handle in switch %s: %w", lab.Switch, err)
	}
	if err := setUp(lab.swNL, "lo"); err != nil {
		return fmt.Errorf("switch %s: %w", lab.Switch, err)
	}
	lab.LAN, err = lab.newSegment("lan")
	return err
}

// staleName matches the namespaces of any lab: "dl<pid>-<n>-<label>".
var staleName = regexp.MustCompile(`^dl([0-9]+)-[0-9]+-`)

// sweepStale removes namespaces left by a test process that died without
// its cleanup (SIGKILL, a timeout): their pid no longer runs. Names of live
// processes, including parallel test binaries, are left alone.
var sweepStale = sync.OnceFunc(sweepStaleOnce)

func sweepStaleOnce() {
	names, err := Namespaces()
	if err != nil {
		return
	}
	for _, name := range names {
		m := staleName.FindStringSubmatch(name)
		if m == nil {
			continue
		}
		pid, err := strconv.Atoi(m[1])
		if err != nil || pid == os.Getpid() {
			continue
		}
		if err := unix.Kill(pid, 0); errors.Is(err, unix.ESRCH) {
			_ = deleteNamedNS(name)
		}
	}
}

func (lab *Lab) switchPath() string { return filepath.Join(RunDir, lab.Switch) }

// SwitchNetlink returns a netlink handle inside the switch namespace, for
// tests that inspect or disturb the bridges (forwarding database, port
// state). The lab owns and closes it.
func (lab *Lab) SwitchNetlink() *netlink.Handle { return lab.swNL }

// Namespaces lists the names of the namespaces this lab created, the
// switch first.
func (lab *Lab) Namespaces() []string {
	lab.mu.Lock()
	defer lab.mu.Unlock()
	return slices.Clone(lab.owned)
}

// NewSegment adds another bridge to the switch namespace. Hosts join it with
// Segment.AddLink.
func (lab *Lab) NewSegment(name string) *Segment {
	lab.t.Helper()
	s, err := lab.newSegment(name)
	if err != nil {
		lab.t.Fatalf("netlab: %v", err)
	}
	return s
}

func (lab *Lab) newSegment(name string) (*Segment, error) {
	lab.mu.Lock()
	defer lab.mu.Unlock()
	if lab.closed {
		return nil, fmt.Errorf("segment %s: lab closed", name)
	}
	if lab.swNL == nil {
		return nil, fmt.Errorf("segment %s: switch not set up", name)
	}
	s := &Segment{Name: name, Bridge: fmt.Sprintf("br%d", len(lab.segments)), lab: lab}
	off := false
	// Without snooping the bridge floods all multicast like a hub, so
	// VRRP adverts reach every port whatever MLD/IGMP state the hosts have.
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: s.Bridge}, MulticastSnooping: &off}
	if err := lab.swNL.LinkAdd(br); err != nil {
		return nil, fmt.Errorf("segment %s: add bridge %s in %s: %w", name, s.Bridge, lab.Switch, err)
	}
	lab.ports[s.Bridge] = true
	if err := setUp(lab.swNL, s.Bridge); err != nil {
		return nil, fmt.Errorf("segment %s: %w", name, err)
	}
	lab.segments = append(lab.segments, s)
	return s, nil
}

// AddHost creates a host namespace named Prefix+label with lo up and one
// interface, eth0, on the LAN, carrying addrs ("192.0.2.11/24",
// "2001:db8::11/64"). DAD is disabled in the host so IPv6 addresses,
// including the link-local one VRRPv3 sends from, are usable at once.
func (lab *Lab) AddHost(label string, addrs ...string) *Host {
	lab.t.Helper()
	h, err := lab.addHost(label)
	if err == nil {
		_, err = lab.LAN.addLink(h, "eth0", addrs)
	}
	if err != nil {
		lab.t.Fatalf("netlab: %v", err)
	}
	return h
}

// AddLink plugs another interface of h into the LAN; use Segment.AddLink
// for another segment.
func (lab *Lab) AddLink(h *Host, ifname string, addrs ...string) *Link {
	lab.t.Helper()
	return lab.LAN.AddLink(h, ifname, addrs...)
}

func (lab *Lab) addHost(label string) (*Host, error) {
	if !validLabel.MatchString(label) {
		return nil, fmt.Errorf("host %q: label must match %s", label, validLabel)
	}
	lab.mu.Lock()
	if lab.closed || lab.swNL == nil {
		lab.mu.Unlock()
		return nil, fmt.Errorf("host %s: lab closed or not set up", label)
	}
	if lab.labels[label] {
		lab.mu.Unlock()
		return nil, fmt.Errorf("host %s: label already used in this lab", label)
	}
	lab.labels[label] = true
	lab.mu.Unlock()

	h := &Host{Label: label, Name: lab.Prefix + label, lab: lab, ns: netns.None()}
	h.Path = filepath.Join(RunDir, h.Name)
	ns, err := newNamedNS(h.Name)
	if err != nil {
		return nil, fmt.Errorf("host %s: %w", label, err)
	}
	lab.mu.Lock()
	h.ns = ns
	lab.owned = append(lab.owned, h.Name)
	lab.hosts = append(lab.hosts, h)
	lab.mu.Unlock()

	// Before any link exists, so every interface inherits "default".
	if err := doIn(h.Path, func() error {
		return errors.Join(
			writeSysctl("net.ipv6.conf.all.accept_dad", "0"),
			writeSysctl("net.ipv6.conf.default.accept_dad", "0"),
		)
	}); err != nil {
		return nil, fmt.Errorf("host %s: %w", label, err)
	}
	h.nl, err = netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("host %s: netlink handle: %w", label, err)
	}
	if err := setUp(h.nl, "lo"); err != nil {
		return nil, fmt.Errorf("host %s: %w", label, err)
	}
	return h, nil
}

// AddLink creates interface ifname in h, plugged into this segment, with
// addrs assigned and the link up.
func (s *Segment) AddLink(h *Host, ifname string, addrs ...string) *Link {
	s.lab.t.Helper()
	l, err := s.addLink(h, ifname, addrs)
	if err != nil {
		s.lab.t.Fatalf("netlab: %v", err)
	}
	return l
}

func (s *Segment) addLink(h *Host, ifname string, addrs []string) (*Link, error) {
	lab := s.lab
	if h.lab != lab {
		return nil, fmt.Errorf("link %s: host %s belongs to another lab", ifname, h.Label)
	}
	if len(ifname) == 0 || len(ifname) > 15 || strings.ContainsAny(ifname, "/: \t\n") {
		return nil, fmt.Errorf("host %s: bad interface name %q (1-15 chars, no '/', ':' or spaces)", h.Label, ifname)
	}
	prefixes, err := parseAddrs(addrs)
	if err != nil {
		return nil, fmt.Errorf("host %s %s: %w", h.Label, ifname, err)
	}

	lab.mu.Lock()
	if lab.closed {
		lab.mu.Unlock()
		return nil, fmt.Errorf("host %s %s: lab closed", h.Label, ifname)
	}
	if h.linkLocked(ifname) != nil {
		lab.mu.Unlock()
		return nil, fmt.Errorf("host %s: %s already exists", h.Label, ifname)
	}
	// The switch side is named after host and interface when that fits in
	// IFNAMSIZ, which makes captures on the switch readable.
	port := h.Label + "-" + ifname
	for n := len(lab.ports); len(port) > 15 || lab.ports[port]; n++ {
		port = fmt.Sprintf("vp%d", n)
	}
	lab.ports[port] = true
	lab.mu.Unlock()

	// Created by a socket in the switch namespace, with the peer placed
	// straight into the host: neither end ever exists in the root namespace.
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: port},
		PeerName:      ifname,
		PeerNamespace: netlink.NsFd(int(h.ns)),
	}
	if err := lab.swNL.LinkAdd(veth); err != nil {
		return nil, fmt.Errorf("host %s %s: add veth %s in %s: %w", h.Label, ifname, port, lab.Switch, err)
	}
	br, err := lab.swNL.LinkByName(s.Bridge)
	if err != nil {
		return nil, fmt.Errorf("segment %s: find bridge %s: %w", s.Name, s.Bridge, err)
	}
	pl, err := lab.swNL.LinkByName(port)
	if err != nil {
		return nil, fmt.Errorf("host %s %s: find switch port %s: %w", h.Label, ifname, port, err)
	}
	if err := lab.swNL.LinkSetMaster(pl, br); err != nil {
		return nil, fmt.Errorf("host %s %s: attach port %s to %s: %w", h.Label, ifname, port, s.Bridge, err)
	}
	if err := lab.swNL.LinkSetUp(pl); err != nil {
		return nil, fmt.Errorf("host %s %s: set port %s up: %w", h.Label, ifname, port, err)
	}

	hl, err := h.nl.LinkByName(ifname)
	if err != nil {
		return nil, fmt.Errorf("host %s: find %s: %w", h.Label, ifname, err)
	}
	for _, p := range prefixes {
		a := &netlink.Addr{IPNet: prefixToIPNet(p)}
		if p.Addr().Is6() {
			a.Flags = ifaFNoDAD
		}
		if err := h.nl.AddrAdd(hl, a); err != nil {
			return nil, fmt.Errorf("host %s: add %s to %s: %w", h.Label, p, ifname, err)
		}
	}
	if err := h.nl.LinkSetUp(hl); err != nil {
		return nil, fmt.Errorf("host %s: set %s up: %w", h.Label, ifname, err)
	}
	// Return a link that carries packets: daemons started at once would
	// otherwise lose their first frames (keepalived starts in FAULT).
	if err := waitCarrier(h.nl, ifname, 5*time.Second); err != nil {
		return nil, fmt.Errorf("host %s: %w", h.Label, err)
	}
	l := &Link{
		Name:    ifname,
		Port:    port,
		Segment: s,
		MAC:     hl.Attrs().HardwareAddr,
		Addrs:   prefixes,
		host:    h,
	}
	lab.mu.Lock()
	h.links = append(h.links, l)
	lab.mu.Unlock()
	return l, nil
}

// waitCarrier waits until the named link is operationally up. The carrier
// flag comes first; the device's queue is only activated later by the
// kernel's linkwatch (up to a second on a busy machine), and until then
// what is sent is dropped.
func waitCarrier(h *netlink.Handle, name string, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		l, err := h.LinkByName(name)
		if err != nil {
			return fmt.Errorf("find %s: %w", name, err)
		}
		if l.Attrs().OperState == netlink.OperUp {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s has no carrier after %v", name, d)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// setUp brings the named link of handle h up.
func setUp(h *netlink.Handle, name string) error {
	l, err := h.LinkByName(name)
	if err != nil {
		return fmt.Errorf("find %s: %w", name, err)
	}
	if err := h.LinkSetUp(l); err != nil {
		return fmt.Errorf("set %s up: %w", name, err)
	}
	return nil
}

// Close stops every process the lab started (SIGTERM, then SIGKILL to the
// process group), deletes all its namespaces and checks that none of them is
// left in RunDir. It is idempotent; New's cleanup calls it too, so a test
// calls it only to assert on what teardown leaves behind.
func (lab *Lab) Close() error {
	lab.closeOnce.Do(func() { lab.closeErr = lab.teardown() })
	return lab.closeErr
}

func (lab *Lab) teardown() error {
	lab.mu.Lock()
	lab.closed = true
	procs, hosts, owned := lab.procs, lab.hosts, lab.owned
	lab.mu.Unlock()

	var errs []error
	// Processes first, in parallel: each may take the whole grace period,
	// and a process still running in a namespace keeps it alive.
	var wg sync.WaitGroup
	for _, p := range procs {
		wg.Go(func() { p.stop(stopGrace) })
	}
	wg.Wait()
	for _, p := range procs {
		p.logOutput(lab.t)
	}

	// Our own sockets and descriptors hold the namespaces too.
	for _, h := range hosts {
		if h.nl != nil {
			h.nl.Close()
		}
		if h.ns.IsOpen() {
			errs = append(errs, h.ns.Close())
		}
	}
	if lab.swNL != nil {
		lab.swNL.Close()
	}
	if lab.swNS.IsOpen() {
		errs = append(errs, lab.swNS.Close())
	}

	// Hosts before the switch, newest first.
	for _, name := range slices.Backward(owned) {
		if err := deleteNamedNS(name); err != nil {
			errs = append(errs, err)
		}
	}
	// Also catches a namespace whose creation failed halfway.
	names, err := Namespaces()
	errs = append(errs, err)
	for _, n := range names {
		if strings.HasPrefix(n, lab.Prefix) {
			errs = append(errs, fmt.Errorf("netns %s left behind", n), deleteNamedNS(n))
		}
	}
	return errors.Join(errs...)
}
