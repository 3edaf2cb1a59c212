package sync

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
)

// The kernel's sync message formats, from net/netfilter/ipvs/ip_vs_sync.c.
const (
	headerLenV0 = 4  // struct ip_vs_sync_mesg_v0
	headerLenV1 = 8  // struct ip_vs_sync_mesg
	connLenV0   = 24 // struct ip_vs_sync_conn_v0
	connLenV4   = 36 // struct ip_vs_sync_v4
	connLenV6   = 72 // struct ip_vs_sync_v6
	seqDataLen  = 24 // struct ip_vs_sync_conn_options: two struct ip_vs_seq

	typeInet6  = 0x01   // STYPE_F_INET6
	sverMask   = 0x0fff // SVER_MASK: the entry length in ver_size
	protoVerV1 = 1      // SYNC_PROTO_VER
)

// Option types of a v1 entry (IPVS_OPT_*).
const (
	OptSeqData = 1 // two struct ip_vs_seq, network order
	OptPEData  = 2 // persistence engine data (e.g. a SIP Call-ID)
	OptPEName  = 3 // persistence engine name
	OptParam   = 7 // IPVS_OPT_PARAM, not sent by current kernels
)

// Connection flags the codec and the resync care about (IP_VS_CONN_F_*).
const (
	FlagFwdMask  = 0x0007
	FlagMasq     = 0x0000
	FlagTunnel   = 0x0002
	FlagDirect   = 0x0003
	FlagInSeq    = 0x0200 // in_seq is valid
	FlagOutSeq   = 0x0400 // out_seq is valid
	FlagSeqMask  = 0x0600
	FlagTemplate = 0x1000
	FlagInactive = 0x0100 // not an established connection
)

// Message is one sync datagram of either version.
type Message struct {
	// Version is 0 or 1.
	Version int
	SyncID  uint8
	Conns   []Conn
}

// Conn is one connection entry. Version 0 entries are IPv4 only and carry
// no firewall mark, no timeout and only 16 bits of flags.
type Conn struct {
	// Type is the v1 entry type; bit 0 marks IPv6. Zero in v0.
	Type     uint8
	Protocol uint8
	Flags    uint32
	State    uint16
	Client   netip.AddrPort
	Virtual  netip.AddrPort
	Dest     netip.AddrPort
	FWMark   uint32
	// Timeout is the connection's timeout in seconds (v1).
	Timeout uint32
	// Options are the v1 options in order; in v0 the sequence data
	// (present when Flags has FlagSeqMask bits) is one OptSeqData option.
	Options []Option
}

// IPv6 reports whether the entry is an IPv6 one.
func (c Conn) IPv6() bool { return c.Type&typeInet6 != 0 }

// Option is a v1 option: {type u8, len u8, data}.
type Option struct {
	Type uint8
	Data []byte
}

// Errors a datagram can fail with; the relay counts drops by them.
var (
	ErrShort   = errors.New("datagram shorter than its header or entries")
	ErrSize    = errors.New("size field does not match the datagram")
	ErrVersion = errors.New("unknown entry version")
	ErrOption  = errors.New("malformed option")
	ErrTrail   = errors.New("bytes after the last entry")
)

// Decode parses one sync datagram. It accepts what the kernel's backup
// accepts (ip_vs_process_message) and rejects the rest with an error
// wrapping one of the Err values above.
func Decode(b []byte) (Message, error) {
	if len(b) < headerLenV0 {
		return Message{}, fmt.Errorf("%w: %d bytes", ErrShort, len(b))
	}
	if size := int(binary.BigEndian.Uint16(b[2:4])); size != len(b) {
		return Message{}, fmt.Errorf("%w: size %d, datagram %d bytes", ErrSize, size, len(b))
	}
	// The kernel tells the versions apart the same way: a v0 message
	// with a zero first byte (no connections) and a 1 in byte 5 reads
	// as v1.
	if len(b) >= headerLenV1 && b[0] == 0 && b[5] == protoVerV1 && b[6] == 0 && b[7] == 0 {
		return decodeV1(b)
	}
	return decodeV0(b)
}

func decodeV0(b []byte) (Message, error) {
	m := Message{Version: 0, SyncID: b[1]}
	n := int(b[0])
	p := b[headerLenV0:]
	for i := range n {
		if len(p) < connLenV0 {
			return Message{}, fmt.Errorf("%w: entry %d of %d", ErrShort, i+1, n)
		}
		c := Conn{
			Protocol: p[1],
			Client:   addrPort4(p[8:12], p[2:4]),
			Virtual:  addrPort4(p[12:16], p[4:6]),
			Dest:     addrPort4(p[16:20], p[6:8]),
			Flags:    uint32(binary.BigEndian.Uint16(p[20:22])),
			State:    binary.BigEndian.Uint16(p[22:24]),
		}
		p = p[connLenV0:]
		if c.Flags&FlagSeqMask != 0 {
			if len(p) < seqDataLen {
				return Message{}, fmt.Errorf("%w: sequence data of entry %d", ErrShort, i+1)
			}
			c.Options = []Option{{Type: OptSeqData, Data: clone(p[:seqDataLen])}}
			p = p[seqDataLen:]
		}
		m.Conns = append(m.Conns, c)
	}
	if len(p) != 0 {
		return Message{}, fmt.Errorf("%w: %d", ErrTrail, len(p))
	}
	return m, nil
}

