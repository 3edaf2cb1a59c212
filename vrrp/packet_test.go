package vrrp

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"net/netip"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// The expected bytes below are written by hand from the RFC 5798 5.1 and
// RFC 3768 5.1 layouts. Their checksums were computed outside this package
// (a Python RFC 1071 sum) and are checked again by refChecksum, which shares
// no code with packet.go.

var (
	pktHost4  = netip.MustParseAddr("192.0.2.10")
	pktPeer4  = netip.MustParseAddr("192.0.2.11")
	pktGroup4 = netip.MustParseAddr("224.0.0.18") // RFC 5798 5.1.1.2
	pktHost6  = netip.MustParseAddr("fe80::1")
	pktGroup6 = netip.MustParseAddr("ff02::12") // RFC 5798 5.1.2.2
	pktVIP1   = netip.MustParseAddr("192.0.2.50")
	pktVIP2   = netip.MustParseAddr("192.0.2.51")
	pktVIP3   = netip.MustParseAddr("192.0.2.52")
	pktVIP6LL = netip.MustParseAddr("fe80::50") // RFC 5798 5.2.9: the link-local address comes first
	pktVIP6   = netip.MustParseAddr("2001:db8::50")
)

var advertOpts = cmp.Options{
	cmp.Comparer(func(x, y netip.Addr) bool { return x == y }),
	cmpopts.EquateEmpty(),
}

// unhex decodes hex written with spaces and line breaks for readability.
func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.Join(strings.Fields(s), ""))
	if err != nil {
		t.Fatalf("bad hex in test: %v", err)
	}
	return b
}

// refChecksum is an independent RFC 1071 checksum: the one's complement of
// the one's complement sum of pseudo followed by msg, msg's checksum field
// (bytes 6-7) taken as zero.
func refChecksum(pseudo, msg []byte) uint16 {
	buf := append(append([]byte{}, pseudo...), msg...)
	buf[len(pseudo)+6], buf[len(pseudo)+7] = 0, 0
	if len(buf)%2 == 1 {
		buf = append(buf, 0)
	}
	var sum uint32
	for i := 0; i < len(buf); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(buf[i:]))
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

// pseudo4 is the IPv4 pseudo-header of RFC 5798 5.2.8 (as for TCP/UDP):
// source, destination, zero, protocol 112, VRRP length.
func pseudo4(src, dst netip.Addr, n int) []byte {
	s, d := src.As4(), dst.As4()
	p := append(append([]byte{}, s[:]...), d[:]...)
	return append(p, 0, 112, byte(n>>8), byte(n))
}

// pseudo6 is the IPv6 pseudo-header of RFC 8200 8.1: source, destination,
// 32-bit upper-layer length, three zero bytes, next header 112.
func pseudo6(src, dst netip.Addr, n int) []byte {
	s, d := src.As16(), dst.As16()
	p := append(append([]byte{}, s[:]...), d[:]...)
	return append(p, byte(n>>24), byte(n>>16), byte(n>>8), byte(n), 0, 0, 0, 112)
}

// refPseudo returns the pseudo-header the RFCs require for pkt, or nil.
func refPseudo(pkt []byte, src, dst netip.Addr, mode ChecksumMode) []byte {
	switch {
	case src.Is6():
		return pseudo6(src, dst, len(pkt))
	case len(pkt) > 0 && pkt[0]>>4 == 3 && mode == ChecksumRFC:
		return pseudo4(src, dst, len(pkt))
	}
	return nil
}

// reseal returns a copy of pkt with a correct checksum, so a test can reach
// the checks that come after the checksum.
func reseal(pkt []byte, src, dst netip.Addr, mode ChecksumMode) []byte {
	out := bytes.Clone(pkt)
	binary.BigEndian.PutUint16(out[6:], refChecksum(refPseudo(out, src, dst, mode), out))
	return out
}

type goldenCase struct {
	name     string
	hex      string
	src, dst netip.Addr
	mode     ChecksumMode
	advert   Advert
}

func goldenCases() []goldenCase {
	return []goldenCase{
		{
			name: "RFC 5798 5.1.1 and 5.2.8 v3 IPv4 with pseudo-header",
			// ver 3|type 1, VRID 51, prio 100, count 2 | rsvd 0, Max Adver Int 100cs, checksum
			// | 192.0.2.50 | 192.0.2.51
			hex: `31 33 64 02   00 64 43 62
			      c0 00 02 32
			      c0 00 02 33`,
			src: pktHost4, dst: pktGroup4, mode: ChecksumRFC,
			advert: Advert{Version: 3, VRID: 51, Priority: 100, Interval: time.Second, Addresses: []netip.Addr{pktVIP1, pktVIP2}},
		},
		{
			name: "RFC 5798 5.2.8 v3 IPv4 checksum_compat v2 without pseudo-header",
			hex: `31 33 64 02   00 64 e5 ff
			      c0 00 02 32
			      c0 00 02 33`,
			src: pktHost4, dst: pktGroup4, mode: ChecksumV2,
			advert: Advert{Version: 3, VRID: 51, Priority: 100, Interval: time.Second, Addresses: []netip.Addr{pktVIP1, pktVIP2}},
		},
		{
			name: "RFC 5798 5.1.2 and 5.2.8 v3 IPv6 with RFC 8200 8.1 pseudo-header",
			// ver 3|type 1, VRID 51, prio 200, count 2 | rsvd 0, 25cs, checksum
			// | fe80::50 | 2001:db8::50
			hex: `31 33 c8 02   00 19 db a7
			      fe 80 00 00 00 00 00 00 00 00 00 00 00 00 00 50
			      20 01 0d b8 00 00 00 00 00 00 00 00 00 00 00 50`,
			src: pktHost6, dst: pktGroup6, mode: ChecksumRFC,
			advert: Advert{Version: 3, VRID: 51, Priority: 200, Interval: 250 * time.Millisecond, Addresses: []netip.Addr{pktVIP6LL, pktVIP6}},
		},
		{
			name: "RFC 3768 5.1 v2 auth type 0 checksum over the VRRP message only",
			// ver 2|type 1, VRID 1, prio 255, count 1 | auth 0, Adver Int 1s, checksum
			// | 192.0.2.50 | auth data (8 bytes, zero)
			hex: `21 01 ff 01   00 01 1d c9
			      c0 00 02 32
			      00 00 00 00 00 00 00 00`,
			src: pktHost4, dst: pktGroup4, mode: ChecksumRFC,
			advert: Advert{Version: 2, VRID: 1, Priority: 255, Interval: time.Second, Addresses: []netip.Addr{pktVIP1}},
		},
		{
			name: "RFC 2338 5.3.6 v2 simple text password s3cret",
			// ver 2|type 1, VRID 7, prio 150, count 2 | auth 1, Adver Int 3s, checksum
			// | 192.0.2.50 | 192.0.2.51 | "s3cret\0\0"
			hex: `21 07 96 02   01 03 87 72
			      c0 00 02 32
			      c0 00 02 33
			      73 33 63 72 65 74 00 00`,
			src: pktHost4, dst: pktGroup4, mode: ChecksumRFC,
			advert: Advert{Version: 2, VRID: 7, Priority: 150, Interval: 3 * time.Second, Addresses: []netip.Addr{pktVIP1, pktVIP2},
				AuthType: AuthSimpleText, AuthData: PassAuth("s3cret")},
		},
	}
}

