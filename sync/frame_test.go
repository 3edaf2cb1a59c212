package sync

import (
	"bytes"
	"net/netip"
	"testing"
	"time"

	"github.com/directord/directord/ipvs"
	"github.com/google/go-cmp/cmp"
)

var testKey = []byte("0123456789abcdef0123456789abcdef")

// An authentic frame opens once; a replay, a forgery, a frame of an
// earlier epoch and a stale one are dropped, each for its own reason.
func TestFrameAuthenticationAndReplay(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	s := &sealer{key: testKey, epoch: 2}
	o := &opener{key: testKey}
	f1 := s.seal(frameData, []byte("one"), now)
	f2 := s.seal(frameData, []byte("two"), now)
	f3 := s.seal(frameData, []byte("three"), now)

	open := func(b []byte) DropReason {
		_, r := o.open(b, now)
		return r
	}
	got, r := o.open(f2, now)
	if r != "" || !bytes.Equal(got.payload, []byte("two")) || got.seq != 2 || got.typ != frameData {
		t.Fatalf("open(f2) = %+v, %q", got, r)
	}
	// Reordered, not replayed: f1 arrives after f2.
	if r := open(f1); r != "" {
		t.Errorf("f1 after f2: %q, want accepted", r)
	}
	for _, b := range [][]byte{f1, f2} {
		if r := open(b); r != DropReplayed {
			t.Errorf("replay: %q, want %q", r, DropReplayed)
		}
	}
	forged := bytes.Clone(f3)
	forged[frameHeaderLen] ^= 1
	if r := open(forged); r != DropForged {
		t.Errorf("flipped payload bit: %q, want %q", r, DropForged)
	}
	other := (&sealer{key: []byte("another key, same length........"), epoch: 2, seq: 10}).seal(frameData, []byte("x"), now)
	if r := open(other); r != DropForged {
		t.Errorf("other key: %q, want %q", r, DropForged)
	}
	if r := open(f3[:20]); r != DropShort {
		t.Errorf("truncated: %q, want %q", r, DropShort)
	}
	if r := open(f3); r != "" {
		t.Errorf("f3 after the forgeries: %q, want accepted", r)
	}
	// The peer restarts: a new epoch starts over at 1, the old epoch's
	// frames are replays from then on.
	s2 := &sealer{key: testKey, epoch: 3}
	if r := open(s2.seal(frameData, nil, now)); r != "" {
		t.Errorf("new epoch: %q, want accepted", r)
	}
	if r := open((&sealer{key: testKey, epoch: 2, seq: 100}).seal(frameData, nil, now)); r != DropReplayed {
		t.Errorf("old epoch: %q, want %q", r, DropReplayed)
	}
	stale := s2.seal(frameData, nil, now.Add(-2*maxFrameAge))
	if r := open(stale); r != DropStale {
		t.Errorf("stale: %q, want %q", r, DropStale)
	}
}

// The window remembers the last 64 sequence numbers; anything older is
// refused.
func TestFrameReplayWindow(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	s := &sealer{key: testKey, epoch: 1}
	o := &opener{key: testKey}
	var frames [][]byte
	for range 200 {
		frames = append(frames, s.seal(frameData, nil, now))
	}
	if _, r := o.open(frames[199], now); r != "" {
		t.Fatal(r)
	}
	for i, want := range map[int]DropReason{199 - 63: "", 199 - 64: DropReplayed, 10: DropReplayed, 198: ""} {
		if _, r := o.open(frames[i], now); r != want {
			t.Errorf("seq %d after 200: %q, want %q", i+1, r, want)
		}
	}
}

// The connection table becomes the entries the master daemon would send.
func TestTableConns(t *testing.T) {
	table := []ipvs.Connection{
		{Protocol: "TCP", Client: ap("192.0.2.100:40001"), Virtual: ap("192.0.2.50:80"), Dest: ap("192.0.2.21:80"), State: "ESTABLISHED", Expires: 899 * time.Second},
		{Protocol: "TCP", Client: ap("192.0.2.100:40002"), Virtual: ap("192.0.2.50:80"), Dest: ap("192.0.2.21:80"), State: "FIN_WAIT", Expires: 100 * time.Second},
		{Protocol: "UDP", Client: ap("192.0.2.100:40003"), Virtual: ap("192.0.2.50:53"), Dest: ap("198.51.100.11:53"), State: "UDP", Expires: 250 * time.Second},
		{Protocol: "TCP", Client: ap("[2001:db8::100]:0"), Virtual: ap("[2001:db8::50]:80"), Dest: ap("[2001:db8::11]:80"), State: "NONE", Expires: 300 * time.Second},
		{Protocol: "ICMP", Client: ap("192.0.2.100:0"), Virtual: ap("192.0.2.50:0"), Dest: ap("192.0.2.21:0"), State: "ICMP", Expires: time.Second},
		{Protocol: "TCP", Client: ap("192.0.2.100:40004"), Virtual: ap("192.0.2.50:80"), Dest: ap("[2001:db8::21]:80"), State: "ESTABLISHED", Expires: time.Second},
	}
	want := []Conn{
		{Protocol: 6, State: 1, Client: ap("192.0.2.100:40001"), Virtual: ap("192.0.2.50:80"), Dest: ap("192.0.2.21:80"), Timeout: 899},
		{Protocol: 6, State: 4, Flags: FlagInactive, Client: ap("192.0.2.100:40002"), Virtual: ap("192.0.2.50:80"), Dest: ap("192.0.2.21:80"), Timeout: 100},
		{Protocol: 17, Flags: FlagInactive, Client: ap("192.0.2.100:40003"), Virtual: ap("192.0.2.50:53"), Dest: ap("198.51.100.11:53"), Timeout: 250},
		{Type: 1, Protocol: 6, Flags: FlagTemplate | FlagInactive, Client: ap("[2001:db8::100]:0"), Virtual: ap("[2001:db8::50]:80"), Dest: ap("[2001:db8::11]:80"), Timeout: 300},
	}
	if diff := cmp.Diff(want, TableConns(table), addrCmp); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

// udpPayload takes the payload out of an IPv4/UDP packet and refuses
// anything truncated.
func TestUDPPayload(t *testing.T) {
	pkt := []byte{0x45, 0, 0, 31, 0, 0, 0, 0, 1, 17, 0, 0, 192, 0, 2, 11, 224, 0, 0, 81,
		0x22, 0x90, 0x22, 0x90, 0, 11, 0, 0, 'a', 'b', 'c'}
	if p, ok := udpPayload(pkt); !ok || string(p) != "abc" {
		t.Errorf("udpPayload = %q, %v", p, ok)
	}
	for _, n := range []int{0, 19, 27, 30} {
		if _, ok := udpPayload(pkt[:n]); ok {
			t.Errorf("udpPayload of %d bytes accepted", n)
		}
	}
	if _, err := captureFilter(netip.MustParseAddrPort("224.0.0.81:8848")); err != nil {
		t.Errorf("captureFilter: %v", err)
	}
}
