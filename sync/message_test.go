package sync

import (
	"bytes"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func ap(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

const (
	protoTCP       = 6
	protoUDP       = 17
	tcpEstablished = 1 // IP_VS_TCP_S_ESTABLISHED
)

// goldenDecoded is what each datagram in testdata, captured from Debian's
// 6.1 kernel in the VM (TestGuestGoldenDatagrams), must decode to.
var goldenDecoded = map[string]Message{
	// An established TCP connection to a DR real server: flags DROUTE
	// and NOOUTPUT (0x80), timeout the ESTABLISHED state's 900 s.
	"v1-tcp4-dr": {Version: 1, SyncID: 51, Conns: []Conn{{
		Protocol: protoTCP, Flags: 0x83, State: tcpEstablished,
		Client: ap("192.0.2.100:40001"), Virtual: ap("192.0.2.50:80"), Dest: ap("192.0.2.21:80"),
		Timeout: 900,
	}}},
	// UDP to a NAT real server: MASQ with INACTIVE, state 0, timeout 300.
	"v1-udp4-nat": {Version: 1, SyncID: 51, Conns: []Conn{{
		Protocol: protoUDP, Flags: FlagInactive, State: 0,
		Client: ap("192.0.2.100:40002"), Virtual: ap("192.0.2.50:53"), Dest: ap("198.51.100.11:53"),
		Timeout: 300,
	}}},
	// IPv6 to a persistent service: the template (client port 0,
	// TEMPLATE|INACTIVE|NOOUTPUT|DROUTE, the persistence timeout 300)
	// travels with the connection it controls.
	"v1-tcp6-persistent": {Version: 1, SyncID: 51, Conns: []Conn{
		{Type: 1, Protocol: protoTCP, Flags: 0x1183, State: 0,
			Client: ap("[2001:db8::100]:0"), Virtual: ap("[2001:db8::50]:80"), Dest: ap("[2001:db8::11]:80"), Timeout: 300},
		{Type: 1, Protocol: protoTCP, Flags: 0x1183, State: 1,
			Client: ap("[2001:db8::100]:0"), Virtual: ap("[2001:db8::50]:80"), Dest: ap("[2001:db8::11]:80"), Timeout: 300},
		{Type: 1, Protocol: protoTCP, Flags: 0x03, State: tcpEstablished,
			Client: ap("[2001:db8::100]:40003"), Virtual: ap("[2001:db8::50]:80"), Dest: ap("[2001:db8::11]:80"), Timeout: 900},
		{Type: 1, Protocol: protoTCP, Flags: 0x1183, State: 1,
			Client: ap("[2001:db8::100]:0"), Virtual: ap("[2001:db8::50]:80"), Dest: ap("[2001:db8::11]:80"), Timeout: 300},
	}},
	// Version 0 (net.ipv4.vs.sync_version=0): 16-bit flags, no timeout.
	"v0-tcp4-dr": {Version: 0, SyncID: 51, Conns: []Conn{{
		Protocol: protoTCP, Flags: 0x83, State: tcpEstablished,
		Client: ap("192.0.2.100:40004"), Virtual: ap("192.0.2.50:80"), Dest: ap("192.0.2.21:80"),
	}}},
	"v0-udp4-nat": {Version: 0, SyncID: 51, Conns: []Conn{{
		Protocol: protoUDP, Flags: FlagInactive,
		Client: ap("192.0.2.100:40005"), Virtual: ap("192.0.2.50:53"), Dest: ap("198.51.100.11:53"),
	}}},
}

var addrCmp = cmp.Comparer(func(a, b netip.AddrPort) bool { return a == b })

// Every field of the kernel's datagrams, v0 and v1, IPv4 and IPv6, and
// Encode rebuilds them byte for byte.
func TestDecodeGolden(t *testing.T) {
	files, _ := filepath.Glob("testdata/*.bin")
	if len(files) != len(goldenDecoded) {
		t.Errorf("testdata has %d datagrams, the test knows %d", len(files), len(goldenDecoded))
	}
	for name, want := range goldenDecoded {
		b, err := os.ReadFile(filepath.Join("testdata", name+".bin"))
		if err != nil {
			t.Fatal(err)
		}
		got, err := Decode(b)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if diff := cmp.Diff(want, got, addrCmp); diff != "" {
			t.Errorf("%s (-want +got):\n%s", name, diff)
		}
		again, err := got.Encode()
		if err != nil || !bytes.Equal(again, b) {
			t.Errorf("%s: Encode = %x, %v; want the captured %x", name, again, err, b)
		}
	}
}

// Options (sequence data and a persistence engine's data and name) round
// trip, and entries after one with options start 4-byte aligned, as the
// kernel pads them.
func TestOptionsAndAlignment(t *testing.T) {
	seq := bytes.Repeat([]byte{0xab}, seqDataLen)
	m := Message{Version: 1, SyncID: 7, Conns: []Conn{
		{Protocol: protoUDP, Flags: 0x0100, Client: ap("192.0.2.100:5060"), Virtual: ap("192.0.2.50:5060"), Dest: ap("198.51.100.11:5060"), Timeout: 300,
			Options: []Option{{Type: OptPEData, Data: []byte("call-1")}, {Type: OptPEName, Data: []byte("sip")}}},
		{Type: 1, Protocol: protoTCP, Flags: FlagInSeq | FlagOutSeq, State: tcpEstablished,
			Client: ap("[2001:db8::100]:40000"), Virtual: ap("[2001:db8::50]:21"), Dest: ap("[2001:db8:1::11]:21"), Timeout: 900,
			Options: []Option{{Type: OptSeqData, Data: seq}}},
	}}
	b, err := m.Encode()
	if err != nil {
		t.Fatal(err)
	}
	first := connLenV4 + 2 + 6 + 2 + 3 // 49, padded to 52
	if want := headerLenV1 + 52 + connLenV6 + 2 + seqDataLen; len(b) != want {
		t.Fatalf("encoded %d bytes, want %d", len(b), want)
	}
	if !bytes.Equal(b[headerLenV1+first:headerLenV1+52], []byte{0, 0, 0}) {
		t.Errorf("padding after the first entry is %x, want zeros", b[headerLenV1+first:headerLenV1+52])
	}
	got, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(m, got, addrCmp); diff != "" {
		t.Errorf("round trip (-want +got):\n%s", diff)
	}

	v0 := Message{Version: 0, SyncID: 7, Conns: []Conn{{Protocol: protoTCP, Flags: FlagOutSeq, State: tcpEstablished,
		Client: ap("192.0.2.100:40000"), Virtual: ap("192.0.2.50:21"), Dest: ap("198.51.100.11:21"),
		Options: []Option{{Type: OptSeqData, Data: seq}}}}}
	b, err = v0.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if len(b) != headerLenV0+connLenV0+seqDataLen {
		t.Errorf("v0 with sequence data: %d bytes", len(b))
	}
	if got, err := Decode(b); err != nil || cmp.Diff(v0, got, addrCmp) != "" {
		t.Errorf("v0 round trip: %v\n%s", err, cmp.Diff(v0, got, addrCmp))
	}
}

// What the kernel's backup refuses, Decode refuses, with a reason.
func TestDecodeRejects(t *testing.T) {
	good, err := os.ReadFile("testdata/v1-tcp4-dr.bin")
	if err != nil {
		t.Fatal(err)
	}
	mod := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), good...)) }
	for _, c := range []struct {
		name string
		b    []byte
		want error
	}{
		{"empty", nil, ErrShort},
		{"size field off by one", mod(func(b []byte) []byte { b[3]++; return b }), ErrSize},
		{"truncated", mod(func(b []byte) []byte { b = b[:40]; b[3] = 40; return b }), ErrShort},
		{"entry version 1", mod(func(b []byte) []byte { b[10] |= 0x10; return b }), ErrVersion},
		{"entry longer than the datagram", mod(func(b []byte) []byte { b[11] = 40; return b }), ErrShort},
		{"entry shorter than its type", mod(func(b []byte) []byte { b[11] = 20; return b }), ErrShort},
		{"two entries announced, one sent", mod(func(b []byte) []byte { b[4] = 2; return b }), ErrShort},
		{"zero-length option", mod(func(b []byte) []byte {
			b = append(b, 2, 0, 0, 0)
			b[11] += 4
			b[3] += 4
			return b
		}), ErrOption},
		{"trailing bytes", mod(func(b []byte) []byte { b = append(b, 0, 0, 0, 0); b[3] += 4; return b }), ErrTrail},
		{"IPv6 entry in an IPv4-sized entry", mod(func(b []byte) []byte { b[8] = 1; return b }), ErrShort},
	} {
		_, err := Decode(c.b)
		if !errors.Is(err, c.want) {
			t.Errorf("%s: Decode = %v, want %v", c.name, err, c.want)
		}
	}
}

