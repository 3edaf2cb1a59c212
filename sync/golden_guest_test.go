//go:build vmguest

package sync

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/directord/directord/internal/netlab"
	"github.com/directord/directord/ipvs"
	"golang.org/x/net/ipv4"
)

// goldenLab is a director whose kernel runs the master sync daemon on
// eth0, a client, a DR real server, and a peer that listens to the sync
// group: every connection the client opens through the director comes out
// as a sync datagram at the peer.
//
//	client 192.0.2.100 2001:db8::100 ─┐
//	lb     192.0.2.11  2001:db8::11   ├─ LAN (VIP 192.0.2.50, 2001:db8::50 on lb)
//	rs     192.0.2.21 (VIP on lo)     │
//	peer   192.0.2.12 (sync group)   ─┘
type goldenLab struct {
	t                  *testing.T
	lab                *netlab.Lab
	client, lb, rs, pr *netlab.Host
	sock               *ipv4.PacketConn
}

func newGoldenLab(t *testing.T) *goldenLab {
	g := &goldenLab{t: t, lab: netlab.New(t)}
	g.client = g.lab.AddHost("client", "192.0.2.100/24", "2001:db8::100/64")
	g.lb = g.lab.AddHost("lb", "192.0.2.11/24", "2001:db8::11/64", "192.0.2.50/32", "2001:db8::50/128")
	g.rs = g.lab.AddHost("rs", "192.0.2.21/24")
	g.pr = g.lab.AddHost("peer", "192.0.2.12/24")
	for _, dev := range []string{"all", "eth0"} {
		run(t, g.rs, "sysctl", "-qw", "net.ipv4.conf."+dev+".arp_ignore=1", "net.ipv4.conf."+dev+".arp_announce=2")
	}
	run(t, g.rs, "ip", "addr", "add", "192.0.2.50/32", "dev", "lo")
	// NAT real servers sit on a dummy network of lb: the kernel only
	// needs them routable, UDP needs no answer to be synced.
	run(t, g.lb, "ip", "link", "add", "reals", "type", "dummy")
	run(t, g.lb, "ip", "addr", "add", "198.51.100.1/24", "dev", "reals")
	run(t, g.lb, "ip", "link", "set", "reals", "up")
	run(t, g.lb, "ipvsadm", "-A", "-t", "192.0.2.50:80", "-s", "rr")
	run(t, g.lb, "ipvsadm", "-a", "-t", "192.0.2.50:80", "-r", "192.0.2.21:80", "-g")
	run(t, g.lb, "ipvsadm", "-A", "-u", "192.0.2.50:53", "-s", "rr")
	run(t, g.lb, "ipvsadm", "-a", "-u", "192.0.2.50:53", "-r", "198.51.100.11:53", "-m")
	// IPv6: the director itself is the real server (local node), and the
	// service is persistent, so a template travels with the connection.
	run(t, g.lb, "ipvsadm", "-A", "-t", "[2001:db8::50]:80", "-s", "rr", "-p", "300")
	run(t, g.lb, "ipvsadm", "-a", "-t", "[2001:db8::50]:80", "-r", "[2001:db8::11]:80", "-g")
	for _, h := range []*netlab.Host{g.rs, g.lb} {
		var ln net.Listener
		if err := h.Do(func() (err error) { ln, err = net.Listen("tcp", ":80"); return err }); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go func() { defer c.Close(); c.Read(make([]byte, 64)); time.Sleep(time.Minute) }()
			}
		}()
	}
	// The peer joins the group like a backup daemon would.
	if err := g.pr.Do(func() error {
		c, err := net.ListenPacket("udp4", "224.0.0.81:8848")
		if err != nil {
			return err
		}
		g.sock = ipv4.NewPacketConn(c)
		ifi, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		return g.sock.JoinGroup(ifi, &net.UDPAddr{IP: net.IPv4(224, 0, 0, 81)})
	}); err != nil {
		t.Fatalf("peer: join the sync group: %v", err)
	}
	t.Cleanup(func() { g.sock.Close() })
	k := openKernel(t, g.lb)
	if err := k.NewDaemon(ipvs.DaemonConfig{State: ipvs.DaemonMaster, Interface: "eth0", SyncID: 51}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { k.DelDaemon(ipvs.DaemonMaster) })
	return g
}

