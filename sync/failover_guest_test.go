//go:build vmguest

package sync

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/directord/directord/internal/netlab"
)

// The failover drill with established connections, directord against the
// VM kernel:
//
//	client 192.0.2.100 ─┐
//	rs1..3 192.0.2.21.. ┤ LAN 192.0.2.0/24, VIP 192.0.2.50 (DR :80, NAT :8080)
//	lb1 .11, lb2 .12   ─┘
//	lb1 203.0.113.11, lb2 .12   segment "sync" (the kernel daemons' multicast)
//	lb1 198.51.100.2, lb2 .3 ┐ segment "reals" 198.51.100.0/24, gateway
//	nrs1..3 198.51.100.11..  ┘ 198.51.100.1 held by the VRRP master
//
// The client holds 50 connections through the DR service and 50 through
// the NAT service, each exchanging a line every 100 ms; lb1 (priority 150)
// is master. lb1 dies (SIGKILL, then its cables pulled) and lb2 takes over.

const (
	drillConns    = 50 // per service
	drillInterval = 100 * time.Millisecond
	// drillDeadline is how long one exchange may take before the
	// connection counts as broken: TCP retransmissions bridge a takeover
	// well within it, a reset ends it at once.
	drillDeadline = 5 * time.Second
)

type drill struct {
	t                 *testing.T
	lab               *netlab.Lab
	client            *netlab.Host
	lb1, lb2          *node
	syncSeg, realsSeg *netlab.Segment
}

type node struct {
	t    *testing.T
	h    *netlab.Host
	name string
	dir  string
	cfg  string
	proc *netlab.Proc
}

// drillOptions vary the drill: Sync adds the sync section (without it the
// directors run no sync at all).
type drillOptions struct {
	Sync bool
	// Relay carries sync over the relay, and nftables on both directors
	// drop the multicast that arrives on the sync link.
	Relay bool
	// Resync is resync_on_backup.
	Resync bool
	// OnceOnly (implied by Resync) sets the sync thresholds to "3 0":
	// the kernel syncs each connection once, so that only the full
	// resync can tell a recovering director about older connections.
	OnceOnly bool
}