func decodeV1(b []byte) (Message, error) {
	m := Message{Version: 1, SyncID: b[1]}
	n := int(b[4])
	off := headerLenV1
	for i := range n {
		if off+connLenV4 > len(b) {
			return Message{}, fmt.Errorf("%w: entry %d of %d", ErrShort, i+1, n)
		}
		p := b[off:]
		vs := binary.BigEndian.Uint16(p[2:4])
		if vs>>12 != 0 {
			return Message{}, fmt.Errorf("%w %d in entry %d", ErrVersion, vs>>12, i+1)
		}
		size := int(vs & sverMask)
		base := connLenV4
		if p[0]&typeInet6 != 0 {
			base = connLenV6
		}
		if size < base || off+size > len(b) {
			return Message{}, fmt.Errorf("%w: entry %d claims %d bytes, %d left, needs at least %d", ErrShort, i+1, size, len(b)-off, base)
		}
		p = p[:size]
		c := Conn{
			Type:     p[0],
			Protocol: p[1],
			Flags:    binary.BigEndian.Uint32(p[4:8]),
			State:    binary.BigEndian.Uint16(p[8:10]),
			FWMark:   binary.BigEndian.Uint32(p[16:20]),
			Timeout:  binary.BigEndian.Uint32(p[20:24]),
		}
		if base == connLenV4 {
			c.Client = addrPort4(p[24:28], p[10:12])
			c.Virtual = addrPort4(p[28:32], p[12:14])
			c.Dest = addrPort4(p[32:36], p[14:16])
		} else {
			c.Client = addrPort6(p[24:40], p[10:12])
			c.Virtual = addrPort6(p[40:56], p[12:14])
			c.Dest = addrPort6(p[56:72], p[14:16])
		}
		for o := p[base:]; len(o) > 0; {
			if len(o) < 2 || o[1] == 0 || int(o[1]) > len(o)-2 {
				return Message{}, fmt.Errorf("%w in entry %d", ErrOption, i+1)
			}
			c.Options = append(c.Options, Option{Type: o[0], Data: clone(o[2 : 2+int(o[1])])})
			o = o[2+int(o[1]):]
		}
		m.Conns = append(m.Conns, c)
		off += size
		if i < n-1 {
			off = align4(off)
		}
	}
	if off != len(b) {
		return Message{}, fmt.Errorf("%w: %d", ErrTrail, len(b)-off)
	}
	return m, nil
}

// Encode returns the datagram as the kernel's master builds it: v1 entries
// 4-byte aligned, the padding zero. It fails on what the format cannot
// carry (more than 255 entries, IPv6 in v0, an option over 255 bytes).
func (m Message) Encode() ([]byte, error) {
	if len(m.Conns) > 255 {
		return nil, fmt.Errorf("%d entries, at most 255 fit a message", len(m.Conns))
	}
	switch m.Version {
	case 0:
		b := make([]byte, headerLenV0, headerLenV0+len(m.Conns)*connLenV0)
		b[0], b[1] = uint8(len(m.Conns)), m.SyncID
		for i, c := range m.Conns {
			var err error
			if b, err = c.appendV0(b); err != nil {
				return nil, fmt.Errorf("entry %d: %w", i+1, err)
			}
		}
		return putSize(b)
	case 1:
		b := make([]byte, headerLenV1, headerLenV1+len(m.Conns)*connLenV4)
		b[1], b[4], b[5] = m.SyncID, uint8(len(m.Conns)), protoVerV1
		for i, c := range m.Conns {
			for len(b)%4 != 0 {
				b = append(b, 0)
			}
			var err error
			if b, err = c.appendV1(b); err != nil {
				return nil, fmt.Errorf("entry %d: %w", i+1, err)
			}
		}
		return putSize(b)
	}
	return nil, fmt.Errorf("unknown sync message version %d", m.Version)
}

// Len is the entry's encoded v1 length with its options.
func (c Conn) Len() int {
	n := connLenV4
	if c.IPv6() {
		n = connLenV6
	}
	for _, o := range c.Options {
		n += 2 + len(o.Data)
	}
	return n
}

