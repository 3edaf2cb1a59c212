package vip

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
	"github.com/mdlayher/ndp"
)

// The frames are built whole (Ethernet header included) and written on
// AF_PACKET sockets: arp.Client insists on an IPv4 address on the
// interface, and a director's VIP interface often has none of its own.

var (
	allNodes           = netip.MustParseAddr("ff02::1")
	allNodesMAC        = net.HardwareAddr{0x33, 0x33, 0, 0, 0, 1}
	zeroMAC            = net.HardwareAddr{0, 0, 0, 0, 0, 0}
	ipv4Zero           = netip.IPv4Unspecified()
	errNotAnnouncement = errors.New("not an announcement")
)

const (
	ipv6HeaderLen = 40
	protoICMPv6   = 58
	// ndpHopLimit is required on every NDP message (RFC 4861 7.1.2):
	// receivers drop others as possibly forwarded.
	ndpHopLimit = 255
)

func ethFrame(dst, src net.HardwareAddr, et ethernet.EtherType, payload []byte) ([]byte, error) {
	f := &ethernet.Frame{Destination: dst, Source: src, EtherType: et, Payload: payload}
	return f.MarshalBinary()
}

func arpFrame(op arp.Operation, src net.HardwareAddr, spa netip.Addr, tha net.HardwareAddr, tpa netip.Addr) ([]byte, error) {
	p, err := arp.NewPacket(op, src, spa, tha, tpa)
	if err != nil {
		return nil, err
	}
	b, err := p.MarshalBinary()
	if err != nil {
		return nil, err
	}
	return ethFrame(ethernet.Broadcast, src, ethernet.EtherTypeARP, b)
}

// garpRequest is an ARP Announcement (RFC 5227 2.3): a broadcast request
// with sender and target IP the VIP and the target hardware address zero.
func garpRequest(src net.HardwareAddr, vip netip.Addr) ([]byte, error) {
	return arpFrame(arp.OperationRequest, src, vip, zeroMAC, vip)
}

// garpReply is the gratuitous reply form (RFC 5944 4.6): the target hardware
// address is ours as well. Linux only treats a reply as gratuitous, and so
// overrides an entry younger than locktime, when THA equals SHA.
func garpReply(src net.HardwareAddr, vip netip.Addr) ([]byte, error) {
	return arpFrame(arp.OperationReply, src, vip, src, vip)
}

// arpProbe asks whether anyone holds vip without claiming it (RFC 5227 2.1.1:
// sender IP zero), so a holder answers and reveals its MAC.
func arpProbe(src net.HardwareAddr, vip netip.Addr) ([]byte, error) {
	return arpFrame(arp.OperationRequest, src, ipv4Zero, zeroMAC, vip)
}

// ipv6Frame wraps an NDP message in IPv6 and Ethernet headers, with the
// ICMPv6 checksum over the pseudo-header.
func ipv6Frame(dstMAC, srcMAC net.HardwareAddr, src, dst netip.Addr, m ndp.Message) ([]byte, error) {
	body, err := ndp.MarshalMessageChecksum(m, src, dst)
	if err != nil {
		return nil, err
	}
	pkt := make([]byte, ipv6HeaderLen+len(body))
	pkt[0] = 6 << 4
	binary.BigEndian.PutUint16(pkt[4:6], uint16(len(body)))
	pkt[6] = protoICMPv6
	pkt[7] = ndpHopLimit
	s, d := src.As16(), dst.As16()
	copy(pkt[8:24], s[:])
	copy(pkt[24:40], d[:])
	copy(pkt[40:], body)
	return ethFrame(dstMAC, srcMAC, ethernet.EtherTypeIPv6, pkt)
}

// unsolicitedNA announces vip (RFC 4861 7.2.6): to all nodes, Override set
// so caches replace the old link-layer address, Solicited clear, with our
// link-layer address as the target option. The VIP itself is the source:
// it is assigned to the interface (nodad) by the time we announce.
func unsolicitedNA(src net.HardwareAddr, vip netip.Addr) ([]byte, error) {
	na := &ndp.NeighborAdvertisement{
		Override:      true,
		TargetAddress: vip,
		Options:       []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Target, Addr: src}},
	}
	return ipv6Frame(allNodesMAC, src, vip, allNodes, na)
}

// dadProbe is a duplicate-address-detection solicitation for vip (RFC 4862
// 5.4.2: source unspecified, to the solicited-node group): a holder answers
// with an NA to all nodes.
func dadProbe(src net.HardwareAddr, vip netip.Addr) ([]byte, error) {
	group, err := ndp.SolicitedNodeMulticast(vip)
	if err != nil {
		return nil, err
	}
	g := group.As16()
	dstMAC := net.HardwareAddr{0x33, 0x33, g[12], g[13], g[14], g[15]}
	ns := &ndp.NeighborSolicitation{TargetAddress: vip}
	return ipv6Frame(dstMAC, src, netip.IPv6Unspecified(), group, ns)
}

// claim is a host saying "ip is at mac" on the wire, to the frame's
// destination (broadcast, multicast, or one host: an answer to a probe).
type claim struct {
	ip  netip.Addr
	mac net.HardwareAddr
	to  net.HardwareAddr
	at  time.Time // when it was seen
	// reply: an ARP reply or an NA, the forms a holder answers a probe
	// with (a request only asks, whatever its sender address says).
	reply bool
}

// parseClaim extracts the claim an ARP packet or a neighbour advertisement
// makes. ARP: any packet with a sender IP (requests and replies alike).
// NDP: an NA's target, at its target link-layer address if given, else at
// the frame's source.
func parseClaim(frame []byte) (claim, error) {
	var f ethernet.Frame
	if err := f.UnmarshalBinary(frame); err != nil {
		return claim{}, err
	}
	switch f.EtherType {
	case ethernet.EtherTypeARP:
		var p arp.Packet
		if err := p.UnmarshalBinary(f.Payload); err != nil {
			return claim{}, err
		}
		if !p.SenderIP.Is4() || p.SenderIP.IsUnspecified() {
			return claim{}, errNotAnnouncement
		}
		return claim{ip: p.SenderIP, mac: p.SenderHardwareAddr, to: f.Destination, reply: p.Operation == arp.OperationReply}, nil
	case ethernet.EtherTypeIPv6:
		b := f.Payload
		if len(b) < ipv6HeaderLen || b[0]>>4 != 6 || b[6] != protoICMPv6 {
			return claim{}, errNotAnnouncement
		}
		plen := int(binary.BigEndian.Uint16(b[4:6]))
		if ipv6HeaderLen+plen > len(b) {
			return claim{}, fmt.Errorf("truncated IPv6 packet: payload length %d, have %d", plen, len(b)-ipv6HeaderLen)
		}
		m, err := ndp.ParseMessage(b[ipv6HeaderLen : ipv6HeaderLen+plen])
		if err != nil {
			return claim{}, err
		}
		na, ok := m.(*ndp.NeighborAdvertisement)
		if !ok {
			return claim{}, errNotAnnouncement
		}
		c := claim{ip: na.TargetAddress, mac: f.Source, to: f.Destination, reply: true}
		for _, o := range na.Options {
			if lla, ok := o.(*ndp.LinkLayerAddress); ok && lla.Direction == ndp.Target {
				c.mac = lla.Addr
			}
		}
		return c, nil
	}
	return claim{}, errNotAnnouncement
}
