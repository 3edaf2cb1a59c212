//go:build vmguest

package ipvs

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/netip"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/directord/directord/internal/config"
	"github.com/directord/directord/internal/netlab"
	"github.com/vishvananda/netlink"
)

// The guest tests of real traffic through the director: a client namespace
// makes HTTP requests to a virtual service that the Manager installed from a
// configuration in a director namespace, and real-server namespaces answer
// with their own name. What counts is what the client sees: which real
// server answered, and how often.
//
// Topology (netlab, one switch namespace):
//
//	client 192.0.2.100 ─┐ LAN 192.0.2.0/24
//	lb 192.0.2.11 + VIP ┤  (DR, TUN: real servers 192.0.2.21.. here)
//	                    │
//	lb 198.51.100.1 ────┘ segment "reals" 198.51.100.0/24 (NAT: real
//	                      servers 198.51.100.11.., default route via lb)

const trafficVIP = "192.0.2.50"

// trafficLab is one such topology.
type trafficLab struct {
	t      *testing.T
	lab    *netlab.Lab
	client *netlab.Host
	lb     *netlab.Host
	k      *NetlinkKernel
}

func newTrafficLab(t *testing.T) *trafficLab {
	t.Helper()
	if err := KernelAvailable(); err != nil {
		t.Fatalf("the VM kernel must provide IPVS: %v", err)
	}
	lab := netlab.New(t)
	l := &trafficLab{t: t, lab: lab}
	l.client = lab.AddHost("client", "192.0.2.100/24")
	l.lb = lab.AddHost("lb", "192.0.2.11/24")
	addAddr(t, l.lb, "eth0", trafficVIP+"/32")
	if err := l.lb.Do(func() (err error) { l.k, err = NewKernel(); return err }); err != nil {
		t.Fatalf("NewKernel: %v", err)
	}
	t.Cleanup(func() { l.k.Close() })
	return l
}

// apply installs the ipvs section yaml through the Manager, as the daemon
// does, and logs what ipvsadm then lists.
func (l *trafficLab) apply(yaml string) {
	l.t.Helper()
	cfg, err := config.Parse("traffic.yaml", []byte(yaml))
	if err != nil {
		l.t.Fatal(err)
	}
	m, err := NewManager(l.k, l.t.TempDir(), nil)
	if err != nil {
		l.t.Fatal(err)
	}
	if _, err := m.Apply(Desired(cfg, nil)); err != nil {
		l.t.Fatalf("apply: %v", err)
	}
	l.t.Logf("ipvsadm -Ln in lb:\n%s", l.run(l.lb, "ipvsadm", "-Ln"))
}

func (l *trafficLab) run(h *netlab.Host, argv ...string) string {
	l.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := h.Run(ctx, argv...)
	if err != nil {
		l.t.Fatal(err)
	}
	return string(out)
}

// natReals puts the director on a second segment as 198.51.100.1 and adds
// n real servers 198.51.100.11.. there, routed back through the director.
func (l *trafficLab) natReals(n int) []string {
	l.t.Helper()
	seg := l.lab.NewSegment("reals")
	seg.AddLink(l.lb, "eth1", "198.51.100.1/24")
	sysctl(l.t, l.lb, "net.ipv4.ip_forward", "1")
	var names []string
	for i := range n {
		name := fmt.Sprintf("rs%d", i+1)
		// eth0 stays on the LAN without an address: netlab plugs it in
		// whatever the host is for.
		h := l.lab.AddHost(name)
		seg.AddLink(h, "eth1", fmt.Sprintf("198.51.100.%d/24", 11+i))
		defaultVia(l.t, h, "198.51.100.1")
		serveName(l.t, h, name)
		names = append(names, name)
	}
	return names
}

// lanReals adds n real servers 192.0.2.21.. on the LAN with the VIP bound
// to lo (DR) or to the fallback ipip device tunl0 (TUN), ARP for the VIP
// left to the director.
func (l *trafficLab) lanReals(n int, vipDev string) ([]string, []*netlab.Host) {
	l.t.Helper()
	var names []string
	var hosts []*netlab.Host
	for i := range n {
		name := fmt.Sprintf("rs%d", i+1)
		h := l.lab.AddHost(name, fmt.Sprintf("192.0.2.%d/24", 21+i))
		for _, dev := range []string{"all", "lo", "eth0"} {
			sysctl(l.t, h, "net.ipv4.conf."+dev+".arp_ignore", "1")
			sysctl(l.t, h, "net.ipv4.conf."+dev+".arp_announce", "2")
		}
		if vipDev == "tunl0" {
			// ipip creates the fallback tunl0 in every namespace; it takes
			// any outer source and destination. The inner source (the
			// client) is not routed via tunl0, so reverse-path filtering
			// must be off.
			for _, dev := range []string{"all", "default", "tunl0"} {
				sysctl(l.t, h, "net.ipv4.conf."+dev+".rp_filter", "0")
			}
		}
		addAddr(l.t, h, vipDev, trafficVIP+"/32")
		serveName(l.t, h, name)
		names = append(names, name)
		hosts = append(hosts, h)
	}
	return names, hosts
}

