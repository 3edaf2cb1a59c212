package vip

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
	"golang.org/x/net/bpf"
)

// fakeConn is a net.PacketConn that records what is written and blocks
// reads until closed.
type fakeConn struct {
	mu      sync.Mutex
	written [][]byte
	closed  chan struct{}
	once    sync.Once
}

func newFakeConn() *fakeConn { return &fakeConn{closed: make(chan struct{})} }

func (f *fakeConn) WriteTo(b []byte, _ net.Addr) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.written = append(f.written, bytes.Clone(b))
	return len(b), nil
}
func (f *fakeConn) ReadFrom([]byte) (int, net.Addr, error) { <-f.closed; return 0, nil, net.ErrClosed }
func (f *fakeConn) Close() error                           { f.once.Do(func() { close(f.closed) }); return nil }
func (f *fakeConn) LocalAddr() net.Addr                    { return nil }
func (f *fakeConn) SetDeadline(time.Time) error            { return nil }
func (f *fakeConn) SetReadDeadline(time.Time) error        { return nil }
func (f *fakeConn) SetWriteDeadline(time.Time) error       { return nil }

func (f *fakeConn) frames() [][]byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.written
}

// testLink opens a link whose sockets are fakes.
func testLink(t *testing.T) (*link, *fakeConn, *fakeConn) {
	t.Helper()
	arpC, ndC := newFakeConn(), newFakeConn()
	listen := func(_ *net.Interface, et ethernet.EtherType, filter []bpf.RawInstruction) (net.PacketConn, error) {
		switch et {
		case ethernet.EtherTypeARP:
			return arpC, nil
		case ethernet.EtherTypeIPv6:
			if filter == nil {
				t.Error("IPv6 socket opened without its NA filter")
			}
			return ndC, nil
		}
		t.Fatalf("unexpected EtherType %v", et)
		return nil, nil
	}
	ifi := &net.Interface{Index: 2, Name: "eth0", HardwareAddr: mustMAC("02:00:00:00:00:0b")}
	l, err := openLink(ifi, listen, new(atomic.Uint64), linkHooks{claim: func(*link, claim) {}, readErr: func(*link, error) {}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.close)
	return l, arpC, ndC
}

func mustMAC(s string) net.HardwareAddr {
	m, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return m
}

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.Join(strings.Fields(s), ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// A gratuitous ARP pair for 192.0.2.50 from 02:00:00:00:00:0b, laid out by
// hand from RFC 826: request with THA zero (RFC 5227 2.3), reply with THA =
// SHA (RFC 5944 4.6), both to the broadcast MAC, padded to 60 bytes.
func TestAnnounceIPv4SendsRequestAndReplyBytes(t *testing.T) {
	l, arpC, ndC := testLink(t)
	if err := l.announce(netip.MustParseAddr("192.0.2.50")); err != nil {
		t.Fatal(err)
	}
	pad := strings.Repeat("00", 18)
	want := [][]byte{
		unhex(t, "ffffffffffff 02000000000b 0806"+
			"0001 0800 06 04 0001 02000000000b c0000232 000000000000 c0000232"+pad),
		unhex(t, "ffffffffffff 02000000000b 0806"+
			"0001 0800 06 04 0002 02000000000b c0000232 02000000000b c0000232"+pad),
	}
	if diff := cmp.Diff(want, arpC.frames()); diff != "" {
		t.Errorf("ARP frames (-want +got):\n%s", diff)
	}
	if n := len(ndC.frames()); n != 0 {
		t.Errorf("IPv4 announcement wrote %d IPv6 frames", n)
	}
	if got := l.sent.Load(); got != 2 {
		t.Errorf("sent counter %d, want 2", got)
	}
}

// An RFC 5227 probe: sender IP zero, target the VIP.
func TestProbeIPv4Bytes(t *testing.T) {
	l, arpC, _ := testLink(t)
	if err := l.probe(netip.MustParseAddr("192.0.2.50")); err != nil {
		t.Fatal(err)
	}
	want := unhex(t, "ffffffffffff 02000000000b 0806"+
		"0001 0800 06 04 0001 02000000000b 00000000 000000000000 c0000232"+strings.Repeat("00", 18))
	if diff := cmp.Diff([][]byte{want}, arpC.frames()); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

// icmpv6Checksum is RFC 4443 2.3 over the RFC 8200 8.1 pseudo-header,
// written here independently of the code under test.
func icmpv6Checksum(src, dst netip.Addr, msg []byte) uint16 {
	var sum uint32
	add := func(b []byte) {
		for i := 0; i+1 < len(b); i += 2 {
			sum += uint32(binary.BigEndian.Uint16(b[i:]))
		}
		if len(b)%2 == 1 {
			sum += uint32(b[len(b)-1]) << 8
		}
	}
	s, d := src.As16(), dst.As16()
	add(s[:])
	add(d[:])
	var lenNext [8]byte
	binary.BigEndian.PutUint32(lenNext[0:4], uint32(len(msg)))
	lenNext[7] = 58
	add(lenNext[:])
	add(msg)
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}

// An unsolicited NA for 2001:db8::50 (RFC 4861 4.4 and 7.2.6): to ff02::1
// at 33:33:00:00:00:01, hop limit 255, Override set, Router and Solicited
// clear, the target link-layer address option carrying our MAC.
func TestAnnounceIPv6SendsUnsolicitedNABytes(t *testing.T) {
	l, arpC, ndC := testLink(t)
	vip := netip.MustParseAddr("2001:db8::50")
	if err := l.announce(vip); err != nil {
		t.Fatal(err)
	}
	icmp := unhex(t, "88 00 0000 20000000 20010db8000000000000000000000050 02 01 02000000000b")
	binary.BigEndian.PutUint16(icmp[2:4], icmpv6Checksum(vip, netip.MustParseAddr("ff02::1"), icmp))
	want := append(unhex(t, "333300000001 02000000000b 86dd"+
		"60000000 0020 3a ff 20010db8000000000000000000000050 ff020000000000000000000000000001"), icmp...)
	if diff := cmp.Diff([][]byte{want}, ndC.frames()); diff != "" {
		t.Errorf("NA frame (-want +got):\n%s", diff)
	}
	if n := len(arpC.frames()); n != 0 {
		t.Errorf("IPv6 announcement wrote %d ARP frames", n)
	}
}

// A duplicate address detection probe (RFC 4862 5.4.2): from ::, to the
// solicited-node group ff02::1:ff00:50, no source link-layer option.
func TestProbeIPv6Bytes(t *testing.T) {
	l, _, ndC := testLink(t)
	vip := netip.MustParseAddr("2001:db8::50")
	if err := l.probe(vip); err != nil {
		t.Fatal(err)
	}
	group := netip.MustParseAddr("ff02::1:ff00:50")
	icmp := unhex(t, "87 00 0000 00000000 20010db8000000000000000000000050")
	binary.BigEndian.PutUint16(icmp[2:4], icmpv6Checksum(netip.IPv6Unspecified(), group, icmp))
	want := append(unhex(t, "3333ff000050 02000000000b 86dd"+
		"60000000 0018 3a ff 00000000000000000000000000000000 ff0200000000000000000001ff000050"), icmp...)
	if diff := cmp.Diff([][]byte{want}, ndC.frames()); diff != "" {
		t.Errorf("NS frame (-want +got):\n%s", diff)
	}
}

func TestParseClaim(t *testing.T) {
	mac := mustMAC("02:00:00:00:00:0c")
	v4, v6 := netip.MustParseAddr("192.0.2.50"), netip.MustParseAddr("2001:db8::50")
	build := func(f func(net.HardwareAddr, netip.Addr) ([]byte, error), ip netip.Addr) []byte {
		b, err := f(mac, ip)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	// A holder's answer to an ARP probe: a reply to the prober's MAC and
	// to 0.0.0.0, as Linux sends it.
	prober := mustMAC("02:00:00:00:00:0b")
	p, err := arp.NewPacket(arp.OperationReply, mac, v4, prober, netip.IPv4Unspecified())
	if err != nil {
		t.Fatal(err)
	}
	pb, err := p.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	probeAnswer, err := ethFrame(prober, mac, ethernet.EtherTypeARP, pb)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name  string
		frame []byte
		want  claim
		ok    bool
	}{
		{"gratuitous request", build(garpRequest, v4), claim{ip: v4, mac: mac, to: ethernet.Broadcast}, true},
		{"gratuitous reply", build(garpReply, v4), claim{ip: v4, mac: mac, to: ethernet.Broadcast}, true},
		{"answer to a probe, to the prober alone", probeAnswer, claim{ip: v4, mac: mac, to: prober}, true},
		{"probe claims nothing", build(arpProbe, v4), claim{}, false},
		{"unsolicited NA", build(unsolicitedNA, v6), claim{ip: v6, mac: mac, to: allNodesMAC}, true},
		{"DAD solicitation claims nothing", build(dadProbe, v6), claim{}, false},
		{"truncated", build(garpRequest, v4)[:20], claim{}, false},
		{"garbage", []byte{1, 2, 3}, claim{}, false},
	} {
		got, err := parseClaim(tt.frame)
		if (err == nil) != tt.ok {
			t.Errorf("%s: err = %v, want ok=%v", tt.name, err, tt.ok)
			continue
		}
		if tt.ok && (got.ip != tt.want.ip || !bytes.Equal(got.mac, tt.want.mac) || !bytes.Equal(got.to, tt.want.to)) {
			t.Errorf("%s: claim %v at %v to %v, want %v at %v to %v", tt.name, got.ip, got.mac, got.to, tt.want.ip, tt.want.mac, tt.want.to)
		}
	}
}

// The BPF program keeps NAs and drops other IPv6 traffic.
func TestNAFilter(t *testing.T) {
	vm, err := bpf.NewVM(mustDisassemble(t, naFilter))
	if err != nil {
		t.Fatal(err)
	}
	mac := mustMAC("02:00:00:00:00:0c")
	na, _ := unsolicitedNA(mac, netip.MustParseAddr("2001:db8::50"))
	ns, _ := dadProbe(mac, netip.MustParseAddr("2001:db8::50"))
	for name, tt := range map[string]struct {
		frame []byte
		pass  bool
	}{"NA": {na, true}, "NS": {ns, false}, "short": {na[:30], false}} {
		n, err := vm.Run(tt.frame)
		if err != nil && tt.pass {
			t.Errorf("%s: %v", name, err)
		}
		if (n > 0) != tt.pass {
			t.Errorf("%s: filter returned %d, want pass=%v", name, n, tt.pass)
		}
	}
}

func mustDisassemble(t *testing.T, raw []bpf.RawInstruction) []bpf.Instruction {
	t.Helper()
	ins, ok := bpf.Disassemble(raw)
	if !ok {
		t.Fatal("cannot disassemble filter")
	}
	return ins
}
