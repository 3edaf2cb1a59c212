package ipvs

import (
	"fmt"
	"net/netip"
)

// DaemonState is the role of a kernel sync daemon: the master sends the
// connections this director handles, the backup receives a master's.
type DaemonState uint32

// The daemon states of IPVS_DAEMON_ATTR_STATE (IP_VS_STATE_MASTER,
// IP_VS_STATE_BACKUP). One of each may run per network namespace.
const (
	DaemonMaster DaemonState = 1
	DaemonBackup DaemonState = 2
)

func (s DaemonState) String() string {
	switch s {
	case DaemonMaster:
		return "master"
	case DaemonBackup:
		return "backup"
	}
	return fmt.Sprintf("state(%d)", uint32(s))
}

// DaemonConfig is one kernel connection-sync daemon, as NEW_DAEMON takes it
// and GET_DAEMON lists it.
type DaemonConfig struct {
	State DaemonState
	// Interface sends (master) or receives (backup) the sync multicast.
	Interface string
	// SyncID tags the master's messages; a backup with a non-zero id
	// ignores messages of other ids. The wire carries 8 bits.
	SyncID uint8
	// MaxLen is the largest sync message payload; 0 lets the kernel pick
	// (from the interface's MTU).
	MaxLen uint16
	// Group is the multicast group (IPv4 or IPv6); the zero Addr is the
	// kernel's default, 224.0.0.81.
	Group netip.Addr
	// Port is the UDP port; 0 is the kernel's default, 8848.
	Port uint16
	// TTL is the multicast TTL of the master's messages; 0 is the
	// kernel's default, 1.
	TTL uint8
}

func (c DaemonConfig) String() string {
	return fmt.Sprintf("%v daemon on %s (sync id %d, group %v port %d, ttl %d, max len %d)",
		c.State, c.Interface, c.SyncID, c.Group, c.Port, c.TTL, c.MaxLen)
}
