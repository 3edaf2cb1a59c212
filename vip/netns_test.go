package vip

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/directord/directord/internal/netlab"
	"github.com/google/go-cmp/cmp"
	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
	"github.com/mdlayher/ndp"
	"github.com/mdlayher/packet"
)

// The netns tests run the Manager in a helper process inside a host
// namespace, as directord runs: the test binary started again with
// -vip.helper. It prints one "EVENT {json}" line per event.
var helperSpec = flag.String("vip.helper", "", "internal: run as a VIP helper process with this JSON spec")

func TestMain(m *testing.M) {
	flag.Parse()
	if *helperSpec != "" {
		os.Exit(runHelper(*helperSpec))
	}
	os.Exit(m.Run())
}

type helperAddr struct {
	Prefix    string `json:"prefix"`
	Interface string `json:"interface"`
	Label     string `json:"label,omitempty"`
}

type spec struct {
	StateDir string       `json:"state_dir"`
	Addrs    []helperAddr `json:"addrs"`
	// Then, if set, is acquired right after Addrs, as a reload does.
	Then     []helperAddr  `json:"then"`
	Repeat   int           `json:"repeat"`
	Interval time.Duration `json:"interval"`
	Delay    time.Duration `json:"delay"`
	Refresh  time.Duration `json:"refresh"`
}

type helperEvent struct {
	Kind string `json:"kind"`
	VIP  string `json:"vip,omitempty"`
	MAC  string `json:"mac,omitempty"`
	Err  string `json:"err,omitempty"`
}

func runHelper(specJSON string) int {
	var s spec
	if err := json.Unmarshal([]byte(specJSON), &s); err != nil {
		fmt.Println("bad spec:", err)
		return 2
	}
	var mu sync.Mutex
	print := func(e helperEvent) {
		mu.Lock()
		defer mu.Unlock()
		b, _ := json.Marshal(e)
		fmt.Printf("EVENT %s\n", b)
	}
	m, err := New(Config{
		StateDir: s.StateDir,
		Log:      slog.New(slog.NewTextHandler(os.Stderr, nil)),
		OnEvent: func(e Event) {
			he := helperEvent{Kind: string(e.Kind), VIP: e.Address.Prefix.Addr().String()}
			if e.MAC != nil {
				he.MAC = e.MAC.String()
			}
			if e.Err != nil {
				he.Err = e.Err.Error()
			}
			print(he)
		},
	})
	if err != nil {
		print(helperEvent{Kind: "new-error", Err: err.Error()})
		return 1
	}
	ann := Announce{Repeat: s.Repeat, Interval: s.Interval, MasterDelay: s.Delay, Refresh: s.Refresh}
	for i, list := range [][]helperAddr{s.Addrs, s.Then} {
		if i > 0 && len(list) > 0 {
			// A reload comes well after the takeover's first burst.
			time.Sleep(200 * time.Millisecond)
		}
		var addrs []Address
		for _, a := range list {
			addrs = append(addrs, Address{Prefix: netip.MustParsePrefix(a.Prefix), Interface: a.Interface, Label: a.Label})
		}
		if len(addrs) == 0 {
			continue
		}
		if err := m.Acquire("VI_1", addrs, ann); err != nil {
			print(helperEvent{Kind: "acquire-error", Err: err.Error()})
		}
	}
	print(helperEvent{Kind: "ready"})
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM)
	<-sig
	if err := m.Close(); err != nil {
		print(helperEvent{Kind: "close-error", Err: err.Error()})
	}
	print(helperEvent{Kind: "closed"})
	return 0
}

func startHelper(t *testing.T, h *netlab.Host, s spec) *netlab.Proc {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(s)
	p := h.Start(exe, "-vip.helper", string(b))
	waitEvent(t, p, "ready", "")
	return p
}

func events(p *netlab.Proc) []helperEvent {
	var out []helperEvent
	sc := bufio.NewScanner(bytes.NewReader(p.Output()))
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "EVENT "); ok {
			var e helperEvent
			if json.Unmarshal([]byte(rest), &e) == nil {
				out = append(out, e)
			}
		}
	}
	return out
}