func (c Conn) appendV0(b []byte) ([]byte, error) {
	if c.IPv6() || !c.Client.Addr().Is4() || !c.Virtual.Addr().Is4() || !c.Dest.Addr().Is4() {
		return nil, errors.New("version 0 carries IPv4 connections only")
	}
	if c.Flags > 0xffff {
		return nil, fmt.Errorf("flags %#x do not fit version 0's 16 bits", c.Flags)
	}
	var seq []byte
	for _, o := range c.Options {
		if o.Type != OptSeqData || len(o.Data) != seqDataLen || seq != nil {
			return nil, errors.New("version 0 carries one 24-byte sequence option at most")
		}
		seq = o.Data
	}
	if (seq != nil) != (c.Flags&FlagSeqMask != 0) {
		return nil, errors.New("version 0 sequence data goes with the IN_SEQ/OUT_SEQ flags")
	}
	b = append(b, 0, c.Protocol)
	b = binary.BigEndian.AppendUint16(b, c.Client.Port())
	b = binary.BigEndian.AppendUint16(b, c.Virtual.Port())
	b = binary.BigEndian.AppendUint16(b, c.Dest.Port())
	b = append(b, c.Client.Addr().AsSlice()...)
	b = append(b, c.Virtual.Addr().AsSlice()...)
	b = append(b, c.Dest.Addr().AsSlice()...)
	b = binary.BigEndian.AppendUint16(b, uint16(c.Flags))
	b = binary.BigEndian.AppendUint16(b, c.State)
	return append(b, seq...), nil
}

func (c Conn) appendV1(b []byte) ([]byte, error) {
	want := netip.Addr.Is4
	if c.IPv6() {
		want = func(a netip.Addr) bool { return a.Is6() && a.Zone() == "" }
	}
	if !want(c.Client.Addr()) || !want(c.Virtual.Addr()) || !want(c.Dest.Addr()) {
		return nil, fmt.Errorf("addresses %v %v %v do not match entry type %#x", c.Client, c.Virtual, c.Dest, c.Type)
	}
	n := c.Len()
	if n > sverMask {
		return nil, fmt.Errorf("entry of %d bytes exceeds %d", n, sverMask)
	}
	b = append(b, c.Type, c.Protocol)
	b = binary.BigEndian.AppendUint16(b, uint16(n))
	b = binary.BigEndian.AppendUint32(b, c.Flags)
	b = binary.BigEndian.AppendUint16(b, c.State)
	b = binary.BigEndian.AppendUint16(b, c.Client.Port())
	b = binary.BigEndian.AppendUint16(b, c.Virtual.Port())
	b = binary.BigEndian.AppendUint16(b, c.Dest.Port())
	b = binary.BigEndian.AppendUint32(b, c.FWMark)
	b = binary.BigEndian.AppendUint32(b, c.Timeout)
	b = append(b, c.Client.Addr().AsSlice()...)
	b = append(b, c.Virtual.Addr().AsSlice()...)
	b = append(b, c.Dest.Addr().AsSlice()...)
	for _, o := range c.Options {
		if len(o.Data) == 0 || len(o.Data) > 255 {
			return nil, fmt.Errorf("option %d with %d bytes, want 1..255", o.Type, len(o.Data))
		}
		b = append(b, o.Type, uint8(len(o.Data)))
		b = append(b, o.Data...)
	}
	return b, nil
}

func putSize(b []byte) ([]byte, error) {
	if len(b) > 0xffff {
		return nil, fmt.Errorf("message of %d bytes exceeds 65535", len(b))
	}
	binary.BigEndian.PutUint16(b[2:4], uint16(len(b)))
	return b, nil
}

// Pack splits conns into v1 messages of at most maxLen bytes (at most 255
// entries each), as the kernel's master fills its buffers.
func Pack(syncID uint8, conns []Conn, maxLen int) ([][]byte, error) {
	var out [][]byte
	cur := Message{Version: 1, SyncID: syncID}
	size := headerLenV1
	flush := func() error {
		if len(cur.Conns) == 0 {
			return nil
		}
		b, err := cur.Encode()
		if err != nil {
			return err
		}
		out = append(out, b)
		cur.Conns, size = nil, headerLenV1
		return nil
	}
	for _, c := range conns {
		n := c.Len()
		if headerLenV1+n > maxLen {
			return nil, fmt.Errorf("entry of %d bytes does not fit a message of %d", n, maxLen)
		}
		if align4(size)+n > maxLen || len(cur.Conns) == 255 {
			if err := flush(); err != nil {
				return nil, err
			}
		}
		size = align4(size) + n
		cur.Conns = append(cur.Conns, c)
	}
	if err := flush(); err != nil {
		return nil, err
	}
	return out, nil
}

func align4(n int) int { return (n + 3) &^ 3 }

func addrPort4(a, p []byte) netip.AddrPort {
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte(a)), binary.BigEndian.Uint16(p))
}

func addrPort6(a, p []byte) netip.AddrPort {
	return netip.AddrPortFrom(netip.AddrFrom16([16]byte(a)), binary.BigEndian.Uint16(p))
}

func clone(b []byte) []byte { return append([]byte(nil), b...) }
