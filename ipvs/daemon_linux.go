//go:build linux

package ipvs

import (
	"errors"
	"fmt"
	"net/netip"
	"syscall"

	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// The sync daemon commands of the IPVS generic netlink family.
const (
	cmdNewDaemon = 9
	cmdDelDaemon = 10
	cmdGetDaemon = 11

	cmdAttrDaemon = 3 // nested daemonAttr*

	// IPVS_DAEMON_ATTR_*
	daemonAttrState       = 1 // u32
	daemonAttrMcastIfn    = 2 // string
	daemonAttrSyncID      = 3 // u32
	daemonAttrSyncMaxLen  = 4 // u16
	daemonAttrMcastGroup  = 5 // be32 (in_addr)
	daemonAttrMcastGroup6 = 6 // struct in6_addr
	daemonAttrMcastPort   = 7 // u16
	daemonAttrMcastTTL    = 8 // u8

	// ifNameMax is IP_VS_IFNAME_MAXLEN without the NUL.
	ifNameMax = 15
)

// Daemons lists the kernel sync daemons running in the namespace, whoever
// started them.
func (k *NetlinkKernel) Daemons() ([]DaemonConfig, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	msgs, err := k.execute(newRequest(k.family, cmdGetDaemon, unix.NLM_F_DUMP))
	if err != nil {
		return nil, fmt.Errorf("list sync daemons: %w", err)
	}
	var out []DaemonConfig
	for _, m := range msgs {
		c, err := decodeDaemonMsg(m)
		if err != nil {
			return nil, fmt.Errorf("list sync daemons: %w", err)
		}
		out = append(out, c)
	}
	return out, nil
}

// NewDaemon starts a kernel sync daemon. It fails with EEXIST when a daemon
// of that state already runs.
func (k *NetlinkKernel) NewDaemon(c DaemonConfig) error {
	op := "start " + c.String()
	attr, err := daemonAttr(c)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if _, err := k.execute(newRequest(k.family, cmdNewDaemon, unix.NLM_F_ACK, attr)); err != nil {
		return opError(op, err, explainDaemon(err, c))
	}
	return nil
}

// DelDaemon stops the kernel sync daemon of state s. It fails with ESRCH
// when none runs.
func (k *NetlinkKernel) DelDaemon(s DaemonState) error {
	a := nl.NewRtAttr(cmdAttrDaemon, nil)
	a.AddRtAttr(daemonAttrState, u32(uint32(s)))
	k.mu.Lock()
	defer k.mu.Unlock()
	if _, err := k.execute(newRequest(k.family, cmdDelDaemon, unix.NLM_F_ACK, a)); err != nil {
		return opError(fmt.Sprintf("stop %v sync daemon", s), err, explainDaemon(err, DaemonConfig{State: s}))
	}
	return nil
}

// daemonAttr builds IPVS_CMD_ATTR_DAEMON for NEW_DAEMON. Zero optional
// fields are left out so the kernel applies its defaults.
func daemonAttr(c DaemonConfig) (*nl.RtAttr, error) {
	switch {
	case c.State != DaemonMaster && c.State != DaemonBackup:
		return nil, fmt.Errorf("unknown daemon state %d", uint32(c.State))
	case c.Interface == "" || len(c.Interface) > ifNameMax:
		return nil, fmt.Errorf("interface name %q: want 1..%d characters", c.Interface, ifNameMax)
	case c.Group.IsValid() && (!c.Group.IsMulticast() || c.Group.Zone() != ""):
		return nil, fmt.Errorf("group %v is not a multicast address", c.Group)
	}
	a := nl.NewRtAttr(cmdAttrDaemon, nil)
	a.AddRtAttr(daemonAttrState, u32(uint32(c.State)))
	a.AddRtAttr(daemonAttrMcastIfn, nl.ZeroTerminated(c.Interface))
	a.AddRtAttr(daemonAttrSyncID, u32(uint32(c.SyncID)))
	if c.MaxLen != 0 {
		a.AddRtAttr(daemonAttrSyncMaxLen, u16(c.MaxLen))
	}
	if c.Group.IsValid() {
		if c.Group.Is4() {
			v := c.Group.As4()
			a.AddRtAttr(daemonAttrMcastGroup, v[:])
		} else {
			v := c.Group.As16()
			a.AddRtAttr(daemonAttrMcastGroup6, v[:])
		}
	}
	if c.Port != 0 {
		a.AddRtAttr(daemonAttrMcastPort, u16(c.Port))
	}
	if c.TTL != 0 {
		a.AddRtAttr(daemonAttrMcastTTL, []byte{c.TTL})
	}
	return a, nil
}

// decodeDaemonMsg decodes one GET_DAEMON reply (genl header first).
func decodeDaemonMsg(b []byte) (DaemonConfig, error) {
	if len(b) < genlHeaderLen {
		return DaemonConfig{}, errors.New("short daemon reply")
	}
	top, err := parseAttrs(b[genlHeaderLen:])
	if err != nil {
		return DaemonConfig{}, err
	}
	root := &attrReader{attrs: top, what: "daemon reply"}
	r := root.nested(cmdAttrDaemon, "daemon")
	if r == nil {
		if root.err != nil {
			return DaemonConfig{}, root.err
		}
		return DaemonConfig{}, errors.New("daemon reply without a daemon")
	}
	var c DaemonConfig
	c.State = DaemonState(r.u32(daemonAttrState, true))
	c.Interface = cString(r.bytes(daemonAttrMcastIfn, 0, true))
	c.SyncID = uint8(r.u32(daemonAttrSyncID, true))
	c.MaxLen = r.u16(daemonAttrSyncMaxLen, false)
	c.Port = r.u16(daemonAttrMcastPort, false)
	c.TTL = r.u8(daemonAttrMcastTTL)
	if v := r.bytes(daemonAttrMcastGroup6, 16, false); v != nil {
		c.Group = netip.AddrFrom16([16]byte(v[:16]))
	} else if v := r.bytes(daemonAttrMcastGroup, 4, false); v != nil {
		c.Group = netip.AddrFrom4([4]byte(v[:4]))
	}
	if r.err != nil {
		return DaemonConfig{}, r.err
	}
	return c, nil
}

// explainDaemon turns the kernel's errno for a daemon command into the
// likely cause.
func explainDaemon(err error, c DaemonConfig) string {
	var errno syscall.Errno
	if !errors.As(err, &errno) {
		return ""
	}
	switch errno {
	case syscall.EPERM:
		return "controlling the sync daemon needs CAP_NET_ADMIN"
	case syscall.EEXIST:
		return fmt.Sprintf("a %v sync daemon already runs", c.State)
	case syscall.ESRCH:
		return fmt.Sprintf("no %v sync daemon runs", c.State)
	case syscall.ENODEV:
		return fmt.Sprintf("no interface %q in this network namespace", c.Interface)
	case syscall.EINVAL:
		return "settings refused: group not multicast, or max length out of range?"
	}
	return ""
}