func newDrill(t *testing.T, o drillOptions) *drill {
	d := &drill{t: t, lab: netlab.New(t)}
	d.client = d.lab.AddHost("client", "192.0.2.100/24")
	d.syncSeg = d.lab.NewSegment("sync")
	d.realsSeg = d.lab.NewSegment("reals")
	for i := range 3 {
		rs := d.lab.AddHost(fmt.Sprintf("rs%d", i+1), fmt.Sprintf("192.0.2.%d/24", 21+i))
		for _, dev := range []string{"all", "eth0"} {
			run(t, rs, "sysctl", "-qw", "net.ipv4.conf."+dev+".arp_ignore=1", "net.ipv4.conf."+dev+".arp_announce=2")
		}
		run(t, rs, "ip", "addr", "add", "192.0.2.50/32", "dev", "lo")
		echo(t, rs, ":80")
		nrs := d.lab.AddHost(fmt.Sprintf("nrs%d", i+1))
		d.realsSeg.AddLink(nrs, "eth1", fmt.Sprintf("198.51.100.%d/24", 11+i))
		run(t, nrs, "ip", "route", "add", "default", "via", "198.51.100.1")
		echo(t, nrs, ":8080")
	}
	key := filepath.Join(t.TempDir(), "sync.key")
	if err := os.WriteFile(key, []byte("a shared secret of the two directors\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	d.lb1 = d.addNode("lb1", 11, 150, o, key)
	d.lb2 = d.addNode("lb2", 12, 100, o, key)
	return d
}

func (d *drill) addNode(name string, host, prio int, o drillOptions, key string) *node {
	t := d.t
	h := d.lab.AddHost(name, fmt.Sprintf("192.0.2.%d/24", host))
	d.syncSeg.AddLink(h, "eth1", fmt.Sprintf("203.0.113.%d/24", host))
	d.realsSeg.AddLink(h, "eth2", fmt.Sprintf("198.51.100.%d/24", host-9))
	run(t, h, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	n := &node{t: t, h: h, name: name, dir: t.TempDir()}
	n.cfg = filepath.Join(n.dir, "directord.yaml")
	cfg := fmt.Sprintf(`node: {name: %s, state_dir: %s/state, control_socket: %s/ctl.sock, log: {level: info, format: text}}
vrrp:
  instances:
    - name: VI_1
      interface: eth0
      vrid: 51
      priority: %d
      advert_interval: 300ms
      preempt_delay: 2s
      virtual_addresses:
        - 192.0.2.50
        - {address: 198.51.100.1/32, interface: eth2}
ipvs:
  virtual_services:
    - name: dr
      address: 192.0.2.50:80
      scheduler: rr
      forwarding: dr
      check: {type: none}
      real_servers: [{address: 192.0.2.21}, {address: 192.0.2.22}, {address: 192.0.2.23}]
    - name: nat
      address: 192.0.2.50:8080
      scheduler: rr
      forwarding: nat
      check: {type: none}
      real_servers: [{address: "198.51.100.11:8080"}, {address: "198.51.100.12:8080"}, {address: "198.51.100.13:8080"}]
`, name, n.dir, n.dir, prio)
	if o.Sync {
		cfg += fmt.Sprintf("sync:\n  interface: eth1\n  sync_id: 51\n  follow: VI_1\n  resync_on_backup: %t\n", o.Resync)
	}
	if o.Relay {
		cfg += fmt.Sprintf("  relay: {listen: \"203.0.113.%d:8849\", peer: \"203.0.113.%d:8849\", key_file: %s}\n", host, 23-host, key)
		// Multicast from the wire is dropped; what the relay re-emits
		// locally (loopback, TTL 0) is not. (nftables reports looped
		// multicast as pkttype multicast too.)
		run(t, h, "nft", "add table inet nomcast")
		run(t, h, "nft", "add chain inet nomcast in { type filter hook input priority 0 ; }")
		run(t, h, "nft", "add rule inet nomcast in iifname eth1 ip daddr 224.0.0.81 ip ttl != 0 counter drop")
	}
	if o.Resync || o.OnceOnly {
		if err := h.Do(func() error { return os.WriteFile("/proc/sys/net/ipv4/vs/sync_threshold", []byte("3 0"), 0o644) }); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(n.cfg, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.signal(syscall.SIGTERM) })
	return n
}

func (n *node) start() {
	n.t.Helper()
	n.proc = n.h.Start("/bin/directord", "-c", n.cfg)
	n.waitLog("directord running", 1)
}

func (n *node) signal(sig syscall.Signal) {
	if n.proc != nil {
		_ = n.proc.Signal(sig)
		_ = n.proc.Wait(10 * time.Second)
	}
}

// lastState is the state of the node's last VRRP transition.
func (n *node) lastState() string {
	out := string(n.proc.Output())
	i := strings.LastIndex(out, " to=")
	if i < 0 {
		return "INIT"
	}
	f := strings.Fields(out[i+4:])
	return f[0]
}

func (n *node) count(s string) int { return strings.Count(string(n.proc.Output()), s) }

func (n *node) waitLog(s string, times int) {
	n.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for n.count(s) < times {
		if time.Now().After(deadline) {
			n.t.Fatalf("%s: no %d× %q in directord's log:\n%s", n.name, times, s, n.proc.Output())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// established counts the ESTABLISHED TCP entries of the node's IPVS
// connection table.
func (n *node) established() int {
	out := run(n.t, n.h, "cat", "/proc/net/ip_vs_conn")
	return strings.Count(out, "ESTABLISHED")
}

// echo serves line echo on addr inside h.
func echo(t *testing.T, h *netlab.Host, addr string) {
	t.Helper()
	var ln net.Listener
	if err := h.Do(func() (err error) { ln, err = net.Listen("tcp4", addr); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					if _, err := c.Write([]byte(line)); err != nil {
						return
					}
				}
			}()
		}
	}()
}

// traffic is the client's long-lived connections.
type traffic struct {
	broken  atomic.Int64
	reasons sync.Map // conn index -> error text
	stop    chan struct{}
	wg      sync.WaitGroup
	rounds  atomic.Int64
}

// open dials n connections to each address, all from the client, and
// starts their exchanges.
func (d *drill) open(addrs ...string) *traffic {
	d.t.Helper()
	tr := &traffic{stop: make(chan struct{})}
	i := 0
	for _, addr := range addrs {
		for range drillConns {
			var c net.Conn
			if err := d.client.Do(func() (err error) { c, err = net.DialTimeout("tcp4", addr, 5*time.Second); return err }); err != nil {
				d.t.Fatalf("dial %s: %v", addr, err)
			}
			tr.wg.Add(1)
			go tr.exchange(i, addr, c)
			i++
		}
	}
	d.t.Cleanup(tr.close)
	return tr
}

func (tr *traffic) exchange(i int, addr string, c net.Conn) {
	defer tr.wg.Done()
	defer c.Close()
	r := bufio.NewReader(c)
	tick := time.NewTicker(drillInterval)
	defer tick.Stop()
	for n := 0; ; n++ {
		select {
		case <-tr.stop:
			return
		case <-tick.C:
		}
		msg := fmt.Sprintf("conn %d message %d\n", i, n)
		c.SetDeadline(time.Now().Add(drillDeadline))
		_, err := c.Write([]byte(msg))
		var got string
		if err == nil {
			got, err = r.ReadString('\n')
		}
		if err == nil && got != msg {
			err = fmt.Errorf("echo %q, want %q", got, msg)
		}
		if err != nil {
			tr.broken.Add(1)
			tr.reasons.Store(i, fmt.Sprintf("%s: %v", addr, err))
			return
		}
		tr.rounds.Add(1)
	}
}

func (tr *traffic) close() {
	select {
	case <-tr.stop:
	default:
		close(tr.stop)
	}
	tr.wg.Wait()
}

// summary names a few broken connections and why.
func (tr *traffic) summary() string {
	var s []string
	tr.reasons.Range(func(k, v any) bool {
		if len(s) < 5 {
			s = append(s, fmt.Sprintf("conn %v: %v", k, v))
		}
		return true
	})
	return strings.Join(s, "\n")
}

// failover runs the drill up to lb2 serving after lb1's death and returns
// how many of the client's connections broke.
func (d *drill) failover(o drillOptions) (*traffic, int64) {
	t := d.t
	d.lb1.start()
	d.lb1.waitLog("to=MASTER", 1)
	d.lb2.start()
	d.lb2.waitLog("to=BACKUP", 1)
	tr := d.open("192.0.2.50:80", "192.0.2.50:8080")
	if o.Sync {
		// Every connection reaches the backup's table before lb1 dies.
		deadline := time.Now().Add(20 * time.Second)
		for d.lb2.established() < 2*drillConns {
			if time.Now().After(deadline) {
				t.Fatalf("lb2's table has %d established connections, want %d:\n%s", d.lb2.established(), 2*drillConns, run(t, d.lb2.h, "ipvsadm", "-Lnc"))
			}
			time.Sleep(100 * time.Millisecond)
		}
	} else {
		time.Sleep(2 * time.Second)
	}
	if n := tr.broken.Load(); n != 0 {
		t.Fatalf("%d connections broke before the failover:\n%s", n, tr.summary())
	}
	if st := d.lb2.lastState(); st != "BACKUP" {
		t.Fatalf("lb2 is %s before lb1's death, want BACKUP (adverts lost under load?):\n%s", st, d.lb2.proc.Output())
	}
	masters := d.lb2.count("to=MASTER")
	before := tr.rounds.Load()
	// lb1 dies: directord without a word, then the node's cables.
	if err := d.lb1.proc.Kill(); err != nil {
		t.Fatal(err)
	}
	d.lb1.proc.Wait(5 * time.Second)
	for _, l := range d.lb1.h.Links() {
		if err := l.Unplug(); err != nil {
			t.Fatal(err)
		}
	}
	killed := time.Now()
	d.lb2.waitLog("to=MASTER", masters+1)
	t.Logf("lb2 master %v after lb1's death", time.Since(killed).Round(time.Millisecond))
	// Long enough for every connection to exchange through lb2 or break.
	time.Sleep(drillDeadline + 2*time.Second)
	if tr.rounds.Load() <= before {
		t.Fatal("no exchange at all after the failover")
	}
	return tr, tr.broken.Load()
}

// With sync, every connection keeps working through the new master.
func TestGuestFailoverKeepsConnectionsWithSync(t *testing.T) {
	o := drillOptions{Sync: true}
	d := newDrill(t, o)
	tr, broken := d.failover(o)
	t.Logf("with sync: %d of %d connections broken by the failover", broken, 2*drillConns)
	if broken != 0 {
		t.Errorf("%d connections broke:\n%s", broken, tr.summary())
	}
	if n := d.lb2.count("sync daemon started"); n < 2 {
		t.Errorf("lb2 started %d sync daemons, want the backup then the master:\n%s", n, d.lb2.proc.Output())
	}
}

// Without sync the same drill breaks connections: the drill can fail.
func TestGuestFailoverBreaksConnectionsWithoutSync(t *testing.T) {
	o := drillOptions{}
	d := newDrill(t, o)
	tr, broken := d.failover(o)
	t.Logf("without sync: %d of %d connections broken by the failover", broken, 2*drillConns)
	if broken == 0 {
		t.Errorf("no connection broke without sync: the drill proves nothing")
	}
	_ = tr
}

// With the relay instead of multicast (which nftables drops on the sync
// link), every connection keeps working through the new master, and
// garbage or forgeries sent to the relay are dropped, counted and survived.
func TestGuestFailoverKeepsConnectionsOverTheRelay(t *testing.T) {
	o := drillOptions{Sync: true, Relay: true}
	d := newDrill(t, o)
	tr, broken := d.failover(o)
	t.Logf("with the relay: %d of %d connections broken by the failover", broken, 2*drillConns)
	if broken != 0 {
		t.Errorf("%d connections broke:\n%s", broken, tr.summary())
	}
	// The wire's multicast did arrive at lb2 and was dropped: the
	// connections reached its table through the relay.
	if n := dropped(t, d.lb2.h); n == 0 {
		t.Errorf("nftables dropped no sync multicast on lb2: the drill did not block multicast")
	} else {
		t.Logf("nftables dropped %d sync multicast packets at lb2", n)
	}
	var c net.Conn
	if err := d.lb2.h.Do(func() (err error) { c, err = net.Dial("udp4", "203.0.113.12:8849"); return err }); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("not a frame"))
	forged := (&sealer{key: []byte("a guessed key that is long enough"), epoch: 1, seq: 1}).seal(frameData, []byte{0, 51, 0, 8, 0, 1, 0, 0}, time.Now())
	c.Write(forged)
	d.lb2.waitLog("reason=forged", 1)
	d.lb2.waitLog("reason=short", 1)
	select {
	case <-d.lb2.proc.Done():
		t.Fatalf("lb2's directord died:\n%s", d.lb2.proc.Output())
	default:
	}
}

// dropped reads the packet counter of the multicast drop rule.
func dropped(t *testing.T, h *netlab.Host) int {
	out := run(t, h, "nft", "list", "table", "inet", "nomcast")
	var n int
	if i := strings.Index(out, "packets "); i >= 0 {
		fmt.Sscan(out[i+len("packets "):], &n)
	}
	return n
}

// Fail back: connections opened while lb1 was dead exist only on lb2 (the
// kernel syncs each connection once here). lb1 restarts, asks for the full
// table while backup, receives it, and takes over again after its preempt
// delay: old and new connections keep working.
func TestGuestFailbackWithFullResync(t *testing.T) {
	brokenA, brokenB := failback(t, drillOptions{Sync: true, Relay: true, Resync: true})
	t.Logf("fail back with resync: %d + %d of %d connections broken", brokenA, brokenB, 4*drillConns)
	if brokenA+brokenB != 0 {
		t.Errorf("%d connections opened before the failover and %d opened during lb1's absence broke", brokenA, brokenB)
	}
}

// The same fail back without resync_on_backup breaks the connections lb1
// never heard of: the fail-back drill can fail.
func TestGuestFailbackWithoutResyncBreaksNewConnections(t *testing.T) {
	brokenA, brokenB := failback(t, drillOptions{Sync: true, Relay: true, Resync: false, OnceOnly: true})
	t.Logf("fail back without resync: %d + %d of %d connections broken", brokenA, brokenB, 4*drillConns)
	if brokenB == 0 {
		t.Errorf("no connection opened during lb1's absence broke without resync: the drill proves nothing")
	}
}

// failback runs the fail-back drill and returns how many connections of
// each set broke.
func failback(t *testing.T, o drillOptions) (brokenA, brokenB int64) {
	d := newDrill(t, o)
	trA, broken := d.failover(o)
	if broken != 0 {
		t.Fatalf("%d connections broke in the failover:\n%s", broken, trA.summary())
	}
	trB := d.open("192.0.2.50:80", "192.0.2.50:8080")
	time.Sleep(2 * time.Second)
	if n := trB.broken.Load(); n != 0 {
		t.Fatalf("%d new connections through lb2 broke:\n%s", n, trB.summary())
	}
	for _, l := range d.lb1.h.Links() {
		if err := l.Plug(); err != nil {
			t.Fatal(err)
		}
	}
	backups := d.lb2.count("to=BACKUP")
	d.lb1.start()
	if o.Resync {
		d.lb1.waitLog("full resync received", 1)
	}
	d.lb1.waitLog("to=MASTER", 1)
	d.lb2.waitLog("to=BACKUP", backups+1)
	out := string(d.lb1.proc.Output())
	if o.Resync {
		line := out[strings.Index(out, "full resync received"):]
		line = line[:strings.IndexByte(line, '\n')]
		t.Logf("lb1: %s", line)
		var conns int
		if i := strings.Index(line, "conns="); i >= 0 {
			fmt.Sscan(line[i+len("conns="):], &conns)
		}
		if conns < 4*drillConns {
			t.Errorf("the resync carried %d entries, want at least the %d connections", conns, 4*drillConns)
		}
		if i, j := strings.Index(out, "full resync received"), strings.Index(out, "to=MASTER"); i > j {
			t.Errorf("lb1 became master before the resync arrived")
		}
	}
	time.Sleep(drillDeadline + 2*time.Second)
	t.Logf("opened before the failover: %d broken; during lb1's absence: %d broken\n%s\n%s", trA.broken.Load(), trB.broken.Load(), trA.summary(), trB.summary())
	return trA.broken.Load(), trB.broken.Load()
}
