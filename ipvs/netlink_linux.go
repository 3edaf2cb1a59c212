//go:build linux

package ipvs

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// The kernel's IPVS generic netlink interface, from
// include/uapi/linux/ip_vs.h.
const (
	genlName    = "IPVS" // IPVS_GENL_NAME
	genlVersion = 1      // IPVS_GENL_VERSION

	// IPVS_CMD_*
	cmdNewService = 1
	cmdSetService = 2
	cmdDelService = 3
	cmdGetService = 4
	cmdNewDest    = 5
	cmdSetDest    = 6
	cmdDelDest    = 7
	cmdGetDest    = 8
	cmdSetConfig  = 12
	cmdGetConfig  = 13

	// IPVS_CMD_ATTR_*: the first level of a message.
	cmdAttrService       = 1 // nested svcAttr*
	cmdAttrDest          = 2 // nested destAttr*
	cmdAttrTimeoutTCP    = 4 // u32 seconds
	cmdAttrTimeoutTCPFin = 5 // u32 seconds
	cmdAttrTimeoutUDP    = 6 // u32 seconds

	// IPVS_SVC_ATTR_*
	svcAttrAF        = 1  // u16
	svcAttrProtocol  = 2  // u16
	svcAttrAddr      = 3  // union nf_inet_addr (16 bytes)
	svcAttrPort      = 4  // be16
	svcAttrFWMark    = 5  // u32
	svcAttrSchedName = 6  // NUL-terminated string, at most 15 bytes
	svcAttrFlags     = 7  // struct ip_vs_flags {u32 flags; u32 mask}
	svcAttrTimeout   = 8  // u32 seconds
	svcAttrNetmask   = 9  // be32 mask (IPv4) or u32 prefix length (IPv6)
	svcAttrStats     = 10 // nested statsAttr*, 32-bit
	svcAttrPEName    = 11 // string
	svcAttrStats64   = 12 // nested statsAttr*, 64-bit

	// IPVS_DEST_ATTR_*
	destAttrAddr         = 1  // union nf_inet_addr (16 bytes)
	destAttrPort         = 2  // be16
	destAttrFwdMethod    = 3  // u32 (IP_VS_CONN_F_FWD_MASK bits)
	destAttrWeight       = 4  // u32 (int in the kernel)
	destAttrUThresh      = 5  // u32
	destAttrLThresh      = 6  // u32
	destAttrActiveConns  = 7  // u32
	destAttrInactConns   = 8  // u32
	destAttrPersistConns = 9  // u32
	destAttrStats        = 10 // nested statsAttr*, 32-bit
	destAttrAddrFamily   = 11 // u16
	destAttrStats64      = 12 // nested statsAttr*, 64-bit
	destAttrTunType      = 13 // u8
	destAttrTunPort      = 14 // be16
	destAttrTunFlags     = 15 // u16

	// IPVS_STATS_ATTR_*. In STATS, CONNS, INPKTS, OUTPKTS and the rates
	// are u32 and the byte counters u64; in STATS64 everything is u64.
	statsAttrConns    = 1
	statsAttrInPkts   = 2
	statsAttrOutPkts  = 3
	statsAttrInBytes  = 4
	statsAttrOutBytes = 5
	statsAttrCPS      = 6
	statsAttrInPPS    = 7
	statsAttrOutPPS   = 8
	statsAttrInBPS    = 9
	statsAttrOutBPS   = 10

	fwdMask = 0x7 // IP_VS_CONN_F_FWD_MASK

	// nfInetAddrLen is sizeof(union nf_inet_addr): addresses travel in 16
	// bytes, IPv4 in the first 4 (as ipvsadm and the kernel send them).
	nfInetAddrLen = 16

	// schedNameMax is IP_VS_SCHEDNAME_MAXLEN without the NUL.
	schedNameMax = 15

	// nlaTypeMask strips NLA_F_NESTED and NLA_F_NET_BYTEORDER.
	nlaTypeMask = 0x3fff
)

// requestTimeout bounds the wait for each reply from the kernel.
const requestTimeout = 10 * time.Second

// NetlinkKernel is the IPVS table of one network namespace, programmed
// through the kernel's generic netlink family "IPVS". It implements Kernel.
//
// It owns one netlink socket, opened by NewKernel in the network namespace
// of the thread that called it; the socket stays in that namespace for its
// whole life, whichever thread later uses it. Its methods serialize on one
// mutex, so it may be shared, but requests do not run in parallel.
type NetlinkKernel struct {
	mu     sync.Mutex
	sock   *nl.NetlinkSocket // nil once closed
	family uint16            // the generic netlink id of "IPVS"
	pid    uint32            // our socket's port id
	seq    uint32
}

var _ Kernel = (*NetlinkKernel)(nil)