func findEvents(p *netlab.Proc, kind, vip string) []helperEvent {
	var out []helperEvent
	for _, e := range events(p) {
		if e.Kind == kind && (vip == "" || e.VIP == vip) {
			out = append(out, e)
		}
	}
	return out
}

func waitEvent(t *testing.T, p *netlab.Proc, kind, vip string) helperEvent {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if es := findEvents(p, kind, vip); len(es) > 0 {
			return es[0]
		}
		select {
		case <-p.Done():
			if es := findEvents(p, kind, vip); len(es) > 0 {
				return es[0]
			}
			t.Fatalf("helper exited before event %s %s; output:\n%s", kind, vip, p.Output())
		case <-time.After(20 * time.Millisecond):
		}
	}
	t.Fatalf("no event %s %s within 10s; output:\n%s", kind, vip, p.Output())
	return helperEvent{}
}

func stopHelper(t *testing.T, p *netlab.Proc) {
	t.Helper()
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitEvent(t, p, "closed", "")
	if err := p.Wait(5 * time.Second); err != nil {
		t.Fatalf("helper exit: %v", err)
	}
}

// captured is one frame seen in a namespace, with when it was seen.
type captured struct {
	at   time.Time
	data []byte
}

type capture struct {
	conn   net.PacketConn
	mu     sync.Mutex
	frames []captured
	done   chan struct{}
}

// startCapture records every frame on h's eth0, both directions.
func startCapture(t *testing.T, h *netlab.Host) *capture {
	t.Helper()
	c := &capture{done: make(chan struct{})}
	err := h.Do(func() error {
		ifi, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		const ethPAll = 0x0003
		c.conn, err = packet.Listen(ifi, packet.Raw, ethPAll, nil)
		return err
	})
	if err != nil {
		t.Fatalf("capture in %s: %v", h, err)
	}
	go func() {
		defer close(c.done)
		buf := make([]byte, 1<<16)
		for {
			n, _, err := c.conn.ReadFrom(buf)
			if err != nil {
				return
			}
			c.mu.Lock()
			c.frames = append(c.frames, captured{time.Now(), bytes.Clone(buf[:n])})
			c.mu.Unlock()
		}
	}()
	t.Cleanup(func() { c.stop() })
	return c
}

func (c *capture) stop() []captured {
	c.conn.Close()
	<-c.done
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.frames
}

// wireFrame is what the tests look at in a captured frame.
type wireFrame struct {
	at    time.Time
	src   net.HardwareAddr
	arp   *arp.Packet
	na    *ndp.NeighborAdvertisement
	ns    *ndp.NeighborSolicitation
	hops  uint8
	ipDst netip.Addr
}

func decode(cs []captured) []wireFrame {
	var out []wireFrame
	for _, c := range cs {
		var f ethernet.Frame
		if f.UnmarshalBinary(c.data) != nil {
			continue
		}
		w := wireFrame{at: c.at, src: f.Source}
		switch f.EtherType {
		case ethernet.EtherTypeARP:
			var p arp.Packet
			if p.UnmarshalBinary(f.Payload) == nil {
				w.arp = &p
			}
		case ethernet.EtherTypeIPv6:
			b := f.Payload
			if len(b) < 40 || b[6] != 58 {
				continue
			}
			w.hops = b[7]
			w.ipDst, _ = netip.AddrFromSlice(b[24:40])
			plen := int(binary.BigEndian.Uint16(b[4:6]))
			if 40+plen > len(b) {
				continue
			}
			m, err := ndp.ParseMessage(b[40 : 40+plen])
			if err != nil {
				continue
			}
			switch m := m.(type) {
			case *ndp.NeighborAdvertisement:
				w.na = m
			case *ndp.NeighborSolicitation:
				w.ns = m
			}
		}
		if w.arp != nil || w.na != nil || w.ns != nil {
			out = append(out, w)
		}
	}
	return out
}

// neighbourMAC returns the link-layer address of ip in h's neighbour table.
func neighbourMAC(t *testing.T, h *netlab.Host, ip netip.Addr) string {
	t.Helper()
	out, err := h.Run(context.Background(), "ip", "neigh", "show", ip.String(), "dev", "eth0")
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(out))
	for i := range f {
		if f[i] == "lladdr" && i+1 < len(f) {
			return f[i+1]
		}
	}
	return ""
}

