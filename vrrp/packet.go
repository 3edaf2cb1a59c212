package vrrp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"time"
)

// Wire constants of RFC 5798 5.1 and RFC 3768 5.1.
const (
	ipProtoVRRP       = 112 // IANA protocol number, part of the pseudo-header
	typeAdvertisement = 1   // the only VRRP packet type
	headerLen         = 8   // fixed fields before the address list
	authDataLen       = 8   // v2 Authentication Data, present whatever the Auth Type
	maxAddresses      = 255 // Count IPvX Addr is one byte
	centisecond       = 10 * time.Millisecond
	maxCentiseconds   = 0x0fff // Max Adver Int is 12 bits
	intervalMask      = 0x0fff // the top 4 bits of the v3 interval word are reserved
	ttlVRRP           = 255    // RFC 5798 7.1 / RFC 3768 7.1: only link-local senders
)

// VRRPv2 Auth Type values that directord can receive or send. Type 2 (IP
// Authentication Header) of RFC 2338 was withdrawn by RFC 3768 and is never
// built or accepted.
const (
	// AuthNone is Auth Type 0: no authentication.
	AuthNone uint8 = 0
	// AuthSimpleText is Auth Type 1: an 8-byte clear-text password, kept
	// only because keepalived peers configured with auth_type PASS send it.
	AuthSimpleText uint8 = 1
)

// Advert is one VRRP advertisement (RFC 5798 5.1 for version 3, RFC 3768
// 5.1 for version 2). It is the one value both the send path and the
// receive path speak, so the state machine never sees bytes.
type Advert struct {
	Version  int // 2 or 3
	VRID     uint8
	Priority uint8
	// Interval is Max Adver Int (v3: 12-bit centiseconds) or Adver Int
	// (v2: 8-bit seconds).
	Interval  time.Duration
	Addresses []netip.Addr // IPv4 or IPv6 (v3 only); Count IPvX Addr = len
	AuthType  uint8        // v2 only: AuthNone or AuthSimpleText (RFC 2338)
	AuthData  [8]byte      // v2 only; carried as received, ignored unless AuthType is AuthSimpleText
}

// ChecksumMode selects how the VRRPv3 IPv4 checksum is computed, because
// peers disagree: RFC 5798 includes the pseudo-header, some implementations
// kept the VRRPv2 habit of summing the VRRP message alone.
type ChecksumMode int

const (
	// ChecksumRFC is RFC 5798 5.2.8: with the IPv4 pseudo-header. IPv6
	// always has the pseudo-header, whatever the mode.
	ChecksumRFC ChecksumMode = iota
	// ChecksumV2 leaves the pseudo-header out, as VRRPv2 and some v3
	// implementations do (config checksum_compat: v2). It changes nothing
	// for version 2 (never a pseudo-header) or IPv6 (always one).
	ChecksumV2
)

// String returns the config spelling of m (checksum_compat), for logs.
func (m ChecksumMode) String() string {
	switch m {
	case ChecksumRFC:
		return "rfc"
	case ChecksumV2:
		return "v2"
	}
	return "ChecksumMode(" + strconv.Itoa(int(m)) + ")"
}

// DropReason says why a received advert was discarded, so the receive path
// can count and log drops by cause instead of a bare bool. Zero (DropNone)
// means accepted.
type DropReason int