// NewKernel opens the IPVS table of the calling thread's network namespace.
// Go moves goroutines between threads: to open the table of another
// namespace, lock the OS thread (runtime.LockOSThread) and switch it to that
// namespace before calling NewKernel. The returned handle keeps using that
// namespace afterwards.
//
// It fails with an error naming the missing module when the kernel has no
// IPVS (the lookup of the family may load ip_vs where modules load on
// demand).
func NewKernel() (*NetlinkKernel, error) {
	sock, err := nl.GetNetlinkSocketAt(netns.None(), netns.None(), unix.NETLINK_GENERIC)
	if err != nil {
		return nil, fmt.Errorf("open generic netlink socket: %w", err)
	}
	tv := unix.NsecToTimeval(requestTimeout.Nanoseconds())
	if err := sock.SetReceiveTimeout(&tv); err != nil {
		sock.Close()
		return nil, fmt.Errorf("generic netlink socket: %w", err)
	}
	if err := sock.SetSendTimeout(&tv); err != nil {
		sock.Close()
		return nil, fmt.Errorf("generic netlink socket: %w", err)
	}
	// Extended acks carry the kernel's reason for policy errors; older
	// kernels without it still work.
	_ = sock.SetExtAck(true)
	pid, err := sock.GetPid()
	if err != nil {
		sock.Close()
		return nil, fmt.Errorf("generic netlink socket: %w", err)
	}
	k := &NetlinkKernel{sock: sock, pid: pid}
	id, err := k.lookupFamily(genlName)
	if err != nil {
		sock.Close()
		return nil, errNoIPVS(err)
	}
	k.family = id
	return k, nil
}

// Close releases the netlink socket. Later calls fail.
func (k *NetlinkKernel) Close() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.sock != nil {
		k.sock.Close()
		k.sock = nil
	}
	return nil
}

var errClosed = errors.New("IPVS netlink handle is closed")

// lookupFamily asks the generic netlink controller for a family's id.
func (k *NetlinkKernel) lookupFamily(name string) (uint16, error) {
	req := nl.NewNetlinkRequest(nl.GENL_ID_CTRL, unix.NLM_F_ACK)
	req.AddData(&genlHeader{cmd: nl.GENL_CTRL_CMD_GETFAMILY, version: nl.GENL_CTRL_VERSION})
	req.AddData(nl.NewRtAttr(nl.GENL_CTRL_ATTR_FAMILY_NAME, nl.ZeroTerminated(name)))
	msgs, err := k.executeType(req, nl.GENL_ID_CTRL)
	if err != nil {
		return 0, err
	}
	for _, m := range msgs {
		attrs, err := parseAttrs(m[genlHeaderLen:])
		if err != nil {
			return 0, err
		}
		if a, ok := attrs[nl.GENL_CTRL_ATTR_FAMILY_ID]; ok && len(a) >= 2 {
			return native.Uint16(a), nil
		}
	}
	return 0, fmt.Errorf("controller reply for family %q has no id", name)
}

// Services lists every service of the namespace with its destinations and
// counters. Address services come back with ServiceKey.IPv6 false (the
// family is the address's); fwmark services with a zero Address.
func (k *NetlinkKernel) Services() ([]Entry, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	msgs, err := k.execute(newRequest(k.family, cmdGetService, unix.NLM_F_DUMP))
	if err != nil {
		return nil, fmt.Errorf("list services: %w", err)
	}
	entries := make([]Entry, 0, len(msgs))
	for _, m := range msgs {
		e, err := decodeServiceMsg(m)
		if err != nil {
			return nil, fmt.Errorf("list services: %w", err)
		}
		entries = append(entries, e)
	}
	for i := range entries {
		if entries[i].Destinations, err = k.destinations(entries[i].Service.Key); err != nil {
			return nil, err
		}
	}
	return entries, nil
}

// Service reads one service and its destinations.
func (k *NetlinkKernel) Service(key ServiceKey) (Entry, bool, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	svc, err := serviceAttr(Service{Key: key}, false)
	if err != nil {
		return Entry{}, false, fmt.Errorf("read service %s: %w", key, err)
	}
	// A single GET ends with no DONE; the ACK marks its end.
	msgs, err := k.execute(newRequest(k.family, cmdGetService, unix.NLM_F_ACK, svc))
	if errors.Is(err, unix.ESRCH) || errors.Is(err, unix.ENOENT) {
		return Entry{}, false, nil
	}
	if err == nil && len(msgs) != 1 {
		err = fmt.Errorf("%d replies, want 1", len(msgs))
	}
	if err != nil {
		return Entry{}, false, fmt.Errorf("read service %s: %w", key, err)
	}
	e, err := decodeServiceMsg(msgs[0])
	if err != nil {
		return Entry{}, false, fmt.Errorf("read service %s: %w", key, err)
	}
	if e.Destinations, err = k.destinations(e.Service.Key); err != nil {
		return Entry{}, false, err
	}
	return e, true, nil
}

