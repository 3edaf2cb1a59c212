//go:build vmguest

package sync

import (
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/directord/directord/internal/netlab"
	"github.com/directord/directord/ipvs"
	"golang.org/x/net/ipv4"
)

// The receiving half of the relay against the VM kernel: an authentic
// frame carrying a datagram the kernel's master sent (testdata) reaches the
// local backup daemon, which adds the connection to the table; its replay,
// forgeries, garbage and an authentic frame with a malformed sync message
// are dropped and counted, and nothing of them reaches the kernel.
func TestGuestRelayDeliversAuthenticAndDropsTheRest(t *testing.T) {
	lab := netlab.New(t)
	sync := lab.NewSegment("sync")
	peer := lab.AddHost("peer", "192.0.2.11/24")
	sync.AddLink(peer, "eth1", "203.0.113.11/24")
	b := lab.AddHost("lb", "192.0.2.12/24")
	sync.AddLink(b, "eth1", "203.0.113.12/24")
	run(t, b, "ipvsadm", "-A", "-t", "192.0.2.50:80", "-s", "rr")
	run(t, b, "ipvsadm", "-a", "-t", "192.0.2.50:80", "-r", "192.0.2.21:80", "-g")
	k := openKernel(t, b)
	base := ipvs.DaemonConfig{Interface: "eth1", SyncID: 51}
	backup := base
	backup.State = ipvs.DaemonBackup
	if err := k.NewDaemon(backup); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { k.DelDaemon(ipvs.DaemonBackup) })

	keyFile := filepath.Join(t.TempDir(), "sync.key")
	if err := os.WriteFile(keyFile, append(testKey, '\n'), 0o600); err != nil {
		t.Fatal(err)
	}
	var r *Relay
	cfg := RelayConfig{Listen: netip.MustParseAddrPort("203.0.113.12:8849"), Peer: netip.MustParseAddrPort("203.0.113.11:8849"), KeyFile: keyFile}
	if err := b.Do(func() (err error) { r, err = NewRelay(cfg, base, true, nil); return err }); err != nil {
		t.Fatal(err)
	}
	r.Start()
	t.Cleanup(r.Close)

	var c *net.UDPConn
	if err := peer.Do(func() (err error) {
		c, err = net.DialUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("203.0.113.11:8849")), net.UDPAddrFromAddrPort(cfg.Listen))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	send := func(b []byte) {
		t.Helper()
		if _, err := c.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	golden, err := os.ReadFile("testdata/v1-tcp4-dr.bin")
	if err != nil {
		t.Fatal(err)
	}
	s := &sealer{key: testKey, epoch: uint64(time.Now().UnixNano())}
	authentic := s.seal(frameData, golden, time.Now())
	send(authentic)
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(run(t, b, "ipvsadm", "-Lnc"), "192.0.2.100:40001") {
		if time.Now().After(deadline) {
			t.Fatalf("the backup daemon never added the relayed connection:\n%s\nrelay: %+v", run(t, b, "ipvsadm", "-Lnc"), r.Stats())
		}
		time.Sleep(50 * time.Millisecond)
	}

	send(authentic) // replayed
	forged := append([]byte(nil), authentic...)
	forged[frameHeaderLen+20]++ // another client address
	send(forged)
	send((&sealer{key: []byte("not the key, but just as long..."), epoch: s.epoch, seq: 5}).seal(frameData, golden, time.Now()))
	send([]byte("garbage"))
	send(make([]byte, 1500))
	bad := append([]byte(nil), golden...)
	bad[3]-- // size field
	send(s.seal(frameData, bad, time.Now()))

	want := map[DropReason]uint64{DropReplayed: 1, DropForged: 2, DropShort: 2, DropMalformed: 1}
	deadline = time.Now().Add(10 * time.Second)
	for {
		st := r.Stats()
		ok := st.DatagramsReceived == 1 && st.ConnsReceived == 1
		for k, v := range want {
			ok = ok && st.Dropped[k] == v
		}
		if ok {
			t.Logf("relay counters: %+v", st)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("relay counters %+v, want 1 datagram received and drops %v", st, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if out := run(t, b, "ipvsadm", "-Lnc"); strings.Count(out, "192.0.2.100") != 1 {
		t.Errorf("something besides the authentic datagram reached the kernel:\n%s", out)
	}
}

// Both halves of the relay: a datagram sent to the sync group on the
// peer's sync interface (as its kernel's master daemon sends them) is
// captured there, carried to lb, and re-emitted to lb's backup daemon,
// although nftables drops the multicast that arrives at lb on the wire.
func TestGuestRelayCarriesTheGroupsDatagrams(t *testing.T) {
	lab := netlab.New(t)
	seg := lab.NewSegment("sync")
	peer := lab.AddHost("peer", "192.0.2.11/24")
	seg.AddLink(peer, "eth1", "203.0.113.11/24")
	b := lab.AddHost("lb", "192.0.2.12/24")
	seg.AddLink(b, "eth1", "203.0.113.12/24")
	run(t, b, "nft", "add table inet nomcast")
	run(t, b, "nft", "add chain inet nomcast in { type filter hook input priority 0 ; }")
	run(t, b, "nft", "add rule inet nomcast in iifname eth1 ip daddr 224.0.0.81 ip ttl != 0 counter drop")
	run(t, b, "ipvsadm", "-A", "-t", "192.0.2.50:80", "-s", "rr")
	run(t, b, "ipvsadm", "-a", "-t", "192.0.2.50:80", "-r", "192.0.2.21:80", "-g")
	k := openKernel(t, b)
	base := ipvs.DaemonConfig{Interface: "eth1", SyncID: 51}
	if err := k.NewDaemon(ipvs.DaemonConfig{State: ipvs.DaemonBackup, Interface: "eth1", SyncID: 51}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { k.DelDaemon(ipvs.DaemonBackup) })
	keyFile := filepath.Join(t.TempDir(), "sync.key")
	if err := os.WriteFile(keyFile, testKey, 0o600); err != nil {
		t.Fatal(err)
	}
	relays := map[string]*Relay{}
	for _, h := range []*netlab.Host{peer, b} {
		me, other := "203.0.113.11:8849", "203.0.113.12:8849"
		if h == b {
			me, other = other, me
		}
		cfg := RelayConfig{Listen: netip.MustParseAddrPort(me), Peer: netip.MustParseAddrPort(other), KeyFile: keyFile}
		var r *Relay
		if err := h.Do(func() (err error) { r, err = NewRelay(cfg, base, false, nil); return err }); err != nil {
			t.Fatal(err)
		}
		r.Start()
		t.Cleanup(r.Close)
		relays[h.Label] = r
	}
	golden, err := os.ReadFile("testdata/v1-tcp4-dr.bin")
	if err != nil {
		t.Fatal(err)
	}
	if err := peer.Do(func() error {
		c, err := net.ListenPacket("udp4", "203.0.113.11:0")
		if err != nil {
			return err
		}
		defer c.Close()
		p := ipv4.NewPacketConn(c)
		ifi, err := net.InterfaceByName("eth1")
		if err != nil {
			return err
		}
		if err := p.SetMulticastInterface(ifi); err != nil {
			return err
		}
		_, err = p.WriteTo(golden, nil, &net.UDPAddr{IP: net.IPv4(224, 0, 0, 81), Port: 8848})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(run(t, b, "ipvsadm", "-Lnc"), "192.0.2.100:40001") {
		if time.Now().After(deadline) {
			t.Fatalf("lb's backup daemon never got the connection:\n%s\npeer relay %+v\nlb relay %+v\n%s",
				run(t, b, "ipvsadm", "-Lnc"), relays["peer"].Stats(), relays["lb"].Stats(), run(t, b, "nft", "list", "table", "inet", "nomcast"))
		}
		time.Sleep(50 * time.Millisecond)
	}
	if n := dropped(t, b); n != 1 {
		t.Errorf("nftables dropped %d multicast datagrams at lb, want the 1 from the wire", n)
	}
	if st := relays["peer"].Stats(); st.DatagramsSent != 1 || st.ConnsSent != 1 {
		t.Errorf("peer relay %+v, want 1 datagram with 1 connection sent", st)
	}
}