func TestAdvertGolden(t *testing.T) {
	for _, tc := range goldenCases() {
		t.Run(tc.name, func(t *testing.T) {
			want := unhex(t, tc.hex)

			// The hand-written checksum agrees with the independent helper.
			if got, lit := refChecksum(refPseudo(want, tc.src, tc.dst, tc.mode), want), binary.BigEndian.Uint16(want[6:]); got != lit {
				t.Fatalf("golden checksum %#04x, independent helper says %#04x", lit, got)
			}

			got, err := tc.advert.Marshal(tc.src, tc.dst, tc.mode)
			if err != nil {
				t.Fatalf("Marshal: %v", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("Marshal:\n got %x\nwant %x", got, want)
			}

			a, reason := Parse(want, tc.src, tc.dst, tc.mode)
			if reason != DropNone {
				t.Fatalf("Parse: dropped (%v)", reason)
			}
			if diff := cmp.Diff(tc.advert, a, advertOpts); diff != "" {
				t.Errorf("Parse (-want +got):\n%s", diff)
			}
		})
	}
}

// TestAdvertInterop checks the codec against bytes produced elsewhere and
// against how keepalived (keepalived/vrrp/vrrp.c) computes its checksums.
func TestAdvertInterop(t *testing.T) {
	t.Run("RFC 3768 5.3.8 tcpdump capture of a VRRPv2 advert has no pseudo-header", func(t *testing.T) {
		// "IP 192.168.0.30 > 224.0.0.18: VRRPv2, Advertisement, vrid 1,
		// prio 100, authtype none, intvl 1s, length 20", as published in
		// gopacket's layers/vrrp_test.go.
		pkt := unhex(t, `21 01 64 01  00 01 ba 52  c0 a8 00 01  00 00 00 00 00 00 00 00`)
		src, dst := netip.MustParseAddr("192.168.0.30"), pktGroup4
		if got := refChecksum(nil, pkt); got != 0xba52 {
			t.Fatalf("capture checksum without pseudo-header = %#04x, want 0xba52", got)
		}
		if got := refChecksum(pseudo4(src, dst, len(pkt)), pkt); got == 0xba52 {
			t.Fatalf("capture checksum also matches with a pseudo-header; the test cannot tell them apart")
		}
		a, reason := Parse(pkt, src, dst, ChecksumRFC)
		want := Advert{Version: 2, VRID: 1, Priority: 100, Interval: time.Second, Addresses: []netip.Addr{netip.MustParseAddr("192.168.0.1")}}
		if reason != DropNone {
			t.Fatalf("Parse: dropped (%v)", reason)
		}
		if diff := cmp.Diff(want, a, advertOpts); diff != "" {
			t.Errorf("Parse (-want +got):\n%s", diff)
		}
	})

	// PcapPlusPlus's VRRP test packets (Tests/Packet++Test/PacketExamples),
	// checksummed by another implementation.
	t.Run("RFC 5798 5.2.8 PcapPlusPlus VRRPv3 IPv4 uses the pseudo-header", func(t *testing.T) {
		pkt := unhex(t, `31 01 64 02  00 01 48 4d  c0 a8 00 01  c0 a8 00 02`)
		src := netip.MustParseAddr("192.168.0.30")
		if _, r := Parse(pkt, src, pktGroup4, ChecksumRFC); r != DropNone {
			t.Errorf("Parse with ChecksumRFC: dropped (%v)", r)
		}
		if _, r := Parse(pkt, src, pktGroup4, ChecksumV2); r != DropBadChecksum {
			t.Errorf("Parse with ChecksumV2: %v, want bad_checksum", r)
		}
	})
	t.Run("RFC 5798 5.2.8 PcapPlusPlus VRRPv3 IPv6 uses the RFC 8200 pseudo-header", func(t *testing.T) {
		pkt := unhex(t, `31 01 64 03  00 01 10 71
			fe 80 00 00 00 00 00 00 00 00 00 00 00 00 02 54
			20 01 0d b8 00 00 00 00 00 00 00 00 00 00 00 01
			20 01 0d b8 00 00 00 00 00 00 00 00 00 00 00 02`)
		a, r := Parse(pkt, pktHost6, pktGroup6, ChecksumRFC)
		if r != DropNone {
			t.Fatalf("Parse: dropped (%v)", r)
		}
		if a.Interval != 10*time.Millisecond || len(a.Addresses) != 3 {
			t.Errorf("Parse: %+v, want 10ms and 3 addresses", a)
		}
	})
	t.Run("RFC 3768 5.1 PcapPlusPlus VRRPv2 without Authentication Data is truncated", func(t *testing.T) {
		// Count 3 and no 8-byte auth data: RFC 3768 always carries it.
		pkt := unhex(t, `21 01 64 03  00 01 38 fa  c0 a8 00 01  c0 a8 00 02  c0 a8 00 03`)
		if _, r := Parse(pkt, netip.MustParseAddr("192.168.0.30"), pktGroup4, ChecksumRFC); r != DropTruncated {
			t.Errorf("Parse: %v, want truncated", r)
		}
	})

	t.Run("keepalived VRRPv2: checksum over header, addresses and auth data only", func(t *testing.T) {
		// vrrp_build_vrrp_v2: in_csum(hd, vrrp_pkt_len(vrrp)), no pseudo-header,
		// so the bytes do not depend on the IP addresses.
		a := Advert{Version: 2, VRID: 51, Priority: 100, Interval: time.Second, Addresses: []netip.Addr{pktVIP1},
			AuthType: AuthSimpleText, AuthData: PassAuth("secret")}
		b1, err1 := a.Marshal(pktHost4, pktGroup4, ChecksumRFC)
		b2, err2 := a.Marshal(pktPeer4, netip.MustParseAddr("192.0.2.99"), ChecksumRFC)
		if err1 != nil || err2 != nil {
			t.Fatalf("Marshal: %v, %v", err1, err2)
		}
		if got, want := binary.BigEndian.Uint16(b1[6:]), refChecksum(nil, b1); got != want {
			t.Errorf("checksum %#04x, keepalived computes %#04x", got, want)
		}
		if !bytes.Equal(b1, b2) {
			t.Errorf("VRRPv2 bytes depend on the IP addresses:\n%x\n%x", b1, b2)
		}
	})
	t.Run("keepalived VRRPv3 IPv4: checksum with pseudo-header of source and 224.0.0.18", func(t *testing.T) {
		// vrrp_build_vrrp_v3: ipv4_phdr {src, vrrp_mcast_group4, 0, IPPROTO_VRRP, len}.
		a := Advert{Version: 3, VRID: 51, Priority: 100, Interval: time.Second, Addresses: []netip.Addr{pktVIP1}}
		b, err := a.Marshal(pktHost4, pktGroup4, ChecksumRFC)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := binary.BigEndian.Uint16(b[6:]), refChecksum(pseudo4(pktHost4, pktGroup4, len(b)), b); got != want {
			t.Errorf("checksum %#04x, keepalived computes %#04x", got, want)
		}
	})
	t.Run("keepalived old_unicast_checksum: VRRPv3 unicast summed with 224.0.0.18", func(t *testing.T) {
		// Older keepalived kept the multicast group in the pseudo-header of
		// unicast adverts. Such an advert verifies only if the caller passes
		// 224.0.0.18 as dst, not the unicast destination it arrived on.
		a := Advert{Version: 3, VRID: 51, Priority: 100, Interval: time.Second, Addresses: []netip.Addr{pktVIP1}}
		b, err := a.Marshal(pktPeer4, pktGroup4, ChecksumRFC)
		if err != nil {
			t.Fatal(err)
		}
		if _, r := Parse(b, pktPeer4, pktHost4, ChecksumRFC); r != DropBadChecksum {
			t.Errorf("Parse with the unicast dst: %v, want bad_checksum", r)
		}
		if _, r := Parse(b, pktPeer4, pktGroup4, ChecksumRFC); r != DropNone {
			t.Errorf("Parse with dst 224.0.0.18: dropped (%v)", r)
		}
	})
}

func TestAdvertRoundTrip(t *testing.T) {
	many := func(n int, v6 bool) []netip.Addr {
		out := make([]netip.Addr, n)
		for i := range out {
			if v6 {
				out[i] = netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 14: byte(i >> 8), 15: byte(i)})
			} else {
				out[i] = netip.AddrFrom4([4]byte{198, 51, byte(i >> 8), byte(i)})
			}
		}
		return out
	}
	mapped := netip.MustParseAddr("::ffff:192.0.2.10")
	tests := []struct {
		name     string
		src, dst netip.Addr
		mode     ChecksumMode
		a        Advert
	}{
		{"RFC 5798 5.2.7 v3 minimum interval 10ms", pktHost4, pktGroup4, ChecksumRFC,
			Advert{Version: 3, VRID: 1, Priority: 100, Interval: 10 * time.Millisecond, Addresses: []netip.Addr{pktVIP1}}},
		{"RFC 5798 5.2.7 v3 maximum interval 40.95s", pktHost4, pktGroup4, ChecksumRFC,
			Advert{Version: 3, VRID: 255, Priority: 254, Interval: 40950 * time.Millisecond, Addresses: []netip.Addr{pktVIP1}}},
		{"RFC 5798 5.2.4 v3 priority 0 (master leaving)", pktHost4, pktGroup4, ChecksumRFC,
			Advert{Version: 3, VRID: 9, Priority: 0, Interval: time.Second, Addresses: []netip.Addr{pktVIP1, pktVIP2, pktVIP3}}},
		{"RFC 5798 5.2.4 v3 priority 255 (address owner)", pktHost4, pktGroup4, ChecksumV2,
			Advert{Version: 3, VRID: 9, Priority: 255, Interval: 3 * time.Second, Addresses: []netip.Addr{pktVIP1}}},
		{"RFC 5798 5.2.5 v3 IPv4 255 addresses", pktHost4, pktGroup4, ChecksumRFC,
			Advert{Version: 3, VRID: 2, Priority: 100, Interval: time.Second, Addresses: many(255, false)}},
		{"RFC 5798 5.2.5 v3 IPv6 255 addresses", pktHost6, pktGroup6, ChecksumRFC,
			Advert{Version: 3, VRID: 2, Priority: 100, Interval: time.Second, Addresses: many(255, true)}},
		{"RFC 5798 5.2.5 v3 no addresses (keepalived allows it)", pktHost4, pktGroup4, ChecksumRFC,
			Advert{Version: 3, VRID: 3, Priority: 100, Interval: time.Second}},
		{"RFC 5798 5.2.8 v3 IPv6 ChecksumV2 changes nothing", pktHost6, pktGroup6, ChecksumV2,
			Advert{Version: 3, VRID: 4, Priority: 100, Interval: time.Second, Addresses: []netip.Addr{pktVIP6LL}}},
		{"RFC 5798 5.2.8 v3 IPv4 unicast", pktHost4, pktPeer4, ChecksumRFC,
			Advert{Version: 3, VRID: 5, Priority: 100, Interval: time.Second, Addresses: []netip.Addr{pktVIP1}}},
		{"RFC 5798 5.2.9 v3 IPv6 carrying a v4-mapped address", pktHost6, pktGroup6, ChecksumRFC,
			Advert{Version: 3, VRID: 6, Priority: 100, Interval: time.Second, Addresses: []netip.Addr{pktVIP6LL, mapped}}},
		{"RFC 5798 5.2.8 v4-mapped source is IPv4", mapped, pktGroup4, ChecksumRFC,
			Advert{Version: 3, VRID: 7, Priority: 100, Interval: time.Second, Addresses: []netip.Addr{pktVIP1}}},
		{"RFC 3768 5.3.7 v2 interval 255s", pktHost4, pktGroup4, ChecksumRFC,
			Advert{Version: 2, VRID: 8, Priority: 100, Interval: 255 * time.Second, Addresses: []netip.Addr{pktVIP1}}},
		{"RFC 3768 5.3.10 v2 auth type 0 carries auth data as given", pktHost4, pktGroup4, ChecksumRFC,
			Advert{Version: 2, VRID: 8, Priority: 100, Interval: time.Second, Addresses: []netip.Addr{pktVIP1}, AuthData: [8]byte{1, 2, 3}}},
		{"RFC 2338 5.3.6 v2 8-byte password", pktHost4, pktGroup4, ChecksumRFC,
			Advert{Version: 2, VRID: 8, Priority: 1, Interval: time.Second, Addresses: many(255, false),
				AuthType: AuthSimpleText, AuthData: PassAuth("12345678")}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, err := tc.a.Marshal(tc.src, tc.dst, tc.mode)
			if err != nil {
				t.Fatalf("Marshal: %v", err)
			}
			got, reason := Parse(b, tc.src, tc.dst, tc.mode)
			if reason != DropNone {
				t.Fatalf("Parse: dropped (%v)", reason)
			}
			if diff := cmp.Diff(tc.a, got, advertOpts); diff != "" {
				t.Errorf("round trip (-marshalled +parsed):\n%s", diff)
			}
			// AppendMarshal keeps what was in the buffer.
			prefix := []byte("prefix")
			ab, err := tc.a.AppendMarshal(bytes.Clone(prefix), tc.src, tc.dst, tc.mode)
			if err != nil || !bytes.Equal(ab, append(prefix, b...)) {
				t.Errorf("AppendMarshal = %x, %v; want prefix then %x", ab, err, b)
			}
		})
	}
}