func addAddr(t *testing.T, h *netlab.Host, dev, cidr string) {
	t.Helper()
	link, err := h.Netlink().LinkByName(dev)
	if err != nil {
		t.Fatalf("%s: %s: %v", h, dev, err)
	}
	addr, err := netlink.ParseAddr(cidr)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Netlink().AddrAdd(link, addr); err != nil {
		t.Fatalf("%s: add %s to %s: %v", h, cidr, dev, err)
	}
	if err := h.Netlink().LinkSetUp(link); err != nil {
		t.Fatalf("%s: set %s up: %v", h, dev, err)
	}
}

func defaultVia(t *testing.T, h *netlab.Host, gw string) {
	t.Helper()
	if err := h.Netlink().RouteAdd(&netlink.Route{Gw: net.ParseIP(gw)}); err != nil {
		t.Fatalf("%s: default via %s: %v", h, gw, err)
	}
}

// sysctl sets a sysctl of h's namespace (/proc/sys/net follows the thread).
func sysctl(t *testing.T, h *netlab.Host, key, value string) {
	t.Helper()
	path := "/proc/sys/" + strings.ReplaceAll(key, ".", "/")
	if err := h.Do(func() error { return os.WriteFile(path, []byte(value), 0o644) }); err != nil {
		t.Fatalf("%s: sysctl %s=%s: %v", h, key, value, err)
	}
}

// serveName serves HTTP on port 80 of every address of h, answering every
// request with name. The listening socket is opened inside h and stays
// there; the server goroutines may run on any thread.
func serveName(t *testing.T, h *netlab.Host, name string) {
	t.Helper()
	var ln net.Listener
	if err := h.Do(func() (err error) { ln, err = net.Listen("tcp4", ":80"); return err }); err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			io.WriteString(w, name)
		}),
		ReadHeaderTimeout: 10 * time.Second,
	}
	srv.SetKeepAlivesEnabled(false)
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
}