const (
	// DropNone means the advert was accepted.
	DropNone DropReason = iota
	// DropTruncated: shorter than the header, or the length disagrees with
	// what Count IPvX Addr (and the v2 auth data) imply. Longer packets land
	// here too: no sender pads a VRRP message, keepalived drops them as a
	// length mismatch, and the checksum cannot say which length was meant.
	DropTruncated
	// DropBadVersion: version nibble not 2 or 3, or not the instance's version.
	DropBadVersion
	// DropBadType: type nibble not 1 (ADVERTISEMENT).
	DropBadType
	// DropBadChecksum: the checksum does not verify for the mode in use.
	DropBadChecksum
	// DropBadTTL: IPv4 TTL / IPv6 hop limit not 255 (RFC 5798 7.1), so the
	// advert may have crossed a router.
	DropBadTTL
	// DropUnknownVRID: no instance with this VRID on the receiving interface.
	DropUnknownVRID
	// DropAddressMismatch: Count IPvX Addr or the address list differ from
	// the instance's virtual addresses.
	DropAddressMismatch
	// DropAuthMismatch: v2 auth type or password differ, or the auth type is
	// one directord does not know (RFC 3768 5.3.6: MUST discard).
	DropAuthMismatch
	// DropIntervalMismatch: v2 Adver Int differs from the configured one
	// (RFC 3768 7.1 MUST discard); or the interval is zero in either
	// version, which no instance can be configured with and which would
	// make a backup's Master_Down_Interval zero.
	DropIntervalMismatch
	// DropNotPeer: unicast mode, and the source is not one of unicast_peers.
	DropNotPeer
	// DropBadFamily: the address family of the packet does not match the
	// instance, or IPv6 with version 2.
	DropBadFamily
	// DropOwnAdvert: the advert came from one of this node's own addresses
	// (our own, looped back).
	DropOwnAdvert

	dropReasonCount // keep last: bounds AllDropReasons
)

var dropReasonNames = [dropReasonCount]string{
	DropNone:             "none",
	DropTruncated:        "truncated",
	DropBadVersion:       "bad_version",
	DropBadType:          "bad_type",
	DropBadChecksum:      "bad_checksum",
	DropBadTTL:           "bad_ttl",
	DropUnknownVRID:      "unknown_vrid",
	DropAddressMismatch:  "address_mismatch",
	DropAuthMismatch:     "auth_mismatch",
	DropIntervalMismatch: "interval_mismatch",
	DropNotPeer:          "not_peer",
	DropBadFamily:        "bad_family",
	DropOwnAdvert:        "own_advert",
}

// String returns a stable snake_case name, used as a metrics label and a
// log value; renaming one breaks dashboards.
func (r DropReason) String() string {
	if r >= 0 && r < dropReasonCount {
		return dropReasonNames[r]
	}
	return "DropReason(" + strconv.Itoa(int(r)) + ")"
}

// AllDropReasons lists every reason except DropNone, for metrics that
// pre-create their series so a rate of zero is visible. The slice is new on
// every call.
func AllDropReasons() []DropReason {
	rs := make([]DropReason, 0, dropReasonCount-1)
	for r := DropNone + 1; r < dropReasonCount; r++ {
		rs = append(rs, r)
	}
	return rs
}

// Errors returned (wrapped, with the advert's version and VRID) by Marshal
// and AppendMarshal. Config validation should make them unreachable; when
// one happens it is a bug in the caller, and errors.Is tells which.
var (
	// ErrVersion: Version is neither 2 nor 3.
	ErrVersion = errors.New("version must be 2 or 3")
	// ErrFamily: the source and destination are not one family, an address
	// is of another family than the source, the addresses mix families, or
	// VRRPv2 is asked to go over IPv6.
	ErrFamily = errors.New("address family mismatch")
	// ErrAddressCount: more addresses than Count IPvX Addr can hold.
	ErrAddressCount = errors.New("too many addresses")
	// ErrInterval: the interval is out of range or not a whole number of
	// the version's unit, so it would be sent rounded.
	ErrInterval = errors.New("interval not representable")
	// ErrAuth: an auth type directord cannot send, or authentication on a
	// VRRPv3 advert (RFC 5798 removed it).
	ErrAuth = errors.New("authentication not representable")
	// ErrChecksumMode: the ChecksumMode is not one of the defined modes.
	ErrChecksumMode = errors.New("unknown checksum mode")
)

// Marshal encodes a into a new slice. src and dst are the IP source and
// destination, needed for the pseudo-header checksum. It fails if the
// version is not 2 or 3, v2 is asked over IPv6, there are more than 255
// addresses, the addresses mix families or differ from src's family, or the
// interval is out of range or not representable (v3: multiples of 10ms,
// 10ms..40.95s; v2: whole seconds 1s..255s).
func (a *Advert) Marshal(src, dst netip.Addr, mode ChecksumMode) ([]byte, error) {
	return a.AppendMarshal(nil, src, dst, mode)
}