func hasAddr(t *testing.T, h *netlab.Host, prefix string) bool {
	t.Helper()
	out, err := h.Run(context.Background(), "ip", "addr", "show", "dev", "eth0")
	if err != nil {
		t.Fatal(err)
	}
	return strings.Contains(string(out), " "+prefix+" ")
}

const (
	vip4 = "192.0.2.50"
	vip6 = "2001:db8::50"
)

func vipAddrs() []helperAddr {
	return []helperAddr{
		{Prefix: vip4 + "/32", Interface: "eth0", Label: "eth0:vip"},
		{Prefix: vip6 + "/128", Interface: "eth0"},
	}
}

func newLab(t *testing.T) (a, b, client *netlab.Host) {
	lab := netlab.New(t)
	a = lab.AddHost("a", "192.0.2.11/24", "2001:db8::11/64")
	b = lab.AddHost("b", "192.0.2.12/24", "2001:db8::12/64")
	client = lab.AddHost("client", "192.0.2.100/24", "2001:db8::100/64")
	return a, b, client
}

// The takeover of the send_arp runbook: the client talks to the VIP on
// director A; B takes the VIP and announces it; the client's neighbour
// entries now point at B although the client sent nothing, and the wire
// shows both ARP forms and the NAs, in two bursts on schedule.
func TestNetnsTakeoverMovesClientNeighbourEntries(t *testing.T) {
	a, b, client := newLab(t)
	v4, v6 := netip.MustParseAddr(vip4), netip.MustParseAddr(vip6)

	pa := startHelper(t, a, spec{StateDir: t.TempDir(), Addrs: vipAddrs(), Repeat: 1})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, ip := range []netip.Addr{v4, v6} {
		if err := client.Ping(ctx, ip); err != nil {
			t.Fatalf("client cannot reach %s on A: %v", ip, err)
		}
		if got := neighbourMAC(t, client, ip); got != a.MAC().String() {
			t.Fatalf("client's entry for %s is %q, want A's %s", ip, got, a.MAC())
		}
	}
	stopHelper(t, pa)
	if hasAddr(t, a, vip4+"/32") || hasAddr(t, a, vip6+"/128") {
		t.Fatal("A kept the VIPs after a graceful stop")
	}

	const repeat, interval, delay = 3, 200 * time.Millisecond, time.Second
	capt := startCapture(t, client)
	pb := startHelper(t, b, spec{StateDir: t.TempDir(), Addrs: vipAddrs(), Repeat: repeat, Interval: interval, Delay: delay})
	time.Sleep(delay + repeat*interval + 500*time.Millisecond)
	frames := decode(capt.stop())

	for _, ip := range []netip.Addr{v4, v6} {
		if got := neighbourMAC(t, client, ip); got != b.MAC().String() {
			t.Errorf("after B's announcements the client's entry for %s is %q, want B's %s", ip, got, b.MAC())
		}
	}
	var reqs, reps, nas []time.Time
	for _, f := range frames {
		switch {
		case bytes.Equal(f.src, client.MAC()) && (f.arp != nil || f.ns != nil):
			t.Errorf("the client sent a neighbour query: %+v", f)
		case !bytes.Equal(f.src, b.MAC()):
		case f.arp != nil && f.arp.SenderIP == v4 && f.arp.TargetIP == v4:
			if !bytes.Equal(f.arp.SenderHardwareAddr, b.MAC()) {
				t.Errorf("ARP sender MAC %s, want %s", f.arp.SenderHardwareAddr, b.MAC())
			}
			if f.arp.Operation == arp.OperationRequest {
				reqs = append(reqs, f.at)
			} else {
				reps = append(reps, f.at)
			}
		case f.na != nil && f.na.TargetAddress == v6:
			if !f.na.Override || f.na.Solicited || f.hops != 255 || f.ipDst != allNodes {
				t.Errorf("NA: override %v solicited %v hop limit %d dst %s; want true false 255 ff02::1", f.na.Override, f.na.Solicited, f.hops, f.ipDst)
			}
			nas = append(nas, f.at)
		}
	}
	for name, ts := range map[string][]time.Time{"ARP requests": reqs, "ARP replies": reps, "NAs": nas} {
		if len(ts) != 2*repeat {
			t.Errorf("%s: %d on the wire, want %d (two bursts of %d)", name, len(ts), 2*repeat, repeat)
			continue
		}
		for i := 1; i < len(ts); i++ {
			gap := ts[i].Sub(ts[i-1])
			want, lo, hi := interval, interval*3/4, interval*3
			if i == repeat {
				// Second burst: master_delay after the first began.
				gap, want, lo, hi = ts[i].Sub(ts[0]), delay, delay*3/4, delay*2
			}
			if gap < lo || gap > hi {
				t.Errorf("%s: gap %d is %v, want about %v", name, i, gap, want)
			}
		}
	}
	if cs := findEvents(pb, "conflict", ""); len(cs) > 0 {
		t.Errorf("conflicts reported on a clean takeover: %+v", cs)
	}
}