// Pack fills messages up to the length limit and 255 entries, like the
// kernel's master, and every message decodes back to its share.
func TestPack(t *testing.T) {
	var conns []Conn
	for i := range 300 {
		conns = append(conns, Conn{Protocol: protoTCP, State: tcpEstablished, Timeout: 900,
			Client:  netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}), uint16(30000+i)),
			Virtual: ap("192.0.2.50:80"), Dest: ap("198.51.100.11:80")})
	}
	msgs, err := Pack(51, conns, 1472)
	if err != nil {
		t.Fatal(err)
	}
	per := (1472 - headerLenV1) / connLenV4 // 40
	if want := (300 + per - 1) / per; len(msgs) != want {
		t.Errorf("%d messages, want %d", len(msgs), want)
	}
	var back []Conn
	for _, b := range msgs {
		if len(b) > 1472 {
			t.Errorf("message of %d bytes", len(b))
		}
		m, err := Decode(b)
		if err != nil {
			t.Fatal(err)
		}
		back = append(back, m.Conns...)
	}
	if diff := cmp.Diff(conns, back, addrCmp); diff != "" {
		t.Errorf("packed and decoded (-want +got):\n%s", diff)
	}
	if msgs, _ := Pack(51, conns, 65000); len(msgs) != 2 {
		t.Errorf("with room for all, %d messages, want 2 (255 entries at most)", len(msgs))
	}
}

// FuzzDecode: a datagram from the network never panics the decoder, and
// whatever decodes encodes back to the same bytes (the format has no
// slack the decoder would drop silently), except for the padding between
// v1 entries, which Encode writes as zeros.
func FuzzDecode(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.bin")
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Decode(b)
		if err != nil {
			return
		}
		again, err := m.Encode()
		if err != nil {
			t.Fatalf("decoded %x but cannot encode it: %v", b, err)
		}
		if len(again) != len(b) {
			t.Fatalf("decoded %d bytes, encoded %d", len(b), len(again))
		}
		m2, err := Decode(again)
		if err != nil {
			t.Fatalf("re-encoded datagram does not decode: %v", err)
		}
		if diff := cmp.Diff(m, m2, addrCmp); diff != "" {
			t.Fatalf("decode(encode(m)) != m:\n%s", diff)
		}
	})
}
