package vrrp

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"
	"unsafe"

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
	// The destination lists of multicast adverts, built once so that
	// sending does not allocate.
	groupsV4 = [1]netip.Addr{groupV4}
	groupsV6 = [1]netip.Addr{groupV6}
)

// received is one datagram read from a VRRP socket. data points into the
// engine's receive buffer and is valid until the next read.
type received struct {
	data    []byte
	src     netip.Addr
	dst     netip.Addr
	ifindex int
	ttl     int
	at      time.Time
}

// transport is one raw protocol-112 socket of one address family. Every
// instance of that family shares it: adverts are told apart by interface
// and VRID.
//
// It talks to the socket with plain sendmsg/recvmsg system calls, not
// through the Go network poller: the engine's timing loop waits on the
// socket itself with ppoll on its own (real-time) thread, so neither an
// advert's arrival nor its departure waits for a goroutine of the runtime
// to be scheduled. The message headers and control buffers live in the
// transport, so sending and receiving do not allocate. Only the engine's
// loop sends and receives.
type transport struct {
	v6 bool
	fd int
	// hdr: received IPv4 datagrams start with the IP header (raw sockets).
	hdr bool
	// port is the destination port: 0 for raw sockets (tests use UDP).
	port int

	mu     sync.Mutex
	joined map[int]bool

	smsg  unix.Msghdr
	siov  unix.Iovec
	sname unix.RawSockaddrInet6 // large enough for either family
	soob  [8]uint64             // aligned for a Cmsghdr

	rmsg  unix.Msghdr
	riov  unix.Iovec
	rname unix.RawSockaddrInet6
	roob  [16]uint64
}

func listenTransport(v6 bool) (*transport, error) {
	fam, name := unix.AF_INET, "IPv4"
	if v6 {
		fam, name = unix.AF_INET6, "IPv6"
	}
	fd, err := unix.Socket(fam, unix.SOCK_RAW|unix.SOCK_CLOEXEC, protoVRRP)
	if err != nil {
		return nil, fmt.Errorf("open VRRP socket (%s, protocol 112): %w", name, err)
	}
	if err := setupSocket(fd, v6); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("set up VRRP socket (%s): %w", name, err)
	}
	return newTransport(fd, v6, !v6, 0), nil
}

// setupSocket asks for the receive ancillary data the engine checks
// (interface, destination, TTL or hop limit) and sets the TTL of sent
// adverts to 255. Our own multicast adverts must not come back to us.
func setupSocket(fd int, v6 bool) error {
	if v6 {
		return errors.Join(
			unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_RECVPKTINFO, 1),
			unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_RECVHOPLIMIT, 1),
			unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_MULTICAST_HOPS, vrrpTTL),
			unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_UNICAST_HOPS, vrrpTTL),
			unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_MULTICAST_LOOP, 0),
		)
	}
	return errors.Join(
		unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_PKTINFO, 1),
		unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_RECVTTL, 1),
		unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_MULTICAST_TTL, vrrpTTL),
		unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_TTL, vrrpTTL),
		unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_MULTICAST_LOOP, 0),
	)
}

// newTransport wraps a socket set up by setupSocket.
func newTransport(fd int, v6, hdr bool, port int) *transport {
	t := &transport{v6: v6, fd: fd, hdr: hdr, port: port, joined: map[int]bool{}}
	t.smsg.Name = (*byte)(unsafe.Pointer(&t.sname))
	t.smsg.Iov = &t.siov
	t.smsg.SetIovlen(1)
	t.smsg.Control = (*byte)(unsafe.Pointer(&t.soob[0]))
	t.rmsg.Name = (*byte)(unsafe.Pointer(&t.rname))
	t.rmsg.Iov = &t.riov
	t.rmsg.SetIovlen(1)
	t.rmsg.Control = (*byte)(unsafe.Pointer(&t.roob[0]))
	return t
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
		mreq := unix.IPv6Mreq{Multiaddr: groupV6.As16(), Interface: uint32(ifi.Index)}
		err = unix.SetsockoptIPv6Mreq(t.fd, unix.IPPROTO_IPV6, unix.IPV6_JOIN_GROUP, &mreq)
	} else {
		mreq := unix.IPMreqn{Multiaddr: groupV4.As4(), Ifindex: int32(ifi.Index)}
		err = unix.SetsockoptIPMreqn(t.fd, unix.IPPROTO_IP, unix.IP_ADD_MEMBERSHIP, &mreq)
	}
	if err != nil {
		return fmt.Errorf("join VRRP group on %s: %w", ifi.Name, err)
	}
	t.joined[ifi.Index] = true
	return nil
}

// send transmits one advert out of ifindex from src to dst (the VRRP group
// or a unicast peer). The interface and source go in a PKTINFO control
// message, as the RFC wants the primary address as source whatever the
// routing table says.
func (t *transport) send(b []byte, ifindex int, src, dst netip.Addr) error {
	if len(b) == 0 {
		return nil
	}
	t.header(&t.smsg, &t.siov, &t.sname, &t.soob, b, ifindex, src, dst)
	_, _, errno := unix.Syscall(unix.SYS_SENDMSG, uintptr(t.fd), uintptr(unsafe.Pointer(&t.smsg)), unix.MSG_DONTWAIT)
	if errno != 0 {
		return errno
	}
	return nil
}