// destinations dumps a service's destinations; the caller holds k.mu.
func (k *NetlinkKernel) destinations(key ServiceKey) ([]DestEntry, error) {
	svc, err := serviceAttr(Service{Key: key}, false)
	if err != nil {
		return nil, fmt.Errorf("list destinations of %s: %w", key, err)
	}
	msgs, err := k.execute(newRequest(k.family, cmdGetDest, unix.NLM_F_DUMP, svc))
	if err != nil {
		return nil, fmt.Errorf("list destinations of %s: %w", key, err)
	}
	var out []DestEntry
	for _, m := range msgs {
		d, err := decodeDestMsg(m, serviceFamily(key))
		if err != nil {
			return nil, fmt.Errorf("list destinations of %s: %w", key, err)
		}
		out = append(out, d)
	}
	return out, nil
}

// NewService adds a service without destinations.
func (k *NetlinkKernel) NewService(s Service) error {
	return k.serviceCmd(cmdNewService, "new service", s, true)
}

// UpdateService changes the scheduler, flags, timeout and netmask of an
// existing service.
func (k *NetlinkKernel) UpdateService(s Service) error {
	return k.serviceCmd(cmdSetService, "update service", s, true)
}

// DelService removes a service and its destinations.
func (k *NetlinkKernel) DelService(key ServiceKey) error {
	return k.serviceCmd(cmdDelService, "delete service", Service{Key: key}, false)
}

func (k *NetlinkKernel) serviceCmd(cmd uint8, op string, s Service, full bool) error {
	op = op + " " + s.Key.String()
	attr, err := serviceAttr(s, full)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if _, err := k.execute(newRequest(k.family, cmd, unix.NLM_F_ACK, attr)); err != nil {
		return opError(op, err, explain(cmd, err, &s, nil))
	}
	return nil
}

// NewDestination adds a real server to a service.
func (k *NetlinkKernel) NewDestination(key ServiceKey, d Destination) error {
	return k.destCmd(cmdNewDest, "new destination", key, d, true)
}

// UpdateDestination changes a real server's forwarding method, weight,
// thresholds and tunnel type in place.
func (k *NetlinkKernel) UpdateDestination(key ServiceKey, d Destination) error {
	return k.destCmd(cmdSetDest, "update destination", key, d, true)
}

// DelDestination removes a real server from a service.
func (k *NetlinkKernel) DelDestination(key ServiceKey, dk DestKey) error {
	return k.destCmd(cmdDelDest, "delete destination", key, Destination{Key: dk}, false)
}

func (k *NetlinkKernel) destCmd(cmd uint8, op string, key ServiceKey, d Destination, full bool) error {
	op = fmt.Sprintf("%s %s in %s", op, d.Key, key)
	svc, err := serviceAttr(Service{Key: key}, false)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	dst, err := destAttr(d, full)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if _, err := k.execute(newRequest(k.family, cmd, unix.NLM_F_ACK, svc, dst)); err != nil {
		return opError(op, err, explain(cmd, err, &Service{Key: key}, &d))
	}
	return nil
}

// Timeouts reads the global TCP, TCP FIN and UDP connection timeouts.
func (k *NetlinkKernel) Timeouts() (Timeouts, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	msgs, err := k.execute(newRequest(k.family, cmdGetConfig, unix.NLM_F_ACK))
	if err != nil {
		return Timeouts{}, fmt.Errorf("get timeouts: %w", err)
	}
	if len(msgs) != 1 {
		return Timeouts{}, fmt.Errorf("get timeouts: %d replies, want 1", len(msgs))
	}
	t, err := decodeConfigMsg(msgs[0])
	if err != nil {
		return Timeouts{}, fmt.Errorf("get timeouts: %w", err)
	}
	return t, nil
}