// AppendMarshal is Marshal appending to b, so the send path can reuse one
// buffer per instance and send without allocating. On error b is returned
// unchanged.
func (a *Advert) AppendMarshal(b []byte, src, dst netip.Addr, mode ChecksumMode) ([]byte, error) {
	// A net.IP converted with netip.AddrFromSlice is often the 16-byte
	// v4-mapped form; VRRP never runs over a mapped address, so treat it as
	// the IPv4 address it stands for.
	src, dst = src.Unmap(), dst.Unmap()
	field, err := a.validate(src, dst, mode)
	if err != nil {
		return b, fmt.Errorf("marshal VRRPv%d advert for VRID %d: %s: %w", a.Version, a.VRID, field, err)
	}
	is6 := src.Is6()
	n := wireLen(a.Version, is6, len(a.Addresses))
	start := len(b)
	b = slices.Grow(b, n)[:start+n]
	p := b[start:]

	p[0] = byte(a.Version<<4 | typeAdvertisement)
	p[1] = a.VRID
	p[2] = a.Priority
	p[3] = byte(len(a.Addresses))
	if a.Version == 3 {
		binary.BigEndian.PutUint16(p[4:], uint16(a.Interval/centisecond)) // reserved bits zero
	} else {
		p[4] = a.AuthType
		p[5] = byte(a.Interval / time.Second)
	}
	p[6], p[7] = 0, 0
	off := headerLen
	for _, addr := range a.Addresses {
		if is6 {
			x := addr.As16()
			off += copy(p[off:], x[:])
		} else {
			x := addr.As4()
			off += copy(p[off:], x[:])
		}
	}
	if a.Version == 2 {
		copy(p[off:], a.AuthData[:])
	}
	binary.BigEndian.PutUint16(p[6:], checksum(p, src, dst, usesPseudoHeader(a.Version, is6, mode)))
	return b, nil
}

// validate returns the offending field and a sentinel-wrapping error. It
// expects src and dst already unmapped.
func (a *Advert) validate(src, dst netip.Addr, mode ChecksumMode) (string, error) {
	if mode != ChecksumRFC && mode != ChecksumV2 {
		return "checksum mode " + mode.String(), ErrChecksumMode
	}
	if a.Version != 2 && a.Version != 3 {
		return "version", ErrVersion
	}
	if !src.IsValid() || !dst.IsValid() || src.Is4() != dst.Is4() {
		return fmt.Sprintf("source %v and destination %v", src, dst), ErrFamily
	}
	if a.Version == 2 && src.Is6() {
		return fmt.Sprintf("source %v: VRRPv2 is IPv4 only (RFC 3768)", src), ErrFamily
	}
	if len(a.Addresses) > maxAddresses {
		return fmt.Sprintf("%d addresses, at most %d", len(a.Addresses), maxAddresses), ErrAddressCount
	}
	for i, addr := range a.Addresses {
		if !addr.IsValid() {
			return fmt.Sprintf("address %d is the zero netip.Addr", i), ErrFamily
		}
		if addr.Is4() != a.Addresses[0].Is4() {
			return fmt.Sprintf("address %v mixed with %v", addr, a.Addresses[0]), ErrFamily
		}
		if addr.Is4() != src.Is4() {
			return fmt.Sprintf("address %v from source %v", addr, src), ErrFamily
		}
	}
	if a.Version == 3 {
		if a.Interval%centisecond != 0 || a.Interval < centisecond || a.Interval > maxCentiseconds*centisecond {
			return fmt.Sprintf("interval %v, want 10ms..40.95s in steps of 10ms", a.Interval), ErrInterval
		}
		if a.AuthType != AuthNone || a.AuthData != [8]byte{} {
			return "authentication on VRRPv3 (RFC 5798 has none)", ErrAuth
		}
	} else {
		if a.Interval%time.Second != 0 || a.Interval < time.Second || a.Interval > 255*time.Second {
			return fmt.Sprintf("interval %v, want whole seconds 1s..255s", a.Interval), ErrInterval
		}
		if a.AuthType != AuthNone && a.AuthType != AuthSimpleText {
			return fmt.Sprintf("auth type %d", a.AuthType), ErrAuth
		}
	}
	return "", nil
}

