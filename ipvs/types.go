package ipvs

import (
	"fmt"
	"net/netip"
	"time"
)

// Protocol of a virtual service (IPPROTO_*); zero for firewall-mark
// services.
type Protocol uint16

// Protocols IPVS balances.
const (
	TCP  Protocol = 6
	UDP  Protocol = 17
	SCTP Protocol = 132
)

func (p Protocol) String() string {
	switch p {
	case TCP:
		return "TCP"
	case UDP:
		return "UDP"
	case SCTP:
		return "SCTP"
	case 0:
		return "FWM"
	}
	return fmt.Sprintf("proto-%d", uint16(p))
}

// ServiceKey identifies a virtual service in the kernel: address, port and
// protocol, or a firewall mark and address family.
type ServiceKey struct {
	Protocol Protocol // 0 for fwmark services
	Address  netip.Addr
	Port     uint16
	FWMark   uint32
	// IPv6 gives the family of fwmark services (address services take it
	// from Address).
	IPv6 bool
}

func (k ServiceKey) String() string {
	if k.FWMark != 0 {
		fam := "IPv4"
		if k.IPv6 {
			fam = "IPv6"
		}
		return fmt.Sprintf("FWM %d %s", k.FWMark, fam)
	}
	return fmt.Sprintf("%s %s", k.Protocol, netip.AddrPortFrom(k.Address, k.Port))
}

// Service flags (IP_VS_SVC_F_* in the kernel).
const (
	FlagPersistent uint32 = 0x0001
	FlagHashed     uint32 = 0x0002 // set by the kernel; ignored when comparing
	FlagOnePacket  uint32 = 0x0004
	FlagSchedSH1   uint32 = 0x0008 // sh-fallback / mh-fallback
	FlagSchedSH2   uint32 = 0x0010 // sh-port / mh-port
)

// Service is a virtual service's settings.
type Service struct {
	Key       ServiceKey
	Scheduler string
	// Flags is the IP_VS_SVC_F_* set, without FlagHashed.
	Flags uint32
	// Timeout is the persistence timeout (0: not persistent).
	Timeout time.Duration
	// NetmaskBits is the persistence granularity as a prefix length
	// (32 or 128 when unset).
	NetmaskBits int
}

// Forward is a real server's forwarding method (IP_VS_CONN_F_FWD_MASK).
type Forward uint32

// Forwarding methods.
const (
	Masq   Forward = 0 // NAT
	Local  Forward = 1
	Tunnel Forward = 2 // TUN (ipip unless TunnelType says otherwise)
	Route  Forward = 3 // DR
)

func (f Forward) String() string {
	switch f {
	case Masq:
		return "Masq"
	case Local:
		return "Local"
	case Tunnel:
		return "Tunnel"
	case Route:
		return "Route"
	}
	return fmt.Sprintf("Forward(%d)", uint32(f))
}

// TunnelType of a TUN real server (IP_VS_CONN_F_TUNNEL_TYPE_*).
type TunnelType uint8

// Tunnel types.
const (
	TunnelIPIP TunnelType = 0
	TunnelGUE  TunnelType = 1
	TunnelGRE  TunnelType = 2
)

// DestKey identifies a real server within a service.
type DestKey struct {
	Address netip.Addr
	Port    uint16
}

func (k DestKey) String() string { return netip.AddrPortFrom(k.Address, k.Port).String() }

// Destination is a real server's settings. Its address family may differ
// from the service's (tunnel forwarding only).
type Destination struct {
	Key            DestKey
	Forward        Forward
	Weight         int
	UpperThreshold uint32
	LowerThreshold uint32
	TunnelType     TunnelType
}

// Stats are the kernel's 64-bit counters and rate estimates of a service
// or destination (IPVS_SVC_ATTR_STATS64 / IPVS_DEST_ATTR_STATS64).
type Stats struct {
	Conns, InPkts, OutPkts, InBytes, OutBytes uint64
	// Rates per second, as the kernel estimates them.
	CPS, InPPS, OutPPS, InBPS, OutBPS uint64
}

// Entry is a service as read from the kernel, with its destinations.
type Entry struct {
	Service      Service
	Destinations []DestEntry
	Stats        Stats
}

// DestEntry is a destination as read from the kernel.
type DestEntry struct {
	Destination
	ActiveConns, InactiveConns, PersistConns uint32
	Stats                                    Stats
}

// Timeouts are the global connection timeouts (ipvsadm --set); a zero
// field leaves the kernel's value unchanged when set.
type Timeouts struct {
	TCP, TCPFin, UDP time.Duration
}

// Kernel is the IPVS table of one network namespace. The netlink
// implementation talks to the kernel; tests use an in-memory table.
type Kernel interface {
	// Services lists every service with its destinations and counters.
	Services() ([]Entry, error)
	// Service reads one service with its destinations; false if the
	// kernel has no such service. A change to a few services reads only
	// those, not a table of thousands.
	Service(ServiceKey) (Entry, bool, error)
	NewService(Service) error
	// UpdateService changes a service's settings in place (same key).
	UpdateService(Service) error
	DelService(ServiceKey) error
	NewDestination(ServiceKey, Destination) error
	UpdateDestination(ServiceKey, Destination) error
	DelDestination(ServiceKey, DestKey) error
	Timeouts() (Timeouts, error)
	SetTimeouts(Timeouts) error
	Close() error
}