func TestAdvertMarshalErrors(t *testing.T) {
	ok := Advert{Version: 3, VRID: 1, Priority: 100, Interval: time.Second, Addresses: []netip.Addr{pktVIP1}}
	with := func(f func(*Advert)) Advert { a := ok; f(&a); return a }
	v2 := func(f func(*Advert)) Advert {
		return with(func(a *Advert) { a.Version = 2; f(a) })
	}
	tooMany := make([]netip.Addr, 256)
	for i := range tooMany {
		tooMany[i] = pktVIP1
	}
	tests := []struct {
		name     string
		a        Advert
		src, dst netip.Addr
		mode     ChecksumMode
		want     error
	}{
		{"RFC 5798 5.2.1 version 1", with(func(a *Advert) { a.Version = 1 }), pktHost4, pktGroup4, ChecksumRFC, ErrVersion},
		{"RFC 5798 5.2.1 version 4", with(func(a *Advert) { a.Version = 4 }), pktHost4, pktGroup4, ChecksumRFC, ErrVersion},
		{"RFC 3768 1 VRRPv2 over IPv6", v2(func(a *Advert) { a.Addresses = []netip.Addr{pktVIP6} }), pktHost6, pktGroup6, ChecksumRFC, ErrFamily},
		{"RFC 5798 5.2.5 256 addresses", with(func(a *Advert) { a.Addresses = tooMany }), pktHost4, pktGroup4, ChecksumRFC, ErrAddressCount},
		{"RFC 5798 5.2.9 mixed families", with(func(a *Advert) { a.Addresses = []netip.Addr{pktVIP1, pktVIP6} }), pktHost4, pktGroup4, ChecksumRFC, ErrFamily},
		{"RFC 5798 5.2.9 IPv6 address from IPv4 source", with(func(a *Advert) { a.Addresses = []netip.Addr{pktVIP6} }), pktHost4, pktGroup4, ChecksumRFC, ErrFamily},
		{"RFC 5798 5.2.9 IPv4 address from IPv6 source", ok, pktHost6, pktGroup6, ChecksumRFC, ErrFamily},
		{"RFC 5798 5.2.9 zero address", with(func(a *Advert) { a.Addresses = []netip.Addr{{}} }), pktHost4, pktGroup4, ChecksumRFC, ErrFamily},
		{"RFC 5798 5.2.8 source and destination of different families", ok, pktHost4, pktGroup6, ChecksumRFC, ErrFamily},
		{"RFC 5798 5.2.8 no source", ok, netip.Addr{}, pktGroup4, ChecksumRFC, ErrFamily},
		{"RFC 5798 5.2.7 v3 interval 15ms", with(func(a *Advert) { a.Interval = 15 * time.Millisecond }), pktHost4, pktGroup4, ChecksumRFC, ErrInterval},
		{"RFC 5798 5.2.7 v3 interval 5ms", with(func(a *Advert) { a.Interval = 5 * time.Millisecond }), pktHost4, pktGroup4, ChecksumRFC, ErrInterval},
		{"RFC 5798 5.2.7 v3 interval 0", with(func(a *Advert) { a.Interval = 0 }), pktHost4, pktGroup4, ChecksumRFC, ErrInterval},
		{"RFC 5798 5.2.7 v3 interval 40.96s", with(func(a *Advert) { a.Interval = 40960 * time.Millisecond }), pktHost4, pktGroup4, ChecksumRFC, ErrInterval},
		{"RFC 3768 5.3.7 v2 interval 1.5s", v2(func(a *Advert) { a.Interval = 1500 * time.Millisecond }), pktHost4, pktGroup4, ChecksumRFC, ErrInterval},
		{"RFC 3768 5.3.7 v2 interval 0", v2(func(a *Advert) { a.Interval = 0 }), pktHost4, pktGroup4, ChecksumRFC, ErrInterval},
		{"RFC 3768 5.3.7 v2 interval 256s", v2(func(a *Advert) { a.Interval = 256 * time.Second }), pktHost4, pktGroup4, ChecksumRFC, ErrInterval},
		{"RFC 3768 5.3.6 v2 auth type 2 (IP AH, withdrawn)", v2(func(a *Advert) { a.AuthType = 2 }), pktHost4, pktGroup4, ChecksumRFC, ErrAuth},
		{"RFC 5798 9 v3 has no authentication", with(func(a *Advert) { a.AuthType = AuthSimpleText; a.AuthData = PassAuth("x") }), pktHost4, pktGroup4, ChecksumRFC, ErrAuth},
		{"RFC 5798 5.2.8 unknown checksum mode", ok, pktHost4, pktGroup4, ChecksumMode(7), ErrChecksumMode},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			buf := []byte("keep")
			b, err := tc.a.AppendMarshal(buf, tc.src, tc.dst, tc.mode)
			if !errors.Is(err, tc.want) {
				t.Fatalf("AppendMarshal error = %v, want %v", err, tc.want)
			}
			if !strings.HasPrefix(err.Error(), "marshal VRRPv") {
				t.Errorf("error %q does not say what was being done", err)
			}
			if string(b) != "keep" {
				t.Errorf("buffer changed on error: %q", b)
			}
			if _, err := tc.a.Marshal(tc.src, tc.dst, tc.mode); !errors.Is(err, tc.want) {
				t.Errorf("Marshal error = %v, want %v", err, tc.want)
			}
		})
	}
}