// Someone runs `ip addr del` on the master: the VIP comes back at once and
// is announced again.
func TestNetnsVIPRemovedByHandIsRestored(t *testing.T) {
	_, b, client := newLab(t)
	pb := startHelper(t, b, spec{StateDir: t.TempDir(), Addrs: vipAddrs(), Repeat: 1})
	for _, c := range []struct{ ip, prefix string }{{vip4, vip4 + "/32"}, {vip6, vip6 + "/128"}} {
		capt := startCapture(t, client)
		removed := time.Now()
		if out, err := b.Run(context.Background(), "ip", "addr", "del", c.prefix, "dev", "eth0"); err != nil {
			t.Fatalf("ip addr del: %v: %s", err, out)
		}
		waitEvent(t, pb, "readded", c.ip)
		if !hasAddr(t, b, c.prefix) {
			t.Errorf("%s not bound again", c.prefix)
		}
		time.Sleep(200 * time.Millisecond)
		var announced bool
		ip := netip.MustParseAddr(c.ip)
		for _, f := range decode(capt.stop()) {
			if f.at.After(removed) && bytes.Equal(f.src, b.MAC()) &&
				(f.arp != nil && f.arp.SenderIP == ip || f.na != nil && f.na.TargetAddress == ip) {
				announced = true
			}
		}
		if !announced {
			t.Errorf("%s was not announced again after it was restored", c.ip)
		}
	}
	if got := len(findEvents(pb, "readded", "")); got != 2 {
		t.Errorf("%d readded events, want 2", got)
	}
}

// A director killed with SIGKILL leaves its VIPs bound; the next start
// removes them before anything else, so the node does not answer for
// addresses it no longer owns.
func TestNetnsStaleVIPRemovedOnRestart(t *testing.T) {
	_, b, _ := newLab(t)
	state := t.TempDir()
	p := startHelper(t, b, spec{StateDir: state, Addrs: vipAddrs(), Repeat: 1})
	if err := p.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = p.Wait(5 * time.Second)
	if !hasAddr(t, b, vip4+"/32") || !hasAddr(t, b, vip6+"/128") {
		t.Fatal("the killed helper's VIPs are not left behind; the crash was not simulated")
	}
	p2 := startHelper(t, b, spec{StateDir: state})
	for _, ip := range []string{vip4, vip6} {
		if len(findEvents(p2, "stale-removed", ip)) != 1 {
			t.Errorf("no stale-removed event for %s; output:\n%s", ip, p2.Output())
		}
	}
	if hasAddr(t, b, vip4+"/32") || hasAddr(t, b, vip6+"/128") {
		t.Error("stale VIPs still bound after restart")
	}
	stopHelper(t, p2)
}