// Parse decodes the VRRP payload b (the IP payload, no IP header) received
// from src to dst. It checks only what the packet itself can tell: length,
// version, type, checksum (version 3 over IPv4 with mode; version 2 without
// pseudo-header; IPv6 with it), family consistency (IPv6 addresses only
// from an IPv6 src; version 2 only over IPv4), a known v2 auth type and a
// non-zero interval. It returns the advert and DropNone, or a zero Advert
// and the reason. It never panics and allocates only the address slice.
// A mode other than ChecksumV2 counts as ChecksumRFC: Parse cannot fail
// with an error, and the RFC is the safe reading.
func Parse(b []byte, src, dst netip.Addr, mode ChecksumMode) (Advert, DropReason) {
	var a Advert
	r := ParseInto(&a, b, src, dst, mode)
	return a, r
}

// ParseInto is Parse into *a, reusing a.Addresses' backing array so the
// receive path does not allocate once it has seen the largest advert. On a
// drop *a is zeroed except for that backing array.
func ParseInto(a *Advert, b []byte, src, dst netip.Addr, mode ChecksumMode) DropReason {
	*a = Advert{Addresses: a.Addresses[:0]}
	if len(b) < headerLen {
		return DropTruncated
	}
	version := int(b[0] >> 4)
	if version != 2 && version != 3 {
		return DropBadVersion
	}
	if b[0]&0x0f != typeAdvertisement {
		return DropBadType
	}
	src, dst = src.Unmap(), dst.Unmap() // see AppendMarshal
	if !src.IsValid() || !dst.IsValid() || src.Is4() != dst.Is4() {
		return DropBadFamily
	}
	is6 := src.Is6()
	if version == 2 && is6 {
		// keepalived has a non-standard VRRPv2 over IPv6 (without the auth
		// data); RFC 3768 is IPv4 only and config rejects it.
		return DropBadFamily
	}
	count := int(b[3])
	if len(b) != wireLen(version, is6, count) {
		return DropTruncated
	}
	// Compare rather than sum-to-0xffff: a checksum field of 0xffff where
	// 0x0000 is due would also verify by summing, but no VRRP sender writes
	// it, and accepting it would let two byte strings mean one advert.
	if binary.BigEndian.Uint16(b[6:]) != checksum(b, src, dst, usesPseudoHeader(version, is6, mode)) {
		return DropBadChecksum
	}
	var interval time.Duration
	if version == 3 {
		interval = time.Duration(binary.BigEndian.Uint16(b[4:])&intervalMask) * centisecond
	} else {
		if b[4] != AuthNone && b[4] != AuthSimpleText {
			return DropAuthMismatch // RFC 3768 5.3.6: unknown type MUST be discarded
		}
		interval = time.Duration(b[5]) * time.Second
	}
	if interval == 0 {
		return DropIntervalMismatch
	}

	addrs := a.Addresses
	if cap(addrs) < count {
		addrs = make([]netip.Addr, count)
	} else {
		addrs = addrs[:count]
	}
	off := headerLen
	for i := range addrs {
		if is6 {
			addrs[i] = netip.AddrFrom16([16]byte(b[off : off+16]))
			off += 16
		} else {
			addrs[i] = netip.AddrFrom4([4]byte(b[off : off+4]))
			off += 4
		}
	}
	*a = Advert{
		Version:   version,
		VRID:      b[1],
		Priority:  b[2],
		Interval:  interval,
		Addresses: addrs,
	}
	if version == 2 {
		a.AuthType = b[4]
		a.AuthData = [8]byte(b[off : off+authDataLen])
	}
	return DropNone
}

// Expect is what an instance expects of adverts for it: the part of its
// configuration that RFC 5798 7.1 / RFC 3768 7.1 compare against.
type Expect struct {
	Version   int
	Interval  time.Duration // compared for version 2 only
	Addresses []netip.Addr  // the instance's virtual addresses (order-insensitive comparison)
	AuthType  uint8         // version 2 only
	AuthData  [8]byte       // version 2 with AuthSimpleText only
}

