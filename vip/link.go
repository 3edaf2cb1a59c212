package vip

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/mdlayher/ethernet"
	"github.com/mdlayher/packet"
	"golang.org/x/net/bpf"
)

// listenFunc opens a raw AF_PACKET socket for one EtherType on ifi. Tests
// replace it with a fake connection.
type listenFunc func(ifi *net.Interface, etherType ethernet.EtherType, filter []bpf.RawInstruction) (net.PacketConn, error)

func listenPacket(ifi *net.Interface, et ethernet.EtherType, filter []bpf.RawInstruction) (net.PacketConn, error) {
	return packet.Listen(ifi, packet.Raw, int(et), &packet.Config{Filter: filter})
}

// naFilter passes only ICMPv6 neighbour advertisements, so the IPv6 socket
// does not copy every IPv6 frame of a busy director into user space.
var naFilter = func() []bpf.RawInstruction {
	const (
		offNextHeader = 14 + 6  // Ethernet header + IPv6 next header
		offICMPType   = 14 + 40 // Ethernet header + IPv6 header
		typeNA        = 136
	)
	f, err := bpf.Assemble([]bpf.Instruction{
		bpf.LoadAbsolute{Off: offNextHeader, Size: 1},
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: protoICMPv6, SkipTrue: 3},
		bpf.LoadAbsolute{Off: offICMPType, Size: 1},
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: typeNA, SkipTrue: 1},
		bpf.RetConstant{Val: 1 << 16},
		bpf.RetConstant{Val: 0},
	})
	if err != nil {
		panic(err)
	}
	return f
}()

// link sends announcements on one interface and reads what other hosts claim
// there. Every VIP on the interface shares its two sockets.
type link struct {
	ifi *net.Interface
	arp net.PacketConn // ETH_P_ARP
	nd  net.PacketConn // ETH_P_IPV6, neighbour advertisements only
	// sent counts frames written, for statistics.
	sent *atomic.Uint64
	// closed tells readers that their read error is the close, whichever
	// error value the socket layer chose for it.
	closed atomic.Bool
	// checked is when the interface was last looked up (Manager.mu).
	checked time.Time
}

// linkHooks receive what a link's readers see.
type linkHooks struct {
	claim   func(*link, claim)
	readErr func(*link, error)
}

func openLink(ifi *net.Interface, listen listenFunc, sent *atomic.Uint64, hooks linkHooks) (*link, error) {
	l := &link{ifi: ifi, sent: sent}
	var err error
	if l.arp, err = listen(ifi, ethernet.EtherTypeARP, nil); err != nil {
		return nil, fmt.Errorf("open ARP socket on %s: %w", ifi.Name, err)
	}
	if l.nd, err = listen(ifi, ethernet.EtherTypeIPv6, naFilter); err != nil {
		l.arp.Close()
		return nil, fmt.Errorf("open IPv6 socket on %s: %w", ifi.Name, err)
	}
	go l.read(l.arp, hooks)
	go l.read(l.nd, hooks)
	return l, nil
}

// read reports every claim seen on c until c is closed. Packet sockets also
// see our own outgoing frames; the caller tells them apart by MAC.
func (l *link) read(c net.PacketConn, hooks linkHooks) {
	buf := make([]byte, 1<<16)
	for {
		n, _, err := c.ReadFrom(buf)
		if err != nil {
			if l.closed.Load() {
				return
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			hooks.readErr(l, err)
			return
		}
		if c, err := parseClaim(buf[:n]); err == nil {
			hooks.claim(l, c)
		}
	}
}

func (l *link) close() {
	l.closed.Store(true)
	l.arp.Close()
	l.nd.Close()
}

func (l *link) write(c net.PacketConn, frame []byte) error {
	if _, err := c.WriteTo(frame, &packet.Addr{HardwareAddr: frame[:6]}); err != nil {
		return err
	}
	l.sent.Add(1)
	return nil
}

// announce tells the segment that vip is at our MAC: for IPv4 both ARP
// forms, since some hosts and switches heed only one of them; for IPv6 an
// unsolicited neighbour advertisement.
func (l *link) announce(vip netip.Addr) error {
	mac := l.ifi.HardwareAddr
	if vip.Is6() {
		f, err := unsolicitedNA(mac, vip)
		if err != nil {
			return err
		}
		return l.write(l.nd, f)
	}
	req, err := garpRequest(mac, vip)
	if err != nil {
		return err
	}
	rep, err := garpReply(mac, vip)
	if err != nil {
		return err
	}
	return errors.Join(l.write(l.arp, req), l.write(l.arp, rep))
}

// probe asks whether another host answers for vip.
func (l *link) probe(vip netip.Addr) error {
	mac := l.ifi.HardwareAddr
	if vip.Is6() {
		f, err := dadProbe(mac, vip)
		if err != nil {
			return err
		}
		return l.write(l.nd, f)
	}
	f, err := arpProbe(mac, vip)
	if err != nil {
		return err
	}
	return l.write(l.arp, f)
}
