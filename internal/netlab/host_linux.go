package netlab

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// ifaFNoDAD marks an IPv6 address usable without duplicate address detection.
const ifaFNoDAD = unix.IFA_F_NODAD

// Host is one machine of the lab: a network namespace with its interfaces.
type Host struct {
	// Label is the short name given to AddHost ("lb1").
	Label string
	// Name is the namespace name (Prefix+Label), as `ip netns` shows it.
	Name string
	// Path is the namespace's bind mount, RunDir/Name, for tools and
	// libraries that take a netns path.
	Path string

	lab   *Lab
	ns    netns.NsHandle
	nl    *netlink.Handle
	links []*Link // guarded by lab.mu
}

// Link is an interface of a host, the host end of a veth whose other end is
// a port of a segment's bridge.
type Link struct {
	// Name is the interface name inside the host ("eth0").
	Name string
	// Port is the switch-side veth name, a port of Segment.Bridge.
	Port string
	// Segment is the broadcast domain the link is plugged into.
	Segment *Segment
	// MAC is the interface's hardware address, as the peers see it.
	MAC net.HardwareAddr
	// Addrs are the addresses AddHost or AddLink assigned.
	Addrs []netip.Prefix

	host *Host
}

// documentation lists the only ranges a lab hands out (RFC 5737, RFC 3849),
// plus IPv6 link-local for fixed VRRPv3 sources; anything else is a typo
// that could collide with a real network in a packet capture.
var documentation = []netip.Prefix{
	netip.MustParsePrefix("192.0.2.0/24"),
	netip.MustParsePrefix("198.51.100.0/24"),
	netip.MustParsePrefix("203.0.113.0/24"),
	netip.MustParsePrefix("2001:db8::/32"),
	netip.MustParsePrefix("fe80::/10"),
}

func parseAddrs(addrs []string) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(addrs))
	for _, s := range addrs {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("address %q: %w", s, err)
		}
		ok := false
		for _, d := range documentation {
			if d.Contains(p.Addr()) && p.Bits() >= d.Bits() {
				ok = true
				break
			}
		}
		if !ok {
			return nil, fmt.Errorf("address %s: outside the documentation ranges %v", p, documentation)
		}
		out = append(out, p)
	}
	return out, nil
}

func prefixToIPNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{
		IP:   net.IP(p.Addr().AsSlice()),
		Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen()),
	}
}

// String returns the label, which is what failure messages should name.
func (h *Host) String() string { return h.Label }

// Netlink returns a netlink handle inside the host, to inspect addresses
// and links from the test without entering the namespace. The lab owns and
// closes it.
func (h *Host) Netlink() *netlink.Handle { return h.nl }

// Links returns the host's interfaces in the order they were added.
func (h *Host) Links() []*Link {
	h.lab.mu.Lock()
	defer h.lab.mu.Unlock()
	return slices.Clone(h.links)
}

// Link returns the interface called name, or nil.
func (h *Host) Link(name string) *Link {
	h.lab.mu.Lock()
	defer h.lab.mu.Unlock()
	return h.linkLocked(name)
}

func (h *Host) linkLocked(name string) *Link {
	for _, l := range h.links {
		if l.Name == name {
			return l
		}
	}
	return nil
}

// MAC is the hardware address of eth0.
func (h *Host) MAC() net.HardwareAddr {
	if l := h.Link("eth0"); l != nil {
		return l.MAC
	}
	return nil
}

// Addrs are the addresses assigned to eth0.
func (h *Host) Addrs() []netip.Prefix {
	if l := h.Link("eth0"); l != nil {
		return slices.Clone(l.Addrs)
	}
	return nil
}

// IPv4 is the first IPv4 address of eth0, or the zero Addr.
func (h *Host) IPv4() netip.Addr { return h.firstAddr(netip.Addr.Is4) }

// IPv6 is the first global IPv6 address of eth0, or the zero Addr.
func (h *Host) IPv6() netip.Addr {
	return h.firstAddr(func(a netip.Addr) bool { return a.Is6() && !a.IsLinkLocalUnicast() })
}

func (h *Host) firstAddr(match func(netip.Addr) bool) netip.Addr {
	for _, p := range h.Addrs() {
		if match(p.Addr()) {
			return p.Addr()
		}
	}
	return netip.Addr{}
}

// Do runs fn on an OS thread that is inside the host's namespace, so netlink
// calls and sockets fn makes belong to the host. The thread is locked for
// the duration and put back into the original namespace afterwards; if that
// fails the thread is discarded rather than reused. Goroutines started by fn
// do NOT inherit the namespace (they may run on any thread), but sockets fn
// opens stay in the namespace wherever they are later used. fn runs on
// another goroutine, so it must return an error instead of calling
// t.FailNow; a panic in fn is re-raised in the caller.
func (h *Host) Do(fn func() error) error {
	if err := doIn(h.Path, fn); err != nil {
		return fmt.Errorf("in %s: %w", h.Label, err)
	}
	return nil
}