// Check applies the instance-level rules of RFC 5798 7.1 / RFC 3768 7.1 to
// a parsed advert and the received TTL/hop limit, in the RFCs' order: TTL
// 255, version, v2 authentication, address family, address count and list,
// v2 interval. The RFCs say the receiver MAY verify the addresses; we drop
// and say so, as keepalived does, so a misconfigured peer cannot win an
// election for other addresses. A negative ttl means the transport did not
// learn it or the caller deliberately does not enforce it (keepalived skips
// the TTL check for unicast peers, which may be routed); it is then not
// checked. VRID lookup, unicast peers and own adverts are decided by the
// caller, which has the reasons for them.
func (a *Advert) Check(ttl int, e Expect) DropReason {
	if ttl >= 0 && ttl != ttlVRRP {
		return DropBadTTL
	}
	if a.Version != e.Version {
		return DropBadVersion
	}
	if a.Version == 2 {
		if a.AuthType != e.AuthType {
			return DropAuthMismatch
		}
		if a.AuthType == AuthSimpleText && a.AuthData != e.AuthData {
			return DropAuthMismatch
		}
	}
	if len(a.Addresses) > 0 && len(e.Addresses) > 0 && a.Addresses[0].Is4() != e.Addresses[0].Is4() {
		return DropBadFamily
	}
	if !sameAddresses(a.Addresses, e.Addresses) {
		return DropAddressMismatch
	}
	if a.Version == 2 && a.Interval != e.Interval {
		return DropIntervalMismatch
	}
	return DropNone
}

// sameAddresses compares got and want as multisets, ignoring zones (the
// wire has none). Quadratic, but n <= 255 and it must not allocate on the
// receive path.
func sameAddresses(got, want []netip.Addr) bool {
	if len(got) != len(want) {
		return false
	}
	for _, w := range want {
		w = w.WithZone("")
		if countAddr(got, w) != countAddr(want, w) {
			return false
		}
	}
	return true
}

func countAddr(list []netip.Addr, x netip.Addr) int {
	n := 0
	for _, a := range list {
		if a.WithZone("") == x {
			n++
		}
	}
	return n
}

// PassAuth returns the AuthData for a VRRPv2 simple-text password (RFC
// 2338 5.3.6 / keepalived auth_pass): the password's bytes, zero padded to
// 8. Longer passwords are cut to 8 bytes, as keepalived does; config
// rejects them first.
func PassAuth(password string) [8]byte {
	var d [8]byte
	copy(d[:], password)
	return d
}

// wireLen is the exact VRRP message length for count addresses.
func wireLen(version int, is6 bool, count int) int {
	n := headerLen + count*4
	if is6 {
		n = headerLen + count*16
	}
	if version == 2 {
		n += authDataLen
	}
	return n
}

// usesPseudoHeader says whether the checksum covers a pseudo-header: always
// for IPv6 (RFC 5798 5.2.8, RFC 8200 8.1), never for version 2 (RFC 3768
// 5.3.8), and for version 3 over IPv4 unless the peer needs ChecksumV2.
func usesPseudoHeader(version int, is6 bool, mode ChecksumMode) bool {
	switch {
	case is6:
		return true
	case version == 2:
		return false
	default:
		return mode != ChecksumV2
	}
}

// checksum returns the RFC 1071 checksum of the VRRP message p, taking its
// checksum field as zero (so it both fills and verifies), with the IPv4 or
// IPv6 pseudo-header of src and dst when pseudo is set. The IPv4 pseudo-
// header (src, dst, zero, protocol, 16-bit length) and the IPv6 one (src,
// dst, 32-bit length, three zero bytes, next header) sum to the same words
// apart from the addresses.
func checksum(p []byte, src, dst netip.Addr, pseudo bool) uint16 {
	var s uint64
	if pseudo {
		if src.Is4() {
			sa, da := src.As4(), dst.As4()
			s = sumWords(s, sa[:])
			s = sumWords(s, da[:])
		} else {
			sa, da := src.As16(), dst.As16()
			s = sumWords(s, sa[:])
			s = sumWords(s, da[:])
		}
		s += ipProtoVRRP + uint64(len(p))
	}
	s = sumWords(s, p[:6])
	s = sumWords(s, p[8:])
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return ^uint16(s)
}

// sumWords adds b as big-endian 16-bit words, an odd last byte padded with
// zero (VRRP messages are always even, but the function must not care).
func sumWords(s uint64, b []byte) uint64 {
	for len(b) >= 2 {
		s += uint64(b[0])<<8 | uint64(b[1])
		b = b[2:]
	}
	if len(b) == 1 {
		s += uint64(b[0]) << 8
	}
	return s
}