// header fills in msg, with iov, name and oob as its buffers, to send b
// out of ifindex from src to dst (b is not empty).
func (t *transport) header(msg *unix.Msghdr, iov *unix.Iovec, name *unix.RawSockaddrInet6, oob *[8]uint64, b []byte, ifindex int, src, dst netip.Addr) {
	iov.Base = &b[0]
	iov.SetLen(len(b))
	msg.Name = (*byte)(unsafe.Pointer(name))
	msg.Iov = iov
	msg.SetIovlen(1)
	msg.Control = (*byte)(unsafe.Pointer(&oob[0]))
	h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
	data := unsafe.Add(unsafe.Pointer(&oob[0]), unix.CmsgLen(0))
	if t.v6 {
		*name = unix.RawSockaddrInet6{Family: unix.AF_INET6, Addr: dst.As16()}
		name.Port = htons(uint16(t.port))
		if dst.IsLinkLocalUnicast() || dst.IsLinkLocalMulticast() {
			name.Scope_id = uint32(ifindex)
		}
		msg.Namelen = unix.SizeofSockaddrInet6
		h.Level, h.Type = unix.IPPROTO_IPV6, unix.IPV6_PKTINFO
		h.SetLen(unix.CmsgLen(unix.SizeofInet6Pktinfo))
		*(*unix.Inet6Pktinfo)(data) = unix.Inet6Pktinfo{Addr: src.As16(), Ifindex: uint32(ifindex)}
		msg.SetControllen(unix.CmsgSpace(unix.SizeofInet6Pktinfo))
		return
	}
	sa := (*unix.RawSockaddrInet4)(unsafe.Pointer(name))
	*sa = unix.RawSockaddrInet4{Family: unix.AF_INET, Addr: dst.As4()}
	sa.Port = htons(uint16(t.port))
	msg.Namelen = unix.SizeofSockaddrInet4
	h.Level, h.Type = unix.IPPROTO_IP, unix.IP_PKTINFO
	h.SetLen(unix.CmsgLen(unix.SizeofInet4Pktinfo))
	*(*unix.Inet4Pktinfo)(data) = unix.Inet4Pktinfo{Ifindex: int32(ifindex), Spec_dst: src.As4()}
	msg.SetControllen(unix.CmsgSpace(unix.SizeofInet4Pktinfo))
}

// read takes the next datagram off the socket without waiting; it returns
// unix.EAGAIN when none is queued.
func (t *transport) read(buf []byte) (received, error) {
	var r received
	t.riov.Base = &buf[0]
	t.riov.SetLen(len(buf))
	t.rmsg.Namelen = unix.SizeofSockaddrInet6
	t.rmsg.SetControllen(len(t.roob) * 8)
	t.rmsg.Flags = 0
	n, _, errno := unix.Syscall(unix.SYS_RECVMSG, uintptr(t.fd), uintptr(unsafe.Pointer(&t.rmsg)), unix.MSG_DONTWAIT)
	if errno != 0 {
		return r, errno
	}
	r.at = time.Now()
	r.data = buf[:n]
	r.ttl = -1
	if t.v6 {
		r.src = netip.AddrFrom16(t.rname.Addr)
	} else {
		r.src = netip.AddrFrom4((*unix.RawSockaddrInet4)(unsafe.Pointer(&t.rname)).Addr)
	}
	t.control(&r)
	if t.hdr {
		// A raw IPv4 socket hands over the IP header too: the payload
		// starts after it, and its TTL is the one that arrived.
		b := r.data
		if len(b) < 20 || b[0]>>4 != 4 || int(b[0]&0x0f)*4 > len(b) || int(b[0]&0x0f) < 5 {
			r.data = b[:0]
			return r, nil
		}
		r.ttl = int(b[8])
		r.data = b[int(b[0]&0x0f)*4:]
	}
	return r, nil
}

// control reads the interface, destination and TTL or hop limit from the
// ancillary data of the last datagram, without allocating.
func (t *transport) control(r *received) {
	n := int(t.rmsg.Controllen)
	base := unsafe.Pointer(&t.roob[0])
	hlen := unix.CmsgLen(0)
	for off := 0; off+unix.SizeofCmsghdr <= n; {
		h := (*unix.Cmsghdr)(unsafe.Add(base, off))
		l := int(h.Len)
		if l < hlen || off+l > n {
			return
		}
		data := unsafe.Add(base, off+hlen)
		dlen := l - hlen
		switch {
		case !t.v6 && h.Level == unix.IPPROTO_IP && h.Type == unix.IP_PKTINFO && dlen >= unix.SizeofInet4Pktinfo:
			pi := (*unix.Inet4Pktinfo)(data)
			r.ifindex = int(pi.Ifindex)
			r.dst = netip.AddrFrom4(pi.Addr)
		case !t.v6 && h.Level == unix.IPPROTO_IP && h.Type == unix.IP_TTL && dlen >= 4:
			r.ttl = int(*(*int32)(data))
		case t.v6 && h.Level == unix.IPPROTO_IPV6 && h.Type == unix.IPV6_PKTINFO && dlen >= unix.SizeofInet6Pktinfo:
			pi := (*unix.Inet6Pktinfo)(data)
			r.ifindex = int(pi.Ifindex)
			r.dst = netip.AddrFrom16(pi.Addr)
		case t.v6 && h.Level == unix.IPPROTO_IPV6 && h.Type == unix.IPV6_HOPLIMIT && dlen >= 4:
			r.ttl = int(*(*int32)(data))
		}
		off += unix.CmsgSpace(dlen)
	}
}

func (t *transport) close() error {
	return unix.Close(t.fd)
}

func htons(v uint16) uint16 {
	b := (*[2]byte)(unsafe.Pointer(&v))
	b[0], b[1] = byte(v>>8), byte(v)
	return v
}