// SetTimeouts sets the non-zero timeouts of t; zero fields keep the
// kernel's value. Timeouts are whole seconds.
func (k *NetlinkKernel) SetTimeouts(t Timeouts) error {
	attrs, err := timeoutAttrs(t)
	if err != nil {
		return fmt.Errorf("set timeouts: %w", err)
	}
	if len(attrs) == 0 {
		return nil
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if _, err := k.execute(newRequest(k.family, cmdSetConfig, unix.NLM_F_ACK, attrs...)); err != nil {
		return fmt.Errorf("set timeouts tcp %v tcpfin %v udp %v: %w", t.TCP, t.TCPFin, t.UDP, err)
	}
	return nil
}

// execute sends req and collects the payloads of the IPVS family's replies
// until the final ack (NLM_F_ACK) or the end of a dump (NLM_F_DUMP).
// The caller holds k.mu.
func (k *NetlinkKernel) execute(req *nl.NetlinkRequest) ([][]byte, error) {
	return k.executeType(req, k.family)
}

func (k *NetlinkKernel) executeType(req *nl.NetlinkRequest, family uint16) ([][]byte, error) {
	if k.sock == nil {
		return nil, errClosed
	}
	k.seq++
	req.Seq = k.seq
	if err := k.sock.Send(req); err != nil {
		return nil, fmt.Errorf("netlink send: %w", err)
	}
	var out [][]byte
	for {
		msgs, from, err := k.sock.Receive()
		if err != nil {
			if errors.Is(err, unix.EAGAIN) {
				return nil, fmt.Errorf("no reply from the kernel within %v: %w", requestTimeout, err)
			}
			return nil, fmt.Errorf("netlink receive: %w", err)
		}
		if from.Pid != nl.PidKernel {
			continue
		}
		for _, m := range msgs {
			// Replies to an earlier request that timed out are skipped.
			if m.Header.Seq != req.Seq || m.Header.Pid != k.pid {
				continue
			}
			switch m.Header.Type {
			case unix.NLMSG_DONE:
				if len(m.Data) >= 4 {
					if e := int32(native.Uint32(m.Data)); e < 0 {
						return nil, syscall.Errno(-e)
					}
				}
				return out, nil
			case unix.NLMSG_ERROR:
				if err := parseNlmsgerr(m.Data, m.Header.Flags); err != nil {
					return nil, err
				}
				return out, nil // the ack
			case family:
				if len(m.Data) < genlHeaderLen {
					return nil, fmt.Errorf("short generic netlink message (%d bytes)", len(m.Data))
				}
				out = append(out, m.Data)
			}
		}
	}
}

// native is the host byte order, in which netlink carries plain integers.
var native = nl.NativeEndian()

// genlHeaderLen is sizeof(struct genlmsghdr): cmd, version, reserved u16.
const genlHeaderLen = 4

// genlHeader is struct genlmsghdr. (nl.Genlmsg serializes its 2-byte
// struct as 4 bytes read past its end.)
type genlHeader struct{ cmd, version uint8 }

func (h *genlHeader) Len() int          { return genlHeaderLen }
func (h *genlHeader) Serialize() []byte { return []byte{h.cmd, h.version, 0, 0} }

// newRequest builds an IPVS request; flags are NLM_F_ACK or NLM_F_DUMP
// (NLM_F_REQUEST is implied).
func newRequest(family uint16, cmd uint8, flags int, attrs ...*nl.RtAttr) *nl.NetlinkRequest {
	req := nl.NewNetlinkRequest(int(family), flags)
	req.AddData(&genlHeader{cmd: cmd, version: genlVersion})
	for _, a := range attrs {
		req.AddData(a)
	}
	return req
}

// kernelError is an errno from the kernel with its extended-ack message.
type kernelError struct {
	errno syscall.Errno
	msg   string
}

func (e *kernelError) Error() string { return e.errno.Error() + " (kernel: " + e.msg + ")" }
func (e *kernelError) Unwrap() error { return e.errno }

// parseNlmsgerr decodes the payload of an NLMSG_ERROR message: struct
// nlmsgerr {int error; struct nlmsghdr msg; ...}, then, with NLM_F_ACK_TLVS,
// attributes after the echoed request (just its header when NLM_F_CAPPED).
// A zero error is an ack and returns nil.
func parseNlmsgerr(b []byte, flags uint16) error {
	if len(b) < 4 {
		return fmt.Errorf("short netlink error message (%d bytes)", len(b))
	}
	e := int32(native.Uint32(b))
	if e == 0 {
		return nil
	}
	errno := syscall.Errno(-e)
	if flags&unix.NLM_F_ACK_TLVS == 0 || len(b) < 4+unix.SizeofNlMsghdr {
		return errno
	}
	skip := 4 + unix.SizeofNlMsghdr
	if flags&unix.NLM_F_CAPPED == 0 {
		skip = 4 + nlmAlign(int(native.Uint32(b[4:])))
	}
	if skip > len(b) {
		return errno
	}
	attrs, err := parseAttrs(b[skip:])
	if err != nil {
		return errno
	}
	if msg, ok := attrs[unix.NLMSGERR_ATTR_MSG]; ok {
		if s := cString(msg); s != "" {
			return &kernelError{errno: errno, msg: s}
		}
	}
	return errno
}

func nlmAlign(n int) int { return (n + unix.NLMSG_ALIGNTO - 1) &^ (unix.NLMSG_ALIGNTO - 1) }

// ---- encoding ----

// serviceFamily is the address family of a service.
func serviceFamily(k ServiceKey) uint16 {
	if k.FWMark != 0 {
		if k.IPv6 {
			return unix.AF_INET6
		}
		return unix.AF_INET
	}
	if k.Address.Is4() {
		return unix.AF_INET
	}
	return unix.AF_INET6
}

func addrFamily(a netip.Addr) uint16 {
	if a.Is4() {
		return unix.AF_INET
	}
	return unix.AF_INET6
}

func checkKey(k ServiceKey) error {
	if k.FWMark != 0 {
		if k.Address.IsValid() || k.Port != 0 || k.Protocol != 0 {
			return errors.New("a firewall-mark service has no protocol, address or port")
		}
		return nil
	}
	switch {
	case k.Protocol == 0:
		return errors.New("no protocol and no firewall mark")
	case !k.Address.IsValid():
		return errors.New("no address")
	case k.Address.Zone() != "":
		return fmt.Errorf("address %s has a zone", k.Address)
	}
	return nil
}

// rawAddr is a's union nf_inet_addr.
func rawAddr(a netip.Addr) []byte {
	b := make([]byte, nfInetAddrLen)
	if a.Is4() {
		v := a.As4()
		copy(b, v[:])
	} else {
		v := a.As16()
		copy(b, v[:])
	}
	return b
}

func be16(v uint16) []byte {
	b := make([]byte, 2)
	binary.BigEndian.PutUint16(b, v)
	return b
}

func u16(v uint16) []byte { return nl.Uint16Attr(v) }
func u32(v uint32) []byte { return nl.Uint32Attr(v) }

// netmaskValue encodes a persistence granularity: IPv4 a network-order mask
// (0xffffffff for /32), IPv6 the prefix length as a host-order u32. Zero bits
// means unset (/32, /128).
func netmaskValue(family uint16, bitsLen int) ([]byte, error) {
	if family == unix.AF_INET {
		if bitsLen == 0 {
			bitsLen = 32
		}
		if bitsLen < 1 || bitsLen > 32 {
			return nil, fmt.Errorf("persistence netmask /%d out of range 1..32 for IPv4", bitsLen)
		}
		b := make([]byte, 4)
		binary.BigEndian.PutUint32(b, ^uint32(0)<<(32-bitsLen))
		return b, nil
	}
	if bitsLen == 0 {
		bitsLen = 128
	}
	if bitsLen < 1 || bitsLen > 128 {
		return nil, fmt.Errorf("persistence prefix length /%d out of range 1..128 for IPv6", bitsLen)
	}
	return u32(uint32(bitsLen)), nil
}

// netmaskBits decodes what netmaskValue encodes. A non-contiguous IPv4 mask
// (only ipvsadm can set one) counts its leading ones.
func netmaskBits(family uint16, v []byte) int {
	if len(v) < 4 {
		return 0
	}
	if family == unix.AF_INET {
		return bits.LeadingZeros32(^binary.BigEndian.Uint32(v))
	}
	return int(native.Uint32(v))
}

func wholeSeconds(what string, d time.Duration) (uint32, error) {
	if d < 0 || d%time.Second != 0 || d/time.Second > math.MaxInt32 {
		return 0, fmt.Errorf("%s %v is not a whole number of seconds in 0..%d", what, d, math.MaxInt32)
	}
	return uint32(d / time.Second), nil
}

// serviceAttr builds IPVS_CMD_ATTR_SERVICE: the identifying attributes, and
// with full the settings NEW_SERVICE and SET_SERVICE require.
func serviceAttr(s Service, full bool) (*nl.RtAttr, error) {
	k := s.Key
	if err := checkKey(k); err != nil {
		return nil, err
	}
	fam := serviceFamily(k)
	a := nl.NewRtAttr(cmdAttrService, nil)
	a.AddRtAttr(svcAttrAF, u16(fam))
	if k.FWMark != 0 {
		a.AddRtAttr(svcAttrFWMark, u32(k.FWMark))
	} else {
		a.AddRtAttr(svcAttrProtocol, u16(uint16(k.Protocol)))
		a.AddRtAttr(svcAttrAddr, rawAddr(k.Address))
		a.AddRtAttr(svcAttrPort, be16(k.Port))
	}
	if !full {
		return a, nil
	}
	if s.Scheduler == "" || len(s.Scheduler) > schedNameMax {
		return nil, fmt.Errorf("scheduler name %q: want 1..%d characters", s.Scheduler, schedNameMax)
	}
	timeout, err := wholeSeconds("persistence timeout", s.Timeout)
	if err != nil {
		return nil, err
	}
	mask, err := netmaskValue(fam, s.NetmaskBits)
	if err != nil {
		return nil, err
	}
	// The kernel must set FlagHashed itself: a service added with it
	// would never be hashed, so never found by packets.
	flags := make([]byte, 8)
	native.PutUint32(flags[0:], s.Flags&^FlagHashed)
	native.PutUint32(flags[4:], ^uint32(0))
	a.AddRtAttr(svcAttrSchedName, nl.ZeroTerminated(s.Scheduler))
	a.AddRtAttr(svcAttrFlags, flags)
	a.AddRtAttr(svcAttrTimeout, u32(timeout))
	a.AddRtAttr(svcAttrNetmask, mask)
	return a, nil
}

// destAttr builds IPVS_CMD_ATTR_DEST. The address family always goes
// along, so a real of the other family than its service's (tunnel
// forwarding) is understood.
func destAttr(d Destination, full bool) (*nl.RtAttr, error) {
	addr := d.Key.Address
	switch {
	case !addr.IsValid():
		return nil, errors.New("no real server address")
	case addr.Zone() != "":
		return nil, fmt.Errorf("real server address %s has a zone", addr)
	}
	a := nl.NewRtAttr(cmdAttrDest, nil)
	a.AddRtAttr(destAttrAddr, rawAddr(addr))
	a.AddRtAttr(destAttrPort, be16(d.Key.Port))
	a.AddRtAttr(destAttrAddrFamily, u16(addrFamily(addr)))
	if !full {
		return a, nil
	}
	switch {
	case d.Forward > Route:
		return nil, fmt.Errorf("unknown forwarding method %v", d.Forward)
	case d.Weight < 0 || d.Weight > math.MaxInt32:
		return nil, fmt.Errorf("weight %d out of range 0..%d", d.Weight, math.MaxInt32)
	case d.LowerThreshold > d.UpperThreshold:
		return nil, fmt.Errorf("lower threshold %d above upper threshold %d", d.LowerThreshold, d.UpperThreshold)
	case d.TunnelType != TunnelIPIP && d.Forward != Tunnel:
		return nil, fmt.Errorf("tunnel type %d on a %v real server", d.TunnelType, d.Forward)
	case d.TunnelType == TunnelGUE:
		// The kernel refuses GUE without a UDP port, which the model
		// does not carry.
		return nil, errors.New("GUE tunnels need a tunnel port, which is not supported")
	case d.TunnelType > TunnelGRE:
		return nil, fmt.Errorf("unknown tunnel type %d", d.TunnelType)
	}
	a.AddRtAttr(destAttrFwdMethod, u32(uint32(d.Forward)))
	a.AddRtAttr(destAttrWeight, u32(uint32(d.Weight)))
	a.AddRtAttr(destAttrUThresh, u32(d.UpperThreshold))
	a.AddRtAttr(destAttrLThresh, u32(d.LowerThreshold))
	if d.Forward == Tunnel {
		a.AddRtAttr(destAttrTunType, []byte{byte(d.TunnelType)})
	}
	return a, nil
}

func timeoutAttrs(t Timeouts) ([]*nl.RtAttr, error) {
	var attrs []*nl.RtAttr
	for _, f := range []struct {
		name string
		attr int
		d    time.Duration
	}{
		{"tcp timeout", cmdAttrTimeoutTCP, t.TCP},
		{"tcpfin timeout", cmdAttrTimeoutTCPFin, t.TCPFin},
		{"udp timeout", cmdAttrTimeoutUDP, t.UDP},
	} {
		s, err := wholeSeconds(f.name, f.d)
		if err != nil {
			return nil, err
		}
		if s != 0 {
			attrs = append(attrs, nl.NewRtAttr(f.attr, u32(s)))
		}
	}
	return attrs, nil
}

// ---- decoding ----

// parseAttrs indexes a run of netlink attributes by type (flags masked off).
func parseAttrs(b []byte) (map[uint16][]byte, error) {
	m := make(map[uint16][]byte)
	for len(b) >= unix.SizeofRtAttr {
		l := int(native.Uint16(b[0:2]))
		t := native.Uint16(b[2:4]) & nlaTypeMask
		if l < unix.SizeofRtAttr || l > len(b) {
			return nil, fmt.Errorf("malformed netlink attribute (type %d, length %d of %d bytes left)", t, l, len(b))
		}
		m[t] = b[unix.SizeofRtAttr:l]
		al := nlmAlign(l)
		if al > len(b) {
			break
		}
		b = b[al:]
	}
	return m, nil
}

func cString(b []byte) string {
	for i, c := range b {
		if c == 0 {
			return string(b[:i])
		}
	}
	return string(b)
}

type attrReader struct {
	attrs map[uint16][]byte
	what  string
	err   error
}

func (r *attrReader) bytes(t uint16, n int, required bool) []byte {
	v, ok := r.attrs[t]
	if !ok {
		if required && r.err == nil {
			r.err = fmt.Errorf("%s: attribute %d missing", r.what, t)
		}
		return nil
	}
	if len(v) < n {
		if r.err == nil {
			r.err = fmt.Errorf("%s: attribute %d has %d bytes, want %d", r.what, t, len(v), n)
		}
		return nil
	}
	return v
}

func (r *attrReader) u8(t uint16) uint8 {
	if v := r.bytes(t, 1, false); v != nil {
		return v[0]
	}
	return 0
}

func (r *attrReader) u16(t uint16, required bool) uint16 {
	if v := r.bytes(t, 2, required); v != nil {
		return native.Uint16(v)
	}
	return 0
}

func (r *attrReader) be16(t uint16, required bool) uint16 {
	if v := r.bytes(t, 2, required); v != nil {
		return binary.BigEndian.Uint16(v)
	}
	return 0
}

func (r *attrReader) u32(t uint16, required bool) uint32 {
	if v := r.bytes(t, 4, required); v != nil {
		return native.Uint32(v)
	}
	return 0
}

func (r *attrReader) addr(t uint16, family uint16) netip.Addr {
	n := 16
	if family == unix.AF_INET {
		n = 4
	}
	v := r.bytes(t, n, true)
	if v == nil {
		return netip.Addr{}
	}
	if family == unix.AF_INET {
		return netip.AddrFrom4([4]byte(v[:4]))
	}
	return netip.AddrFrom16([16]byte(v[:16]))
}

// nested parses the attributes nested in attribute t.
func (r *attrReader) nested(t uint16, what string) *attrReader {
	v, ok := r.attrs[t]
	if !ok {
		return nil
	}
	m, err := parseAttrs(v)
	if err != nil {
		if r.err == nil {
			r.err = fmt.Errorf("%s: %w", what, err)
		}
		return nil
	}
	return &attrReader{attrs: m, what: what}
}

func checkFamily(f uint16) error {
	if f != unix.AF_INET && f != unix.AF_INET6 {
		return fmt.Errorf("unknown address family %d", f)
	}
	return nil
}

// decodeServiceMsg decodes one GET_SERVICE reply (genl header first).
func decodeServiceMsg(b []byte) (Entry, error) {
	if len(b) < genlHeaderLen {
		return Entry{}, errors.New("short service reply")
	}
	top, err := parseAttrs(b[genlHeaderLen:])
	if err != nil {
		return Entry{}, err
	}
	root := &attrReader{attrs: top, what: "service reply"}
	r := root.nested(cmdAttrService, "service")
	if r == nil {
		if root.err != nil {
			return Entry{}, root.err
		}
		return Entry{}, errors.New("service reply without a service")
	}
	var e Entry
	s := &e.Service
	fam := r.u16(svcAttrAF, true)
	if r.err != nil {
		return Entry{}, r.err
	}
	if err := checkFamily(fam); err != nil {
		return Entry{}, fmt.Errorf("service: %w", err)
	}
	if fw, ok := r.attrs[svcAttrFWMark]; ok && len(fw) >= 4 && native.Uint32(fw) != 0 {
		s.Key.FWMark = native.Uint32(fw)
		s.Key.IPv6 = fam == unix.AF_INET6
	} else {
		s.Key.Protocol = Protocol(r.u16(svcAttrProtocol, true))
		s.Key.Address = r.addr(svcAttrAddr, fam)
		s.Key.Port = r.be16(svcAttrPort, true)
	}
	s.Scheduler = cString(r.bytes(svcAttrSchedName, 0, true))
	if f := r.bytes(svcAttrFlags, 8, true); f != nil {
		s.Flags = native.Uint32(f) &^ FlagHashed
	}
	s.Timeout = time.Duration(r.u32(svcAttrTimeout, true)) * time.Second
	if m := r.bytes(svcAttrNetmask, 4, true); m != nil {
		s.NetmaskBits = netmaskBits(fam, m)
	}
	e.Stats = decodeStats(r, svcAttrStats64, svcAttrStats)
	if r.err != nil {
		return Entry{}, r.err
	}
	return e, nil
}

// decodeDestMsg decodes one GET_DEST reply; svcFamily is the family of the
// service, used when the kernel does not name the destination's.
func decodeDestMsg(b []byte, svcFamily uint16) (DestEntry, error) {
	if len(b) < genlHeaderLen {
		return DestEntry{}, errors.New("short destination reply")
	}
	top, err := parseAttrs(b[genlHeaderLen:])
	if err != nil {
		return DestEntry{}, err
	}
	root := &attrReader{attrs: top, what: "destination reply"}
	r := root.nested(cmdAttrDest, "destination")
	if r == nil {
		if root.err != nil {
			return DestEntry{}, root.err
		}
		return DestEntry{}, errors.New("destination reply without a destination")
	}
	fam := svcFamily
	if f := r.u16(destAttrAddrFamily, false); f != 0 {
		fam = f
	}
	if err := checkFamily(fam); err != nil {
		return DestEntry{}, fmt.Errorf("destination: %w", err)
	}
	var d DestEntry
	d.Key.Address = r.addr(destAttrAddr, fam)
	d.Key.Port = r.be16(destAttrPort, true)
	d.Forward = Forward(r.u32(destAttrFwdMethod, true) & fwdMask)
	d.Weight = int(int32(r.u32(destAttrWeight, true)))
	d.UpperThreshold = r.u32(destAttrUThresh, true)
	d.LowerThreshold = r.u32(destAttrLThresh, true)
	if d.Forward == Tunnel {
		d.TunnelType = TunnelType(r.u8(destAttrTunType))
	}
	d.ActiveConns = r.u32(destAttrActiveConns, false)
	d.InactiveConns = r.u32(destAttrInactConns, false)
	d.PersistConns = r.u32(destAttrPersistConns, false)
	d.Stats = decodeStats(r, destAttrStats64, destAttrStats)
	if r.err != nil {
		return DestEntry{}, r.err
	}
	return d, nil
}

// decodeStats reads the 64-bit counters, or the 32-bit ones from kernels
// older than 4.x that lack them.
func decodeStats(r *attrReader, attr64, attr32 uint16) Stats {
	var st Stats
	fields := []*uint64{
		statsAttrConns: &st.Conns, statsAttrInPkts: &st.InPkts, statsAttrOutPkts: &st.OutPkts,
		statsAttrInBytes: &st.InBytes, statsAttrOutBytes: &st.OutBytes,
		statsAttrCPS: &st.CPS, statsAttrInPPS: &st.InPPS, statsAttrOutPPS: &st.OutPPS,
		statsAttrInBPS: &st.InBPS, statsAttrOutBPS: &st.OutBPS,
	}
	if s := r.nested(attr64, "stats64"); s != nil {
		for t := uint16(statsAttrConns); t <= statsAttrOutBPS; t++ {
			if v := s.bytes(t, 8, false); v != nil {
				*fields[t] = native.Uint64(v)
			}
		}
		if s.err != nil && r.err == nil {
			r.err = s.err
		}
		return st
	}
	if s := r.nested(attr32, "stats"); s != nil {
		for t := uint16(statsAttrConns); t <= statsAttrOutBPS; t++ {
			if t == statsAttrInBytes || t == statsAttrOutBytes {
				if v := s.bytes(t, 8, false); v != nil {
					*fields[t] = native.Uint64(v)
				}
			} else {
				*fields[t] = uint64(s.u32(t, false))
			}
		}
		if s.err != nil && r.err == nil {
			r.err = s.err
		}
	}
	return st
}

func decodeConfigMsg(b []byte) (Timeouts, error) {
	if len(b) < genlHeaderLen {
		return Timeouts{}, errors.New("short config reply")
	}
	top, err := parseAttrs(b[genlHeaderLen:])
	if err != nil {
		return Timeouts{}, err
	}
	r := &attrReader{attrs: top, what: "config reply"}
	t := Timeouts{
		TCP:    time.Duration(r.u32(cmdAttrTimeoutTCP, true)) * time.Second,
		TCPFin: time.Duration(r.u32(cmdAttrTimeoutTCPFin, true)) * time.Second,
		UDP:    time.Duration(r.u32(cmdAttrTimeoutUDP, true)) * time.Second,
	}
	return t, r.err
}

// ---- errors in operator words ----

func opError(op string, err error, hint string) error {
	if hint == "" {
		return fmt.Errorf("%s: %w", op, err)
	}
	return fmt.Errorf("%s: %w (%s)", op, err, hint)
}

// explain turns the kernel's errno for cmd into the likely cause.
func explain(cmd uint8, err error, s *Service, d *Destination) string {
	var errno syscall.Errno
	if !errors.As(err, &errno) {
		return ""
	}
	switch errno {
	case syscall.EPERM:
		return "programming IPVS needs CAP_NET_ADMIN"
	case syscall.ESRCH:
		return "no such service"
	case syscall.EAFNOSUPPORT:
		return "address family not supported by this kernel's IPVS"
	}
	switch cmd {
	case cmdNewService, cmdSetService:
		switch errno {
		case syscall.ENOENT:
			return fmt.Sprintf("scheduler %q not available in this kernel?", s.Scheduler)
		case syscall.EEXIST:
			return "service already exists"
		case syscall.EINVAL:
			return "settings refused: persistence netmask or timeout out of range?"
		}
	case cmdNewDest, cmdSetDest:
		switch errno {
		case syscall.EEXIST:
			return "real server already in this service"
		case syscall.ENOENT:
			return "no such real server in this service"
		case syscall.ERANGE:
			return "weight below zero or lower threshold above upper threshold"
		case syscall.EINVAL:
			if d != nil && addrFamily(d.Key.Address) != serviceFamily(s.Key) {
				return "a real server of the other address family needs tunnel forwarding, and the sync daemon must not run"
			}
			// IPv4: the kernel wants a unicast or local address by the
			// namespace's local table, which does not exist before the
			// namespace has any address.
			return "real server address not routable in this network namespace: not a unicast address, or no address configured there yet?"
		}
	case cmdDelDest:
		if errno == syscall.ENOENT {
			return "no such real server in this service"
		}
	}
	return ""
}