type parseCase struct {
	name     string
	pkt      []byte
	src, dst netip.Addr
	mode     ChecksumMode
	want     DropReason
}

// parseDropCases are packets Parse must refuse, one group per reason.
func parseDropCases(t testing.TB) []parseCase {
	g := goldenCases()
	v3, compat, v6, v2, v2pass := unhex(t, g[0].hex), unhex(t, g[1].hex), unhex(t, g[2].hex), unhex(t, g[3].hex), unhex(t, g[4].hex)
	mut := func(pkt []byte, f func([]byte)) []byte { p := bytes.Clone(pkt); f(p); return p }
	v4 := func(name string, pkt []byte, want DropReason) parseCase {
		return parseCase{name, pkt, pktHost4, pktGroup4, ChecksumRFC, want}
	}
	sealed := func(pkt []byte, f func([]byte)) []byte {
		return reseal(mut(pkt, f), pktHost4, pktGroup4, ChecksumRFC)
	}
	return []parseCase{
		// RFC 5798 7.1 / RFC 3768 7.1: MUST verify the packet contains the
		// complete VRRP packet; cut it at every field boundary.
		v4("RFC 5798 7.1 empty", nil, DropTruncated),
		v4("RFC 5798 7.1 one byte", v3[:1], DropTruncated),
		v4("RFC 5798 7.1 header cut before checksum", v3[:6], DropTruncated),
		v4("RFC 5798 7.1 header one byte short", v3[:7], DropTruncated),
		v4("RFC 5798 7.1 header without addresses", v3[:8], DropTruncated),
		v4("RFC 5798 7.1 second address missing", v3[:12], DropTruncated),
		v4("RFC 5798 7.1 last address one byte short", v3[:15], DropTruncated),
		v4("RFC 5798 7.1 trailing byte", append(bytes.Clone(v3), 0), DropTruncated),
		v4("RFC 5798 7.1 trailing address", append(bytes.Clone(v3), 192, 0, 2, 52), DropTruncated),
		{"RFC 5798 7.1 IPv6 address one byte short", v6[:len(v6)-1], pktHost6, pktGroup6, ChecksumRFC, DropTruncated},
		{"RFC 5798 7.1 IPv6 counted as IPv4 (4-byte addresses)", v6[:16], pktHost6, pktGroup6, ChecksumRFC, DropTruncated},
		v4("RFC 3768 7.1 v2 without auth data", v2[:12], DropTruncated),
		v4("RFC 3768 7.1 v2 auth data one byte short", v2[:19], DropTruncated),
		v4("RFC 3768 7.1 v2 password cut", v2pass[:20], DropTruncated),

		// RFC 5798 7.1: MUST verify the VRRP version.
		v4("RFC 5798 7.1 version 0", mut(v3, func(p []byte) { p[0] = 0x01 }), DropBadVersion),
		v4("RFC 5798 7.1 version 1", mut(v3, func(p []byte) { p[0] = 0x11 }), DropBadVersion),
		v4("RFC 5798 7.1 version 4", mut(v3, func(p []byte) { p[0] = 0x41 }), DropBadVersion),
		v4("RFC 5798 7.1 version 15", mut(v3, func(p []byte) { p[0] = 0xf1 }), DropBadVersion),

		// RFC 5798 5.2.2: the only type is ADVERTISEMENT (1).
		v4("RFC 5798 5.2.2 type 0", mut(v3, func(p []byte) { p[0] = 0x30 }), DropBadType),
		v4("RFC 5798 5.2.2 type 2", mut(v3, func(p []byte) { p[0] = 0x32 }), DropBadType),
		v4("RFC 3768 5.3.2 v2 type 15", mut(v2, func(p []byte) { p[0] = 0x2f }), DropBadType),

		// RFC 5798 7.1: MUST verify the VRRP checksum.
		v4("RFC 5798 7.1 flipped checksum bit", mut(v3, func(p []byte) { p[7] ^= 0x01 }), DropBadChecksum),
		v4("RFC 5798 7.1 flipped priority bit", mut(v3, func(p []byte) { p[2] ^= 0x80 }), DropBadChecksum),
		v4("RFC 5798 7.1 flipped address bit", mut(v3, func(p []byte) { p[15] ^= 0x01 }), DropBadChecksum),
		v4("RFC 3768 7.1 flipped password bit", mut(v2pass, func(p []byte) { p[23] ^= 0x01 }), DropBadChecksum),
		{"RFC 5798 5.2.8 pseudo-header checksum read as checksum_compat v2", v3, pktHost4, pktGroup4, ChecksumV2, DropBadChecksum},
		{"RFC 5798 5.2.8 checksum_compat v2 read with pseudo-header", compat, pktHost4, pktGroup4, ChecksumRFC, DropBadChecksum},
		{"RFC 5798 5.2.8 pseudo-header with another source", v3, pktPeer4, pktGroup4, ChecksumRFC, DropBadChecksum},
		{"RFC 5798 5.2.8 IPv6 pseudo-header with another source", v6, netip.MustParseAddr("fe80::2"), pktGroup6, ChecksumRFC, DropBadChecksum},
		{"RFC 1071 negative zero 0xffff where 0x0000 is due", negativeZero(t), pktHost4, pktGroup4, ChecksumRFC, DropBadChecksum},

		// Family consistency that the packet and its addresses can tell.
		{"RFC 3768 1 v2 over IPv6", v2, pktHost6, pktGroup6, ChecksumRFC, DropBadFamily},
		{"RFC 5798 5.1 source IPv4 destination IPv6", v3, pktHost4, pktGroup6, ChecksumRFC, DropBadFamily},
		{"RFC 5798 5.1 no source address", v3, netip.Addr{}, pktGroup4, ChecksumRFC, DropBadFamily},

		// RFC 3768 5.3.6: unknown auth type MUST be discarded.
		v4("RFC 3768 5.3.6 auth type 2 (IP AH)", sealed(v2, func(p []byte) { p[4] = 2 }), DropAuthMismatch),
		v4("RFC 3768 5.3.6 auth type 255", sealed(v2, func(p []byte) { p[4] = 255 }), DropAuthMismatch),

		// A zero interval cannot match any instance and would make a
		// backup's Master_Down_Interval zero.
		v4("RFC 5798 6.1 v3 Max Adver Int 0", sealed(v3, func(p []byte) { p[4], p[5] = 0, 0 }), DropIntervalMismatch),
		v4("RFC 5798 5.2.6 v3 Max Adver Int 0 with reserved bits set", sealed(v3, func(p []byte) { p[4], p[5] = 0xf0, 0 }), DropIntervalMismatch),
		v4("RFC 3768 5.3.7 v2 Adver Int 0", sealed(v2, func(p []byte) { p[5] = 0 }), DropIntervalMismatch),
	}
}

