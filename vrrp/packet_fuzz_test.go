package vrrp

import (
	"bytes"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// fuzzEnds are the (src, dst) pairs the fuzzer picks from: the ones the
// transport delivers, plus the malformed ones Parse must refuse calmly.
var fuzzEnds = [...][2]netip.Addr{
	{pktHost4, pktGroup4},
	{pktHost6, pktGroup6},
	{pktHost4, pktPeer4}, // unicast
	{netip.MustParseAddr("::ffff:192.0.2.10"), pktGroup4},
	{pktHost4, pktGroup6},
	{netip.Addr{}, pktGroup4},
}

// FuzzParse: Parse never panics, refuses with a zero advert and a reason
// it is documented to return, and when it accepts, Marshal of the result
// with the same src, dst and mode gives back the input bytes, except the
// reserved bits (RFC 5798 5.2.6) and so the checksum covering them.
//
// A random 16-bit checksum is almost never right, so with reseal set the
// target fixes the checksum first (with the test's independent helper) and
// the fuzzer reaches the checks behind it.
func FuzzParse(f *testing.F) {
	for _, tc := range goldenCases() {
		pkt := unhex(f, tc.hex)
		for ends := range fuzzEnds {
			f.Add(pkt, uint8(ends), tc.mode == ChecksumV2, false)
		}
		f.Add(pkt[:len(pkt)-1], uint8(0), false, true)
	}
	f.Add(unhex(f, `31 01 64 02  00 01 48 4d  c0 a8 00 01  c0 a8 00 02`), uint8(0), false, false)
	f.Add([]byte{0x31, 1, 100, 0, 0xf0, 0x64, 0, 0}, uint8(0), false, true)
	f.Add([]byte{}, uint8(0), false, false)

	parseReasons := map[DropReason]bool{
		DropTruncated: true, DropBadVersion: true, DropBadType: true, DropBadChecksum: true,
		DropBadFamily: true, DropAuthMismatch: true, DropIntervalMismatch: true,
	}

	f.Fuzz(func(t *testing.T, in []byte, ends uint8, compat, fix bool) {
		src, dst := fuzzEnds[int(ends)%len(fuzzEnds)][0], fuzzEnds[int(ends)%len(fuzzEnds)][1]
		mode := ChecksumRFC
		if compat {
			mode = ChecksumV2
		}
		if s, d := src.Unmap(), dst.Unmap(); fix && len(in) >= headerLen && s.IsValid() && s.Is4() == d.Is4() {
			in = reseal(in, s, d, mode)
		}

		a, reason := Parse(in, src, dst, mode)
		if reason != DropNone {
			if !parseReasons[reason] {
				t.Fatalf("Parse returned %v, which it does not document", reason)
			}
			if diff := cmp.Diff(Advert{}, a, advertOpts); diff != "" {
				t.Fatalf("dropped (%v) but advert not zero:\n%s", reason, diff)
			}
			return
		}

		// ParseInto over a dirty advert with spare capacity agrees.
		dirty := Advert{Version: 9, VRID: 9, AuthType: 9, Addresses: make([]netip.Addr, 300)}
		dirty.Addresses = dirty.Addresses[:3]
		if r := ParseInto(&dirty, in, src, dst, mode); r != DropNone {
			t.Fatalf("ParseInto dropped (%v) what Parse accepted", r)
		}
		if diff := cmp.Diff(a, dirty, advertOpts); diff != "" {
			t.Fatalf("ParseInto differs from Parse (-Parse +ParseInto):\n%s", diff)
		}

		out, err := a.Marshal(src, dst, mode)
		if err != nil {
			t.Fatalf("Parse accepted %x as %+v, which Marshal refuses: %v", in, a, err)
		}
		want := bytes.Clone(in)
		if in[0]>>4 == 3 && in[4]&0xf0 != 0 {
			want[4] &= 0x0f
			want[6], want[7] = out[6], out[7] // the checksum covered the reserved bits
		}
		if !bytes.Equal(out, want) {
			t.Fatalf("round trip changed the bytes:\n  in %x\n out %x", in, out)
		}
		again, r := Parse(out, src, dst, mode)
		if r != DropNone {
			t.Fatalf("Parse of our own Marshal dropped (%v)", r)
		}
		if diff := cmp.Diff(a, again, advertOpts); diff != "" {
			t.Fatalf("re-parse differs (-first +again):\n%s", diff)
		}

		// An advert always satisfies an instance configured exactly like it.
		self := Expect{Version: a.Version, Interval: a.Interval, Addresses: a.Addresses, AuthType: a.AuthType, AuthData: a.AuthData}
		if r := a.Check(255, self); r != DropNone {
			t.Fatalf("Check against its own fields: %v", r)
		}
	})
}