// Another host answering for the VIP is reported: one that already holds it
// answers the probe sent before taking it, and again the probe asking who
// holds it once the claim outlived the grace. The manager does not fight
// a host that answers: it announces the VIPs once, as it took them.
func TestNetnsConflictReported(t *testing.T) {
	_, b, rogue := newLab(t)
	for _, args := range [][]string{
		{"ip", "addr", "add", vip4 + "/32", "dev", "eth0"},
		{"ip", "addr", "add", vip6 + "/128", "dev", "eth0", "nodad"},
	} {
		if out, err := rogue.Run(context.Background(), args...); err != nil {
			t.Fatalf("%v: %v: %s", args, err, out)
		}
	}
	capt := startCapture(t, rogue)
	pb := startHelper(t, b, spec{StateDir: t.TempDir(), Addrs: vipAddrs(), Repeat: 1})
	for _, ip := range []string{vip4, vip6} {
		e := waitEvent(t, pb, "conflict", ip)
		if e.MAC != rogue.MAC().String() {
			t.Errorf("conflict for %s names %s, want the rogue's %s", ip, e.MAC, rogue.MAC())
		}
	}
	time.Sleep(time.Second)
	if es := findEvents(pb, "reclaimed", ""); len(es) != 0 {
		t.Errorf("VIPs announced again while the rogue answers for them: %+v", es)
	}
	var garps, nas, probes int
	for _, f := range decode(capt.stop()) {
		switch {
		case !bytes.Equal(f.src, b.MAC()):
		case f.arp != nil && f.arp.Operation == arp.OperationRequest && f.arp.SenderIP.String() == vip4 && f.arp.TargetIP.String() == vip4:
			garps++
		case f.arp != nil && f.arp.SenderIP.IsUnspecified() && f.arp.TargetIP.String() == vip4:
			probes++
		case f.na != nil && f.na.TargetAddress.String() == vip6:
			nas++
		}
	}
	if garps != 1 || nas != 1 || probes < 2 {
		t.Errorf("B sent %d gratuitous ARP requests and %d NAs for the VIPs (want 1 each, as it took them) and %d ARP probes (want one before taking, one after the claim)", garps, nas, probes)
	}
}