// next returns the next sync datagram the peer receives.
func (g *goldenLab) next() []byte {
	g.t.Helper()
	b := make([]byte, 65536)
	g.sock.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, _, _, err := g.sock.ReadFrom(b)
	if err != nil {
		g.t.Fatalf("no sync datagram at the peer: %v", err)
	}
	return b[:n]
}

// tcp opens a connection from the client's port to dst and sends one
// message: SYN, ACK and data are the third packet the director sees, where
// the master syncs an established connection (sync_threshold 3).
func (g *goldenLab) tcp(port int, dst string) net.Conn {
	g.t.Helper()
	var c net.Conn
	if err := g.client.Do(func() (err error) {
		d := net.Dialer{LocalAddr: &net.TCPAddr{Port: port}, Timeout: 5 * time.Second}
		c, err = d.Dial("tcp", dst)
		return err
	}); err != nil {
		g.t.Fatal(err)
	}
	g.t.Cleanup(func() { c.Close() })
	if _, err := c.Write([]byte("hello")); err != nil {
		g.t.Fatal(err)
	}
	return c
}

// udp sends three datagrams from the client's port to dst.
func (g *goldenLab) udp(port int, dst string) {
	g.t.Helper()
	if err := g.client.Do(func() error {
		c, err := net.DialUDP("udp", &net.UDPAddr{Port: port}, net.UDPAddrFromAddrPort(netip.MustParseAddrPort(dst)))
		if err != nil {
			return err
		}
		defer c.Close()
		for range 3 {
			if _, err := c.Write([]byte("query")); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		g.t.Fatal(err)
	}
}

// goldenCases make one datagram each, in this order, from a fresh kernel.
var goldenCases = []struct {
	name    string
	version string // net.ipv4.vs.sync_version
	make    func(g *goldenLab)
}{
	{"v1-tcp4-dr", "1", func(g *goldenLab) { g.tcp(40001, "192.0.2.50:80") }},
	{"v1-udp4-nat", "1", func(g *goldenLab) { g.udp(40002, "192.0.2.50:53") }},
	{"v1-tcp6-persistent", "1", func(g *goldenLab) { g.tcp(40003, "[2001:db8::50]:80") }},
	{"v0-tcp4-dr", "0", func(g *goldenLab) { g.tcp(40004, "192.0.2.50:80") }},
	{"v0-udp4-nat", "0", func(g *goldenLab) { g.udp(40005, "192.0.2.50:53") }},
}

// The kernel's master sync daemon sends, for each connection, exactly the
// bytes in testdata/*.bin, which the unit tests decode field by field (see
// TestDecodeGolden). With DIRECTORD_SYNC_UPDATE=1 (go test -run TestVM
// -update) the guest prints what it captured and the host rewrites
// testdata.
func TestGuestGoldenDatagrams(t *testing.T) {
	g := newGoldenLab(t)
	updating := os.Getenv("DIRECTORD_SYNC_UPDATE") == "1"
	for _, c := range goldenCases {
		run(t, g.lb, "sysctl", "-qw", "net.ipv4.vs.sync_version="+c.version)
		c.make(g)
		got := g.next()
		if updating {
			fmt.Printf("SYNC-GOLDEN %s %s\n", c.name, hex.EncodeToString(got))
			continue
		}
		want, err := os.ReadFile(filepath.Join("testdata", c.name+".bin"))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s: the kernel sent\n%s\nwant (testdata/%s.bin)\n%s", c.name, hex.Dump(got), c.name, hex.Dump(want))
		}
		m, err := Decode(got)
		if err != nil {
			t.Errorf("%s: Decode: %v", c.name, err)
			continue
		}
		if again, err := m.Encode(); err != nil || !bytes.Equal(again, got) {
			t.Errorf("%s: Encode(Decode(x)) = %x, %v; want x = %x", c.name, again, err, got)
		}
	}
}