// negativeZero returns a v3 advert whose correct checksum is 0x0000, with
// 0xffff written instead. Summing over it gives 0xffff, so an RFC 1071
// verify-by-sum would take it.
func negativeZero(t testing.TB) []byte {
	for vrid := 0; vrid < 256; vrid++ {
		for prio := 0; prio < 256; prio++ {
			p := []byte{0x31, byte(vrid), byte(prio), 1, 0x00, 0x64, 0, 0, 192, 0, 2, 50}
			if refChecksum(pseudo4(pktHost4, pktGroup4, len(p)), p) == 0 {
				p[6], p[7] = 0xff, 0xff
				return p
			}
		}
	}
	t.Fatal("no advert with checksum 0x0000 found")
	return nil
}

func TestPacketParseDrops(t *testing.T) {
	for _, tc := range parseDropCases(t) {
		t.Run(tc.name, func(t *testing.T) {
			a, got := Parse(tc.pkt, tc.src, tc.dst, tc.mode)
			if got != tc.want {
				t.Errorf("Parse = %v, want %v", got, tc.want)
			}
			if diff := cmp.Diff(Advert{}, a, advertOpts); diff != "" {
				t.Errorf("dropped advert not zero (-want +got):\n%s", diff)
			}
		})
	}
}

func TestPacketParseAccepts(t *testing.T) {
	g := goldenCases()
	v3 := unhex(t, g[0].hex)
	v2 := unhex(t, g[3].hex)
	tests := []struct {
		name string
		pkt  []byte
		mode ChecksumMode
		want Advert
	}{
		{
			"RFC 5798 5.2.6 reserved bits ignored on receipt, interval kept",
			reseal(append([]byte{0x31, 51, 100, 2, 0xf0 | 0x00, 0x64, 0, 0}, v3[8:]...), pktHost4, pktGroup4, ChecksumRFC), ChecksumRFC,
			Advert{Version: 3, VRID: 51, Priority: 100, Interval: time.Second, Addresses: []netip.Addr{pktVIP1, pktVIP2}},
		},
		{
			"RFC 5798 5.2.7 Max Adver Int 4095cs",
			reseal(append([]byte{0x31, 51, 100, 2, 0x0f, 0xff, 0, 0}, v3[8:]...), pktHost4, pktGroup4, ChecksumRFC), ChecksumRFC,
			Advert{Version: 3, VRID: 51, Priority: 100, Interval: 40950 * time.Millisecond, Addresses: []netip.Addr{pktVIP1, pktVIP2}},
		},
		{
			"RFC 3768 5.3.10 v2 auth type 0 with non-zero auth data kept as received",
			reseal(append(bytes.Clone(v2[:12]), 'j', 'u', 'n', 'k', 0, 0, 0, 0), pktHost4, pktGroup4, ChecksumRFC), ChecksumRFC,
			Advert{Version: 2, VRID: 1, Priority: 255, Interval: time.Second, Addresses: []netip.Addr{pktVIP1}, AuthData: [8]byte{'j', 'u', 'n', 'k'}},
		},
		{
			"RFC 5798 5.2.5 count 0",
			reseal([]byte{0x31, 51, 100, 0, 0x00, 0x64, 0, 0}, pktHost4, pktGroup4, ChecksumRFC), ChecksumRFC,
			Advert{Version: 3, VRID: 51, Priority: 100, Interval: time.Second},
		},
		{
			"RFC 3768 5.3.8 v2 checksum ignores the mode",
			v2, ChecksumV2,
			Advert{Version: 2, VRID: 1, Priority: 255, Interval: time.Second, Addresses: []netip.Addr{pktVIP1}},
		},
		{
			"RFC 5798 5.2.8 an unknown mode parses as ChecksumRFC",
			v3, ChecksumMode(7),
			Advert{Version: 3, VRID: 51, Priority: 100, Interval: time.Second, Addresses: []netip.Addr{pktVIP1, pktVIP2}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a, r := Parse(tc.pkt, pktHost4, pktGroup4, tc.mode)
			if r != DropNone {
				t.Fatalf("Parse: dropped (%v)", r)
			}
			if diff := cmp.Diff(tc.want, a, advertOpts); diff != "" {
				t.Errorf("Parse (-want +got):\n%s", diff)
			}
		})
	}

	t.Run("RFC 5798 5.1.2 v4-mapped source parses as IPv4", func(t *testing.T) {
		if _, r := Parse(v3, netip.MustParseAddr("::ffff:192.0.2.10"), netip.MustParseAddr("::ffff:224.0.0.18"), ChecksumRFC); r != DropNone {
			t.Errorf("Parse: dropped (%v)", r)
		}
	})
}

