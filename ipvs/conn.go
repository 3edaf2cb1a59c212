package ipvs

import (
	"bufio"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"
)

// ConnectionsPath is the kernel's IPVS connection table. It lists IPv4 and
// IPv6 connections alike (there is no separate _v6 file), in the network
// namespace of the reading process's main thread: a goroutine that moved a
// locked thread into another namespace reads
// /proc/thread-self/net/ip_vs_conn instead.
const ConnectionsPath = "/proc/net/ip_vs_conn"

// Connection is one entry of the kernel's IPVS connection table, as
// /proc/net/ip_vs_conn lists it and `ipvsadm -Lnc` shows it. There is no
// netlink dump of connections.
type Connection struct {
	// Protocol is the kernel's name for it: TCP, UDP, SCTP, ICMP, ICMPv6,
	// or IP for a persistence template (see Template).
	Protocol string
	// Client is the client's address, Virtual the service's and Dest the
	// real server's. Dest may be of the other family (tunnel forwarding).
	// In a template of a firewall-mark service, Virtual's address carries
	// the mark and its port is 0.
	Client, Virtual, Dest netip.AddrPort
	// State is the protocol state (ESTABLISHED, SYN_RECV, TIME_WAIT, ...,
	// UDP for UDP, NONE for templates).
	State string
	// Expires is the time left before the entry expires, in whole seconds.
	Expires time.Duration
	// PEName and PEData name the persistence engine (e.g. "sip") and its
	// data (the Call-ID); both empty without one.
	PEName, PEData string
}

// Template reports whether c is a persistence template (the entry that
// pins a client to a real server) rather than a connection.
func (c Connection) Template() bool { return c.Protocol == "IP" }

// ReadConnections reads the IPVS connection table from path, normally
// ConnectionsPath.
func ReadConnections(path string) ([]Connection, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read IPVS connections: %w", err)
	}
	defer f.Close()
	conns, err := ParseConnections(f)
	if err != nil {
		return nil, fmt.Errorf("read IPVS connections from %s: %w", path, err)
	}
	return conns, nil
}

// connHeader starts the first line of /proc/net/ip_vs_conn.
const connHeader = "Pro FromIP"

// ParseConnections parses the text of /proc/net/ip_vs_conn: a header line,
// then one line per entry,
//
//	Pro FromIP   FPrt ToIP     TPrt DestIP   DPrt State       Expires PEName PEData
//	TCP C6336401 C582 C0000232 0050 C633640B 0050 ESTABLISHED     899
//
// with IPv4 addresses and all ports as hex numbers and IPv6 addresses in
// full colon notation.
func ParseConnections(r io.Reader) ([]Connection, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 4096), 64<<10)
	var conns []Connection
	n := 0
	for sc.Scan() {
		n++
		line := sc.Text()
		if n == 1 {
			if !strings.HasPrefix(line, connHeader) {
				return nil, fmt.Errorf("line 1: not an ip_vs_conn header: %q", line)
			}
			continue
		}
		if strings.TrimSpace(line) == "" {
			continue
		}
		c, err := parseConnLine(line)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		conns = append(conns, c)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if n == 0 {
		return nil, fmt.Errorf("empty input, want the ip_vs_conn header")
	}
	return conns, nil
}

func parseConnLine(line string) (Connection, error) {
	f := strings.Fields(line)
	if len(f) < 9 {
		return Connection{}, fmt.Errorf("want at least 9 fields in %q", line)
	}
	var c Connection
	var err error
	c.Protocol = f[0]
	if c.Client, err = parseConnAddrPort(f[1], f[2]); err != nil {
		return Connection{}, fmt.Errorf("client: %w", err)
	}
	if c.Virtual, err = parseConnAddrPort(f[3], f[4]); err != nil {
		return Connection{}, fmt.Errorf("virtual: %w", err)
	}
	if c.Dest, err = parseConnAddrPort(f[5], f[6]); err != nil {
		return Connection{}, fmt.Errorf("destination: %w", err)
	}
	c.State = f[7]
	secs, err := strconv.ParseUint(f[8], 10, 32)
	if err != nil {
		return Connection{}, fmt.Errorf("expires %q: %w", f[8], err)
	}
	c.Expires = time.Duration(secs) * time.Second
	if len(f) > 9 {
		c.PEName = f[9]
		c.PEData = strings.Join(f[10:], " ")
	}
	return c, nil
}

// parseConnAddrPort parses an address (8 hex digits for IPv4, printed from
// the host-order value, or IPv6 in colon notation) and a 4-hex-digit port.
func parseConnAddrPort(addr, port string) (netip.AddrPort, error) {
	var a netip.Addr
	if strings.Contains(addr, ":") {
		var err error
		if a, err = netip.ParseAddr(addr); err != nil || !a.Is6() || a.Zone() != "" {
			return netip.AddrPort{}, fmt.Errorf("bad IPv6 address %q", addr)
		}
	} else {
		b, err := hex.DecodeString(addr)
		if err != nil || len(b) != 4 {
			return netip.AddrPort{}, fmt.Errorf("bad IPv4 address %q (want 8 hex digits)", addr)
		}
		a = netip.AddrFrom4([4]byte(b))
	}
	b, err := hex.DecodeString(port)
	if err != nil || len(b) != 2 {
		return netip.AddrPort{}, fmt.Errorf("bad port %q (want 4 hex digits)", port)
	}
	return netip.AddrPortFrom(a, binary.BigEndian.Uint16(b)), nil
}