// A host that claimed a VIP we hold and let go (a split brain healed, the
// other master's step-down lost) leaves hosts sending to its MAC: the
// probe after the grace gets no answer, so the VIP is announced again and
// the client's entry comes back.
func TestNetnsClaimLetGoIsReclaimed(t *testing.T) {
	a, b, client := newLab(t)
	pb := startHelper(t, b, spec{StateDir: t.TempDir(), Addrs: vipAddrs(), Repeat: 1})
	if err := client.Ping(context.Background(), netip.MustParseAddr(vip4)); err != nil {
		t.Fatal(err)
	}
	if mac := neighbourMAC(t, client, netip.MustParseAddr(vip4)); mac != b.MAC().String() {
		t.Fatalf("client reaches %s at %s, want B's %s", vip4, mac, b.MAC())
	}
	capt := startCapture(t, client)
	// Well past the moment a reply counts as the answer to B's probe
	// before binding (ownProbeAnswer).
	time.Sleep(2 * ownProbeAnswer)
	claimed := time.Now()
	sendGARP(t, a, vip4)
	sendNA(t, a, vip6)
	if mac := neighbourMAC(t, client, netip.MustParseAddr(vip4)); mac != a.MAC().String() {
		t.Fatalf("after A's gratuitous ARP the client's entry is %s, want A's %s", mac, a.MAC())
	}
	for _, ip := range []string{vip4, vip6} {
		if e := waitEvent(t, pb, "reclaimed", ip); e.MAC != a.MAC().String() {
			t.Errorf("reclaim of %s names %s, want A's %s", ip, e.MAC, a.MAC())
		}
	}
	deadline := time.Now().Add(2 * time.Second)
	for neighbourMAC(t, client, netip.MustParseAddr(vip4)) != b.MAC().String() {
		if time.Now().After(deadline) {
			t.Fatalf("the client's entry for %s stayed %s after the reclaim, want B's %s", vip4, neighbourMAC(t, client, netip.MustParseAddr(vip4)), b.MAC())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if cs := findEvents(pb, "conflict", ""); len(cs) != 0 {
		t.Errorf("a claim nobody answers for was reported as a conflict: %+v", cs)
	}
	var again4, again6 time.Time
	for _, f := range decode(capt.stop()) {
		if !bytes.Equal(f.src, b.MAC()) {
			continue
		}
		if again4.IsZero() && f.arp != nil && f.arp.SenderIP.String() == vip4 && f.arp.TargetIP.String() == vip4 {
			again4 = f.at
		}
		if again6.IsZero() && f.na != nil && f.na.TargetAddress.String() == vip6 {
			again6 = f.at
		}
	}
	if again4.IsZero() || again6.IsZero() {
		t.Fatalf("the client saw no announcement from B after A's claim (ARP at %v, NA at %v)", again4, again6)
	}
	t.Logf("B announced again %v (ARP) and %v (NA) after A's claim", again4.Sub(claimed).Round(time.Millisecond), again6.Sub(claimed).Round(time.Millisecond))
	if d := again4.Sub(claimed); d < 500*time.Millisecond {
		t.Errorf("B announced %s again %v after the claim, before the grace had passed", vip4, d)
	}

	// A host that claims again and again (a DR real server without
	// arp_announce) is answered each time, logged once per holdoff.
	sendGARP(t, a, vip4)
	deadline = time.Now().Add(5 * time.Second)
	for len(findEvents(pb, "reclaimed", vip4)) < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("A's second claim was not reclaimed; output:\n%s", pb.Output())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n := strings.Count(string(pb.Output()), "VIP reclaimed"); n != 2 {
		t.Errorf("%d reclaim log lines for 3 reclaims of 2 VIPs by one MAC, want 2 (once per VIP and holdoff); output:\n%s", n, pb.Output())
	}
	stopHelper(t, pb)
}

// Binding several VIPs is all or nothing: when one cannot be bound the
// others bound by the same call are removed again, and the error names
// what failed on which interface.
func TestNetnsPartialBindRolledBack(t *testing.T) {
	lab := netlab.New(t)
	b := lab.AddHost("b", "192.0.2.12/24")
	lab.AddLink(b, "eth1")
	// The kernel refuses IPv6 addresses on an interface with IPv6 disabled:
	// the second bind fails after the first succeeded.
	if out, err := b.Run(context.Background(), "sysctl", "-w", "net.ipv6.conf.eth1.disable_ipv6=1"); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	p := startHelper(t, b, spec{StateDir: t.TempDir(), Repeat: 1, Addrs: []helperAddr{
		{Prefix: vip4 + "/32", Interface: "eth0"},
		{Prefix: "2001:db8::51/128", Interface: "eth1"},
	}})
	es := findEvents(p, "acquire-error", "")
	if len(es) != 1 || !strings.HasPrefix(es[0].Err, "bind 2001:db8::51/128 on eth1: ") {
		t.Fatalf("acquire errors %+v, want one naming 2001:db8::51/128 on eth1", es)
	}
	if hasAddr(t, b, vip4+"/32") {
		t.Error("192.0.2.50 left bound after the acquire failed")
	}
	if bs := findEvents(p, "bound", ""); len(bs) != 0 {
		t.Errorf("bound events after a failed acquire: %+v", bs)
	}
	stopHelper(t, p)
}

// A reload that changes an owner's VIPs touches only the difference: the
// removed one is released, the added one bound and announced, and the one
// kept is neither rebound nor announced again.
func TestNetnsReacquireAppliesOnlyTheDifference(t *testing.T) {
	_, b, client := newLab(t)
	capt := startCapture(t, client)
	p := startHelper(t, b, spec{StateDir: t.TempDir(), Repeat: 1,
		Addrs: []helperAddr{{Prefix: "192.0.2.50/32", Interface: "eth0"}, {Prefix: "192.0.2.51/32", Interface: "eth0"}},
		Then:  []helperAddr{{Prefix: "192.0.2.50/32", Interface: "eth0"}, {Prefix: "192.0.2.52/32", Interface: "eth0"}},
	})
	time.Sleep(200 * time.Millisecond)
	frames := decode(capt.stop())
	got := map[string][]string{}
	for _, e := range events(p) {
		if e.Kind == "bound" || e.Kind == "released" {
			got[e.Kind] = append(got[e.Kind], e.VIP)
		}
	}
	want := map[string][]string{"bound": {"192.0.2.50", "192.0.2.51", "192.0.2.52"}, "released": {"192.0.2.51"}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
	if !hasAddr(t, b, "192.0.2.50/32") || hasAddr(t, b, "192.0.2.51/32") || !hasAddr(t, b, "192.0.2.52/32") {
		out, _ := b.Run(context.Background(), "ip", "addr", "show", "dev", "eth0")
		t.Errorf("bound addresses after the reload:\n%s", out)
	}
	// One announcement each (repeat 1): the kept VIP is not announced twice.
	count := map[string]int{}
	for _, f := range frames {
		if bytes.Equal(f.src, b.MAC()) && f.arp != nil && f.arp.Operation == arp.OperationRequest && f.arp.SenderIP == f.arp.TargetIP {
			count[f.arp.SenderIP.String()]++
		}
	}
	if diff := cmp.Diff(map[string]int{"192.0.2.50": 1, "192.0.2.51": 1, "192.0.2.52": 1}, count); diff != "" {
		t.Errorf("gratuitous ARP requests per VIP (-want +got):\n%s", diff)
	}
	stopHelper(t, p)
}

// A handback is not a conflict: the new master's gratuitous ARP may arrive
// just before this node releases the VIP, and is then forgotten.
func TestNetnsClaimDuringHandbackIsNoConflict(t *testing.T) {
	a, b, _ := newLab(t)
	pb := startHelper(t, b, spec{StateDir: t.TempDir(), Addrs: vipAddrs(), Repeat: 1})
	sendGARP(t, a, vip4)
	stopHelper(t, pb) // releases the VIP well within the grace
	if cs := findEvents(pb, "conflict", ""); len(cs) != 0 {
		t.Errorf("a claim followed by our release was reported: %+v", cs)
	}
}

// A claim made to this node alone (a master stepping down answers the
// probe sent before the VIP is bound, and releases it a moment later)
// taught no other host anything: when nobody answers the probe after the
// grace, the VIP is neither reported nor announced again.
func TestNetnsClaimToThisNodeAloneIsNotReclaimed(t *testing.T) {
	a, b, client := newLab(t)
	capt := startCapture(t, client)
	pb := startHelper(t, b, spec{StateDir: t.TempDir(), Addrs: vipAddrs(), Repeat: 1})
	sendFrame(t, a, vip4, func(mac net.HardwareAddr, ip netip.Addr) ([]byte, error) {
		p, err := arp.NewPacket(arp.OperationReply, mac, ip, b.MAC(), netip.IPv4Unspecified())
		if err != nil {
			return nil, err
		}
		pl, err := p.MarshalBinary()
		if err != nil {
			return nil, err
		}
		return ethFrame(b.MAC(), mac, ethernet.EtherTypeARP, pl)
	})
	// Past the grace and the probe's wait, with room to spare.
	time.Sleep(1500 * time.Millisecond)
	garps, probes := 0, 0
	for _, f := range decode(capt.stop()) {
		switch {
		case !bytes.Equal(f.src, b.MAC()) || f.arp == nil || f.arp.TargetIP.String() != vip4:
		case f.arp.SenderIP.String() == vip4 && f.arp.Operation == arp.OperationRequest:
			garps++
		case f.arp.SenderIP.IsUnspecified():
			probes++
		}
	}
	if garps != 1 || probes != 2 {
		t.Errorf("B sent %d gratuitous ARP requests for %s (want 1, as it took it) and %d probes (want 2: before taking it, and after the claim)", garps, vip4, probes)
	}
	for _, kind := range []string{"reclaimed", "conflict"} {
		if es := findEvents(pb, kind, ""); len(es) != 0 {
			t.Errorf("%s events for a claim made to B alone and withdrawn: %+v", kind, es)
		}
	}
	stopHelper(t, pb)
}

// sendGARP makes host h announce ip as a second master would.
func sendGARP(t *testing.T, h *netlab.Host, ip string) {
	t.Helper()
	sendFrame(t, h, ip, garpRequest)
}

// sendNA makes host h announce IPv6 address ip as a second master would.
func sendNA(t *testing.T, h *netlab.Host, ip string) {
	t.Helper()
	sendFrame(t, h, ip, unsolicitedNA)
}

func sendFrame(t *testing.T, h *netlab.Host, ip string, build func(net.HardwareAddr, netip.Addr) ([]byte, error)) {
	t.Helper()
	err := h.Do(func() error {
		ifi, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		c, err := packet.Listen(ifi, packet.Raw, int(ethernet.EtherTypeARP), nil)
		if err != nil {
			return err
		}
		defer c.Close()
		f, err := build(ifi.HardwareAddr, netip.MustParseAddr(ip))
		if err != nil {
			return err
		}
		_, err = c.WriteTo(f, &packet.Addr{HardwareAddr: ethernet.Broadcast})
		return err
	})
	if err != nil {
		t.Fatalf("announce %s from %s: %v", ip, h, err)
	}
}