func TestAdvertParseIntoReusesAddresses(t *testing.T) {
	g := goldenCases()
	v3, v6 := unhex(t, g[0].hex), unhex(t, g[2].hex)
	a := Advert{Addresses: make([]netip.Addr, 0, 4)}
	backing := &a.Addresses[:1][0]
	if r := ParseInto(&a, v3, pktHost4, pktGroup4, ChecksumRFC); r != DropNone {
		t.Fatalf("ParseInto: dropped (%v)", r)
	}
	if &a.Addresses[0] != backing {
		t.Errorf("ParseInto allocated a new address slice despite capacity")
	}
	// A drop zeroes the advert but keeps the backing array.
	if r := ParseInto(&a, v3[:9], pktHost4, pktGroup4, ChecksumRFC); r != DropTruncated {
		t.Fatalf("ParseInto = %v, want truncated", r)
	}
	if a.Version != 0 || len(a.Addresses) != 0 || cap(a.Addresses) != 4 {
		t.Errorf("after a drop: %+v (cap %d), want zero with cap 4", a, cap(a.Addresses))
	}
	// A shorter list after a longer one leaves no stale addresses.
	if r := ParseInto(&a, v6, pktHost6, pktGroup6, ChecksumRFC); r != DropNone {
		t.Fatalf("ParseInto: dropped (%v)", r)
	}
	if diff := cmp.Diff(g[2].advert, a, advertOpts); diff != "" {
		t.Errorf("ParseInto (-want +got):\n%s", diff)
	}
}