// AcceptAndCount listens on the TCP address addr inside the host and,
// until the lab's test ends, accepts every connection, counts it in n and
// closes it: the cheapest real server there is, for health-check
// benchmarks that count the probes reaching it. It listens on plain TCP,
// as real servers do, not on the Multipath TCP Go's listeners default to
// (whose costs, in a lab where both ends share one kernel, the prober's
// process would be charged for).
func (h *Host) AcceptAndCount(addr string, n *atomic.Int64) error {
	var l net.Listener
	lc := net.ListenConfig{}
	lc.SetMultipathTCP(false)
	if err := h.Do(func() (err error) { l, err = lc.Listen(context.Background(), "tcp", addr); return err }); err != nil {
		return fmt.Errorf("listen %s: %w", addr, err)
	}
	h.lab.t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			n.Add(1)
			c.Close()
		}
	}()
	return nil
}

// command prepares argv to run inside the host: through `ip netns exec`,
// which also gives the process the host's /sys and /etc/netns/NAME, or, when
// no iproute2 ip exists, directly, to be started by startIn with setns.
func (h *Host) command(ctx context.Context, argv []string) *exec.Cmd {
	var cmd *exec.Cmd
	if h.lab.ipCmd != "" {
		cmd = exec.CommandContext(ctx, h.lab.ipCmd, append([]string{"netns", "exec", h.Name}, argv...)...)
	} else {
		cmd = exec.CommandContext(ctx, argv[0], argv[1:]...)
	}
	// Own process group so one kill reaches whatever the command forks;
	// Pdeathsig so nothing outlives a test binary that is killed outright.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = time.Second
	return cmd
}

// startIn starts cmd prepared by command. Without ip, the fork happens on a
// thread inside the namespace, and the child inherits it.
func (h *Host) startIn(cmd *exec.Cmd) error {
	if h.lab.ipCmd != "" {
		return cmd.Start()
	}
	return h.Do(cmd.Start)
}

// Run runs argv inside the host and returns its combined output. The error
// carries the output too, so a failed command explains itself in the log.
func (h *Host) Run(ctx context.Context, argv ...string) ([]byte, error) {
	if len(argv) == 0 {
		return nil, fmt.Errorf("run in %s: empty command", h.Label)
	}
	var out strings.Builder
	cmd := h.command(ctx, argv)
	cmd.Stdout, cmd.Stderr = &out, &out
	err := h.startIn(cmd)
	if err == nil {
		err = cmd.Wait()
	}
	if err != nil {
		return []byte(out.String()), fmt.Errorf("run %q in %s: %w; output:\n%s", argv, h.Label, err, out.String())
	}
	return []byte(out.String()), nil
}

// Ping sends single echo requests from the host to dst until one is
// answered or ctx ends. Retrying absorbs ARP and IPv6 neighbour discovery
// of a fresh link. ping is looked up with LookPath, so the VM's busybox
// ping serves as well as iputils.
func (h *Host) Ping(ctx context.Context, dst netip.Addr) error {
	ping, err := LookPath("ping")
	if err != nil {
		return fmt.Errorf("ping %s from %s: %w", dst, h.Label, err)
	}
	for {
		attempt, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := h.Run(attempt, ping, "-c", "1", "-W", "2", dst.String())
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("ping %s from %s: %w (last attempt: %w)", dst, h.Label, ctx.Err(), err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// Host returns the host the link belongs to.
func (l *Link) Host() *Host { return l.host }

// Unplug sets the switch port down, so the host's interface loses carrier
// as if its cable were pulled, without the host doing anything itself.
func (l *Link) Unplug() error { return l.setPort(false) }

// Plug undoes Unplug.
func (l *Link) Plug() error {
	if err := l.setPort(true); err != nil {
		return err
	}
	return waitCarrier(l.host.nl, l.Name, 5*time.Second)
}

func (l *Link) setPort(up bool) error {
	sw := l.host.lab.swNL
	pl, err := sw.LinkByName(l.Port)
	if err != nil {
		return fmt.Errorf("find port %s of %s %s: %w", l.Port, l.host.Label, l.Name, err)
	}
	if up {
		err = sw.LinkSetUp(pl)
	} else {
		err = sw.LinkSetDown(pl)
	}
	if err != nil {
		return fmt.Errorf("set port %s of %s %s up=%t: %w", l.Port, l.host.Label, l.Name, up, err)
	}
	return nil
}