// hits makes n HTTP requests to VIP:80 from the client, each on a new TCP
// connection, with workers connections in flight at a time, and counts the
// answers per body. Sockets are created on a thread inside the client
// namespace (net.Dial to an address literal opens its socket on the calling
// goroutine), so no http.Transport (which dials on goroutines of its own)
// is involved.
func (l *trafficLab) hits(n, workers int) map[string]int {
	l.t.Helper()
	var (
		mu     sync.Mutex
		counts = map[string]int{}
		errs   []error
		wg     sync.WaitGroup
	)
	addr := net.JoinHostPort(trafficVIP, "80")
	for w := range workers {
		share := n / workers
		if w < n%workers {
			share++
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := l.client.Do(func() error {
				for range share {
					body, err := httpGet(addr)
					if err != nil {
						return err
					}
					mu.Lock()
					counts[body]++
					mu.Unlock()
				}
				return nil
			})
			if err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	l.t.Logf("%d requests to %s: %v", n, addr, counts)
	if err := errors.Join(errs...); err != nil {
		l.t.Fatalf("requests from the client: %v (answers so far: %v)", err, counts)
	}
	return counts
}

// httpGet makes one HTTP/1.0 request on a new connection and returns the
// body. It must run on the goroutine that is in the client namespace.
func httpGet(addr string) (string, error) {
	c, err := net.DialTimeout("tcp4", addr, 3*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, "GET / HTTP/1.0\r\nHost: vip\r\n\r\n"); err != nil {
		return "", err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return "", fmt.Errorf("%s (local %s): %w", addr, c.LocalAddr(), err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%s: %s", addr, resp.Status)
	}
	return string(body), nil
}

// requireOnly fails unless every answer came from one of names.
func requireOnly(t *testing.T, counts map[string]int, names []string) {
	t.Helper()
	for body := range counts {
		if !contains(names, body) {
			t.Errorf("answer %q is not from a real server %v", body, names)
		}
	}
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// NAT: wrr with weights 3 and 1 splits new connections 3:1, and every
// answer comes back through the director from a real server.
func TestGuestTrafficNATWeightedRoundRobin(t *testing.T) {
	l := newTrafficLab(t)
	names := l.natReals(2)
	l.apply(`ipvs:
  virtual_services:
    - {name: web, address: "192.0.2.50:80", scheduler: wrr, forwarding: nat,
       real_servers: [{address: "198.51.100.11:80", weight: 3}, {address: "198.51.100.12:80", weight: 1}]}
`)
	const n = 400
	counts := l.hits(n, 4)
	requireOnly(t, counts, names)
	a, b := counts["rs1"], counts["rs2"]
	if a+b != n {
		t.Fatalf("%d of %d answers from the real servers: %v", a+b, n, counts)
	}
	if b == 0 {
		t.Fatalf("rs2 never answered: %v", counts)
	}
	if ratio := float64(a) / float64(b); math.Abs(ratio-3) > 0.3 {
		t.Errorf("rs1:rs2 = %d:%d = %.2f, want 3:1 within 10%%", a, b, ratio)
	}
}

// DR: the director rewrites only the MAC; the real servers, holding the VIP
// on lo without answering ARP for it, reply to the client directly.
func TestGuestTrafficDirectRouting(t *testing.T) {
	l := newTrafficLab(t)
	names, _ := l.lanReals(2, "lo")
	l.apply(`ipvs:
  virtual_services:
    - {name: web, address: "192.0.2.50:80", scheduler: rr, forwarding: dr,
       real_servers: [{address: 192.0.2.21, weight: 1}, {address: 192.0.2.22, weight: 1}]}
`)
	counts := l.hits(40, 2)
	requireOnly(t, counts, names)
	checkSpread(t, counts, names, 40)
	l.checkNoVIPARPFromReals()
}

// TUN: the director encapsulates in ipip; the real servers decapsulate on
// tunl0, which holds the VIP, and reply to the client directly.
func TestGuestTrafficTunnel(t *testing.T) {
	l := newTrafficLab(t)
	names, hosts := l.lanReals(2, "tunl0")
	l.apply(`ipvs:
  virtual_services:
    - {name: web, address: "192.0.2.50:80", scheduler: rr, forwarding: tun,
       real_servers: [{address: 192.0.2.21, weight: 1}, {address: 192.0.2.22, weight: 1}]}
`)
	counts := l.hits(40, 2)
	requireOnly(t, counts, names)
	checkSpread(t, counts, names, 40)
	// The real servers share the director's LAN and would accept the VIP
	// on eth0 as well (weak host model), so only tunl0's counters prove
	// that the requests arrived encapsulated: at least 3 packets (SYN, ACK,
	// request) per answered connection.
	for _, h := range hosts {
		link, err := h.Netlink().LinkByName("tunl0")
		if err != nil {
			t.Fatal(err)
		}
		st := link.Attrs().Statistics
		if st == nil {
			t.Fatalf("%s: no statistics for tunl0", h)
		}
		if want := uint64(3 * counts[h.Label]); st.RxPackets < want {
			t.Errorf("%s: tunl0 received %d packets for %d answered connections, want at least %d: not tunnelled", h, st.RxPackets, counts[h.Label], want)
		}
		t.Logf("%s: tunl0 rx %d packets for %d connections", h, st.RxPackets, counts[h.Label])
	}
}

// sh: source hashing sends every connection of one client to the same real
// server.
func TestGuestTrafficSourceHashingIsSticky(t *testing.T) {
	l := newTrafficLab(t)
	names := l.natReals(3)
	l.apply(`ipvs:
  virtual_services:
    - {name: web, address: "192.0.2.50:80", scheduler: sh, forwarding: nat,
       real_servers: [{address: "198.51.100.11:80", weight: 1}, {address: "198.51.100.12:80", weight: 1}, {address: "198.51.100.13:80", weight: 1}]}
`)
	counts := l.hits(50, 2)
	requireOnly(t, counts, names)
	if len(counts) != 1 {
		t.Errorf("50 connections from one client reached %d real servers, want 1: %v", len(counts), counts)
	}
	total := 0
	for _, c := range counts {
		total += c
	}
	if total != 50 {
		t.Errorf("%d answers, want 50: %v", total, counts)
	}
}

// checkSpread requires n answers in all, every real server among them.
func checkSpread(t *testing.T, counts map[string]int, names []string, n int) {
	t.Helper()
	total := 0
	for _, c := range counts {
		total += c
	}
	if total != n {
		t.Errorf("%d answers, want %d: %v", total, n, counts)
	}
	var missing []string
	for _, name := range names {
		if counts[name] == 0 {
			missing = append(missing, name)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("real servers %v never answered with rr: %v", missing, counts)
	}
}

// checkNoVIPARPFromReals asserts that the client learnt the director's MAC
// for the VIP, not a real server's: otherwise the traffic above bypassed
// the director.
func (l *trafficLab) checkNoVIPARPFromReals() {
	l.t.Helper()
	neighs, err := l.client.Netlink().NeighList(0, netlink.FAMILY_V4)
	if err != nil {
		l.t.Fatal(err)
	}
	vip := netip.MustParseAddr(trafficVIP)
	lbMAC := l.lb.MAC().String()
	for _, n := range neighs {
		a, _ := netip.AddrFromSlice(n.IP)
		if a.Unmap() == vip && n.HardwareAddr != nil && n.HardwareAddr.String() != lbMAC {
			l.t.Errorf("client resolves the VIP to %s, not the director's %s", n.HardwareAddr, lbMAC)
		}
	}
}