type checkCase struct {
	name string
	a    Advert
	ttl  int
	e    Expect
	want DropReason
}

func checkCases() []checkCase {
	v3 := Advert{Version: 3, VRID: 51, Priority: 100, Interval: time.Second, Addresses: []netip.Addr{pktVIP1, pktVIP2}}
	e3 := Expect{Version: 3, Interval: time.Second, Addresses: []netip.Addr{pktVIP1, pktVIP2}}
	pass := PassAuth("s3cret")
	v2 := Advert{Version: 2, VRID: 7, Priority: 150, Interval: 3 * time.Second, Addresses: []netip.Addr{pktVIP1}, AuthType: AuthSimpleText, AuthData: pass}
	e2 := Expect{Version: 2, Interval: 3 * time.Second, Addresses: []netip.Addr{pktVIP1}, AuthType: AuthSimpleText, AuthData: pass}
	v6 := Advert{Version: 3, VRID: 51, Priority: 100, Interval: time.Second, Addresses: []netip.Addr{pktVIP6LL, pktVIP6}}
	e6 := Expect{Version: 3, Interval: time.Second, Addresses: []netip.Addr{pktVIP6LL, pktVIP6}}
	withE := func(e Expect, f func(*Expect)) Expect { f(&e); return e }
	withA := func(a Advert, f func(*Advert)) Advert { f(&a); return a }
	return []checkCase{
		{"RFC 5798 7.1 v3 accepted", v3, 255, e3, DropNone},
		{"RFC 3768 7.1 v2 with password accepted", v2, 255, e2, DropNone},
		{"RFC 5798 7.1 IPv6 accepted", v6, 255, e6, DropNone},

		{"RFC 5798 7.1 TTL 254", v3, 254, e3, DropBadTTL},
		{"RFC 5798 7.1 TTL 0 (not reported)", v3, 0, e3, DropBadTTL},
		{"RFC 5798 7.1 IPv6 hop limit 254", v6, 254, e6, DropBadTTL},
		{"RFC 3768 7.1 v2 TTL 1", v2, 1, e2, DropBadTTL},
		{"RFC 5798 7.1 negative TTL is not checked", v3, -1, e3, DropNone},

		{"RFC 5798 7.1 v2 advert for a v3 instance", v2, 255, withE(e2, func(e *Expect) { e.Version = 3 }), DropBadVersion},
		{"RFC 3768 7.1 v3 advert for a v2 instance", v3, 255, withE(e3, func(e *Expect) { e.Version = 2 }), DropBadVersion},

		{"RFC 5798 7.1 address count differs", v3, 255, withE(e3, func(e *Expect) { e.Addresses = []netip.Addr{pktVIP1} }), DropAddressMismatch},
		{"RFC 5798 7.1 address count differs (more expected)", v3, 255, withE(e3, func(e *Expect) { e.Addresses = []netip.Addr{pktVIP1, pktVIP2, pktVIP3} }), DropAddressMismatch},
		{"RFC 5798 7.1 address list differs", v3, 255, withE(e3, func(e *Expect) { e.Addresses = []netip.Addr{pktVIP1, pktVIP3} }), DropAddressMismatch},
		{"RFC 5798 7.1 address list differs by duplicates", withA(v3, func(a *Advert) { a.Addresses = []netip.Addr{pktVIP1, pktVIP1} }), 255, e3, DropAddressMismatch},
		{"RFC 5798 7.1 IPv6 address list differs", v6, 255, withE(e6, func(e *Expect) { e.Addresses = []netip.Addr{pktVIP6LL, netip.MustParseAddr("2001:db8::51")} }), DropAddressMismatch},
		{"RFC 5798 7.1 address order does not matter", v3, 255, withE(e3, func(e *Expect) { e.Addresses = []netip.Addr{pktVIP2, pktVIP1} }), DropNone},
		{"RFC 5798 7.1 zone of an expected address ignored", v6, 255, withE(e6, func(e *Expect) { e.Addresses = []netip.Addr{pktVIP6LL.WithZone("eth0"), pktVIP6} }), DropNone},
		{"RFC 5798 7.1 IPv4 advert for an IPv6 instance", v3, 255, withE(e3, func(e *Expect) { e.Addresses = []netip.Addr{pktVIP6LL, pktVIP6} }), DropBadFamily},

		{"RFC 3768 7.1 auth type differs", v2, 255, withE(e2, func(e *Expect) { e.AuthType = AuthNone; e.AuthData = [8]byte{} }), DropAuthMismatch},
		{"RFC 3768 7.1 auth type missing", withA(v2, func(a *Advert) { a.AuthType = AuthNone }), 255, e2, DropAuthMismatch},
		{"RFC 2338 5.3.6 password differs", v2, 255, withE(e2, func(e *Expect) { e.AuthData = PassAuth("s3cret!") }), DropAuthMismatch},
		{"RFC 2338 5.3.6 password differs in the last byte", withA(v2, func(a *Advert) { a.AuthData = PassAuth("12345678") }), 255,
			withE(e2, func(e *Expect) { e.AuthData = PassAuth("12345679") }), DropAuthMismatch},
		{"RFC 3768 5.3.10 auth data ignored with auth type 0", withA(v2, func(a *Advert) { a.AuthType = AuthNone; a.AuthData = PassAuth("junk") }), 255,
			withE(e2, func(e *Expect) { e.AuthType = AuthNone; e.AuthData = [8]byte{} }), DropNone},
		{"RFC 5798 9 v3 ignores configured authentication", v3, 255, withE(e3, func(e *Expect) { e.AuthType = AuthSimpleText; e.AuthData = pass }), DropNone},

		{"RFC 3768 7.1 v2 Adver Int differs", v2, 255, withE(e2, func(e *Expect) { e.Interval = time.Second }), DropIntervalMismatch},
		{"RFC 5798 6.4.2 v3 interval differs (backup learns it)", v3, 255, withE(e3, func(e *Expect) { e.Interval = 100 * time.Millisecond }), DropNone},
	}
}

