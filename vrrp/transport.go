package vrrp

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"
)

// VRRP's IANA assignments (RFC 5798 5.1.1.2, 5.1.2.2).
const (
	protoVRRP = 112
	vrrpTTL   = 255
)

var (
	groupV4 = netip.MustParseAddr("224.0.0.18")
	groupV6 = netip.MustParseAddr("ff02::12")
)

// received is one datagram read from a VRRP socket.
type received struct {
	data []byte
	// buf is the pooled buffer data points into, returned whole.
	buf     *[]byte
	src     netip.Addr
	dst     netip.Addr
	ifindex int
	ttl     int
	at      time.Time
}

// transport is one raw protocol-112 socket of one address family. Every
// instance of that family shares it: adverts are told apart by interface
// and VRID.
type transport struct {
	v6  bool
	p4  *ipv4.PacketConn
	p6  *ipv6.PacketConn
	raw syscall.RawConn

	mu     sync.Mutex
	joined map[int]bool
}

func listenTransport(v6 bool) (*transport, error) {
	t := &transport{v6: v6, joined: map[int]bool{}}
	if !v6 {
		c, err := net.ListenPacket("ip4:112", "0.0.0.0")
		if err != nil {
			return nil, fmt.Errorf("open VRRP socket (IPv4, protocol 112): %w", err)
		}
		p := ipv4.NewPacketConn(c)
		err = errors.Join(
			p.SetControlMessage(ipv4.FlagTTL|ipv4.FlagDst|ipv4.FlagInterface, true),
			p.SetMulticastTTL(vrrpTTL),
			p.SetTTL(vrrpTTL),
			// Our own multicast adverts must not come back to us.
			p.SetMulticastLoopback(false),
		)
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("set up VRRP socket (IPv4): %w", err)
		}
		t.p4 = p
		t.raw, err = c.(*net.IPConn).SyscallConn()
		if err != nil {
			c.Close()
			return nil, err
		}
		return t, nil
	}
	c, err := net.ListenPacket("ip6:112", "::")
	if err != nil {
		return nil, fmt.Errorf("open VRRP socket (IPv6, protocol 112): %w", err)
	}
	p := ipv6.NewPacketConn(c)
	err = errors.Join(
		p.SetControlMessage(ipv6.FlagHopLimit|ipv6.FlagDst|ipv6.FlagInterface, true),
		p.SetMulticastHopLimit(vrrpTTL),
		p.SetHopLimit(vrrpTTL),
		p.SetMulticastLoopback(false),
	)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("set up VRRP socket (IPv6): %w", err)
	}
	t.p6 = p
	t.raw, err = c.(*net.IPConn).SyscallConn()
	if err != nil {
		c.Close()
		return nil, err
	}
	return t, nil
}

// join subscribes to the VRRP group on an interface, once.
func (t *transport) join(ifi *net.Interface) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.joined[ifi.Index] {
		return nil
	}
	var err error
	if t.v6 {
		err = t.p6.JoinGroup(ifi, &net.IPAddr{IP: groupV6.AsSlice()})
	} else {
		err = t.p4.JoinGroup(ifi, &net.IPAddr{IP: groupV4.AsSlice()})
	}
	if err != nil {
		return fmt.Errorf("join VRRP group on %s: %w", ifi.Name, err)
	}
	t.joined[ifi.Index] = true
	return nil
}

// send transmits one advert out of ifindex from src to dst (the VRRP group
// or a unicast peer).
func (t *transport) send(b []byte, ifindex int, src, dst netip.Addr) error {
	var err error
	if t.v6 {
		_, err = t.p6.WriteTo(b, &ipv6.ControlMessage{IfIndex: ifindex, Src: src.AsSlice()}, &net.IPAddr{IP: dst.AsSlice()})
	} else {
		_, err = t.p4.WriteTo(b, &ipv4.ControlMessage{IfIndex: ifindex, Src: src.AsSlice()}, &net.IPAddr{IP: dst.AsSlice()})
	}
	return err
}

// read blocks for the next datagram.
func (t *transport) read(buf []byte) (received, error) {
	var r received
	if t.v6 {
		n, cm, src, err := t.p6.ReadFrom(buf)
		if err != nil {
			return r, err
		}
		r.data = buf[:n]
		if cm != nil {
			r.ttl, r.ifindex = cm.HopLimit, cm.IfIndex
			r.dst, _ = netip.AddrFromSlice(cm.Dst)
		}
		if a, ok := src.(*net.IPAddr); ok {
			r.src, _ = netip.AddrFromSlice(a.IP)
		}
	} else {
		n, cm, src, err := t.p4.ReadFrom(buf)
		if err != nil {
			return r, err
		}
		r.data = buf[:n]
		if cm != nil {
			r.ttl, r.ifindex = cm.TTL, cm.IfIndex
			r.dst, _ = netip.AddrFromSlice(cm.Dst)
			r.dst = r.dst.Unmap()
		}
		if a, ok := src.(*net.IPAddr); ok {
			r.src, _ = netip.AddrFromSlice(a.IP)
			r.src = r.src.Unmap()
		}
	}
	r.at = time.Now()
	return r, nil
}

// pending reports whether a datagram waits in the socket's receive queue.
// Before a backup acts on an expired Master_Down_Timer it makes sure no
// advert is queued unread: after a stall (SIGSTOP, a paused VM) the timer
// and the adverts that arrived meanwhile become ready together.
func (t *transport) pending() bool {
	var n int
	var ierr error
	err := t.raw.Control(func(fd uintptr) {
		n, ierr = unix.IoctlGetInt(int(fd), unix.SIOCINQ)
	})
	return err == nil && ierr == nil && n > 0
}

func (t *transport) close() error {
	if t.v6 {
		return t.p6.Close()
	}
	return t.p4.Close()
}
