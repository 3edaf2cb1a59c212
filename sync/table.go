package sync

import (
	"github.com/directord/directord/ipvs"
)

// Protocol numbers and the kernel's state names, as /proc/net/ip_vs_conn
// prints them, by protocol (tcp_state_name_table, sctp_state_name_table;
// UDP and templates have one state, 0).
var (
	protoNumbers = map[string]uint8{"TCP": 6, "UDP": 17, "SCTP": 132, "IP": 0}
	stateNumbers = map[string]map[string]uint16{
		"TCP": {"NONE": 0, "ESTABLISHED": 1, "SYN_SENT": 2, "SYN_RECV": 3, "FIN_WAIT": 4, "TIME_WAIT": 5,
			"CLOSE": 6, "CLOSE_WAIT": 7, "LAST_ACK": 8, "LISTEN": 9, "SYNACK": 10},
		"SCTP": {"NONE": 0, "INIT1": 1, "INIT": 2, "COOKIE_SENT": 3, "COOKIE_REPLIED": 4, "COOKIE_WAIT": 5,
			"COOKIE_ECHOED": 6, "ESTABLISHED": 7, "SHUTDOWN_SENT": 8, "SHUTDOWN_RECEIVED": 9,
			"SHUTDOWN_ACK_SENT": 10, "REJECTED": 11, "CLOSED": 12},
	}
)

// TableConns turns the connection table into v1 sync entries, as the
// master daemon would send them. What /proc/net/ip_vs_conn does not show
// is left at what the backup can do without: the forwarding method (a
// synced connection takes its real server's), the firewall mark (zero: a
// connection of a firewall-mark service is sent but finds no service on
// the backup) and sequence adjustments. The timeout is the time left.
// Entries of protocols the kernel cannot sync (ICMP) are skipped.
func TableConns(table []ipvs.Connection) []Conn {
	out := make([]Conn, 0, len(table))
	for _, c := range table {
		proto, ok := protoNumbers[c.Protocol]
		if !ok {
			continue
		}
		e := Conn{
			Protocol: proto,
			Client:   c.Client, Virtual: c.Virtual, Dest: c.Dest,
			Timeout: uint32(c.Expires.Seconds()),
		}
		if e.Timeout == 0 {
			e.Timeout = 1
		}
		if c.Client.Addr().Is6() {
			e.Type = typeInet6
		}
		// A template pins a client to a real server: protocol IP (a
		// firewall-mark service) or a TCP/UDP entry in state NONE with
		// client port 0.
		if c.Template() || (c.State == "NONE" && c.Client.Port() == 0) {
			e.Flags |= FlagTemplate
		}
		if st, ok := stateNumbers[c.Protocol][c.State]; ok {
			e.State = st
		}
		if e.Flags&FlagTemplate == 0 && c.Protocol != "TCP" && c.Protocol != "SCTP" {
			e.Flags |= FlagInactive // UDP: as the master daemon sends it
		}
		if (c.Protocol == "TCP" && c.State != "ESTABLISHED") || (c.Protocol == "SCTP" && c.State != "ESTABLISHED") {
			e.Flags |= FlagInactive
		}
		if e.Flags&FlagTemplate != 0 {
			e.Flags |= FlagInactive
		}
		// Addresses must match the entry type; a real server of the
		// other family (tunnel) cannot be expressed.
		if e.Client.Addr().Is4() != e.Dest.Addr().Is4() || e.Client.Addr().Is4() != e.Virtual.Addr().Is4() {
			continue
		}
		out = append(out, e)
	}
	return out
}