func TestAdvertCheck(t *testing.T) {
	for _, tc := range checkCases() {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.a.Check(tc.ttl, tc.e); got != tc.want {
				t.Errorf("Check = %v, want %v", got, tc.want)
			}
		})
	}
}

// TestDropReasonsCovered keeps the tables honest: every reason Parse or
// Check can return appears in them. The other three are the caller's.
func TestDropReasonsCovered(t *testing.T) {
	seen := map[DropReason]bool{}
	for _, tc := range parseDropCases(t) {
		seen[tc.want] = true
	}
	for _, tc := range checkCases() {
		seen[tc.want] = true
	}
	callers := map[DropReason]bool{DropUnknownVRID: true, DropNotPeer: true, DropOwnAdvert: true}
	for _, r := range AllDropReasons() {
		if !seen[r] && !callers[r] {
			t.Errorf("no Parse or Check test case expects %v", r)
		}
	}
}

func TestDropReasonString(t *testing.T) {
	want := []string{"truncated", "bad_version", "bad_type", "bad_checksum", "bad_ttl", "unknown_vrid",
		"address_mismatch", "auth_mismatch", "interval_mismatch", "not_peer", "bad_family", "own_advert"}
	var got []string
	for _, r := range AllDropReasons() {
		got = append(got, r.String())
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("AllDropReasons names (-want +got):\n%s", diff)
	}
	if DropNone.String() != "none" {
		t.Errorf("DropNone = %q, want none", DropNone.String())
	}
	label := regexp.MustCompile(`^[a-z]+(_[a-z]+)*$`)
	for _, s := range got {
		if !label.MatchString(s) {
			t.Errorf("%q is not a snake_case metrics label", s)
		}
	}
	if s := DropReason(99).String(); s != "DropReason(99)" {
		t.Errorf("DropReason(99) = %q", s)
	}
	// A fresh slice each call, so a caller cannot corrupt the next one.
	AllDropReasons()[0] = DropNone
	if AllDropReasons()[0] != DropTruncated {
		t.Error("AllDropReasons shares its slice")
	}
}

func TestChecksumModeString(t *testing.T) {
	for m, want := range map[ChecksumMode]string{ChecksumRFC: "rfc", ChecksumV2: "v2", 5: "ChecksumMode(5)"} {
		if got := m.String(); got != want {
			t.Errorf("%d: %q, want %q", int(m), got, want)
		}
	}
}

func TestPacketPassAuth(t *testing.T) {
	tests := []struct {
		password string
		want     [8]byte
	}{
		{"s3cret", [8]byte{'s', '3', 'c', 'r', 'e', 't', 0, 0}},
		{"12345678", [8]byte{'1', '2', '3', '4', '5', '6', '7', '8'}},
		{"123456789", [8]byte{'1', '2', '3', '4', '5', '6', '7', '8'}}, // keepalived cuts to 8
		{"", [8]byte{}},
	}
	for _, tc := range tests {
		if got := PassAuth(tc.password); got != tc.want {
			t.Errorf("PassAuth(%q) = %q, want %q", tc.password, got, tc.want)
		}
	}
}

// TestAdvertZeroAllocs holds the send and receive paths to what the
// benchmarks show, so a regression fails go test, not only a benchmark run.
func TestAdvertZeroAllocs(t *testing.T) {
	if testing.CoverMode() != "" {
		t.Skip("coverage instrumentation changes allocation counts")
	}
	for _, tc := range goldenCases() {
		t.Run(tc.name, func(t *testing.T) {
			pkt := unhex(t, tc.hex)
			buf := make([]byte, 0, 64)
			if n := testing.AllocsPerRun(100, func() {
				buf, _ = tc.advert.AppendMarshal(buf[:0], tc.src, tc.dst, tc.mode)
			}); n != 0 {
				t.Errorf("AppendMarshal: %v allocs, want 0", n)
			}
			a := Advert{Addresses: make([]netip.Addr, 0, 8)}
			if n := testing.AllocsPerRun(100, func() {
				ParseInto(&a, pkt, tc.src, tc.dst, tc.mode)
			}); n != 0 {
				t.Errorf("ParseInto: %v allocs, want 0", n)
			}
			if n := testing.AllocsPerRun(100, func() {
				a.Check(255, Expect{Version: a.Version, Interval: a.Interval, Addresses: tc.advert.Addresses})
			}); n != 0 {
				t.Errorf("Check: %v allocs, want 0", n)
			}
			if n := testing.AllocsPerRun(100, func() {
				Parse(pkt, tc.src, tc.dst, tc.mode)
			}); n != 1 {
				t.Errorf("Parse: %v allocs, want 1 (the address slice)", n)
			}
			if n := testing.AllocsPerRun(100, func() {
				Parse(pkt[:len(pkt)-1], tc.src, tc.dst, tc.mode)
			}); n != 0 {
				t.Errorf("Parse of a dropped packet: %v allocs, want 0", n)
			}
		})
	}
}

func BenchmarkAdvertMarshal(b *testing.B) {
	for _, tc := range goldenCases() {
		b.Run(benchName(tc), func(b *testing.B) {
			buf := make([]byte, 0, 64)
			b.ReportAllocs()
			for b.Loop() {
				var err error
				if buf, err = tc.advert.AppendMarshal(buf[:0], tc.src, tc.dst, tc.mode); err != nil {
					b.Fatal(err)
				}
			}
			b.SetBytes(int64(len(buf)))
		})
	}
}

func BenchmarkAdvertParse(b *testing.B) {
	for _, tc := range goldenCases() {
		b.Run(benchName(tc), func(b *testing.B) {
			pkt := unhex(b, tc.hex)
			a := Advert{Addresses: make([]netip.Addr, 0, 8)}
			b.SetBytes(int64(len(pkt)))
			b.ReportAllocs()
			for b.Loop() {
				if r := ParseInto(&a, pkt, tc.src, tc.dst, tc.mode); r != DropNone {
					b.Fatal(r)
				}
			}
		})
	}
}

func benchName(tc goldenCase) string {
	switch {
	case tc.advert.Version == 2 && tc.advert.AuthType == AuthSimpleText:
		return "v2-pass"
	case tc.advert.Version == 2:
		return "v2"
	case tc.src.Is6():
		return "v3-IPv6"
	case tc.mode == ChecksumV2:
		return "v3-IPv4-compat"
	}
	return "v3-IPv4"
}
