//go:build linux

package ipvs

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// The golden bytes below are written out by hand from the layouts in the
// kernel's include/uapi/linux/ip_vs.h and linux/netlink.h, for a
// little-endian host: struct nlmsghdr {u32 len; u16 type; u16 flags; u32
// seq; u32 pid}, struct genlmsghdr {u8 cmd; u8 version; u16 reserved},
// then attributes {u16 len; u16 type; data; padding to 4 bytes}.

// golden turns annotated hex lines ("06 00 01 00  02 00 00 00 // AF") into
// bytes.
func golden(t *testing.T, lines ...string) []byte {
	t.Helper()
	var sb strings.Builder
	for _, l := range lines {
		l, _, _ = strings.Cut(l, "//")
		sb.WriteString(strings.Join(strings.Fields(l), ""))
	}
	b, err := hex.DecodeString(sb.String())
	if err != nil {
		t.Fatalf("bad golden hex: %v", err)
	}
	return b
}

func littleEndianOnly(t *testing.T) {
	t.Helper()
	if nl.NativeEndian() != binary.LittleEndian {
		t.Skip("golden bytes are written for a little-endian host")
	}
}

const testFamily = 0x24 // a generic netlink id as the controller might assign

// serialize builds the request as NetlinkKernel sends it, with sequence 1.
func serialize(cmd uint8, flags int, attrs ...*nl.RtAttr) []byte {
	req := newRequest(testFamily, cmd, flags, attrs...)
	req.Seq = 1
	return req.Serialize()
}

func mustServiceAttr(t *testing.T, s Service, full bool) *nl.RtAttr {
	t.Helper()
	a, err := serviceAttr(s, full)
	if err != nil {
		t.Fatalf("serviceAttr(%+v): %v", s, err)
	}
	return a
}

func mustDestAttr(t *testing.T, d Destination, full bool) *nl.RtAttr {
	t.Helper()
	a, err := destAttr(d, full)
	if err != nil {
		t.Fatalf("destAttr(%+v): %v", d, err)
	}
	return a
}

var (
	vip4  = netip.MustParseAddr("192.0.2.50")
	vip6  = netip.MustParseAddr("2001:db8::50")
	real4 = netip.MustParseAddr("198.51.100.11")
	real6 = netip.MustParseAddr("2001:db8:1::14")
)

func TestEncodeNewServiceGolden(t *testing.T) {
	littleEndianOnly(t)
	for _, tc := range []struct {
		name string
		svc  Service
		want []string
	}{{
		name: "TCP IPv4, persistent 300 s, mask 255.255.255.0",
		svc: Service{Key: ServiceKey{Protocol: TCP, Address: vip4, Port: 80},
			Scheduler: "wrr", Flags: FlagPersistent, Timeout: 300 * time.Second, NetmaskBits: 24},
		want: []string{
			"68 00 00 00  24 00  05 00  01 00 00 00  00 00 00 00 // nlmsghdr: len 104, family, REQUEST|ACK, seq 1",
			"01 01 00 00                                         // IPVS_CMD_NEW_SERVICE, version 1",
			"54 00 01 00                                         // IPVS_CMD_ATTR_SERVICE, 84 bytes",
			"06 00 01 00  02 00 00 00                            // AF: AF_INET (+2 pad)",
			"06 00 02 00  06 00 00 00                            // PROTOCOL: 6",
			"14 00 03 00  c0 00 02 32 00000000 00000000 00000000 // ADDR: union nf_inet_addr",
			"06 00 04 00  00 50 00 00                            // PORT: be16 80",
			"08 00 06 00  77 72 72 00                            // SCHED_NAME: wrr\\0",
			"0c 00 07 00  01 00 00 00  ff ff ff ff               // FLAGS: {PERSISTENT, mask ~0}",
			"08 00 08 00  2c 01 00 00                            // TIMEOUT: 300",
			"08 00 09 00  ff ff ff 00                            // NETMASK: be32 255.255.255.0",
		},
	}, {
		name: "fwmark IPv4, sh-fallback,sh-port (a stray HASHED flag is dropped)",
		svc: Service{Key: ServiceKey{FWMark: 7},
			Scheduler: "sh", Flags: FlagSchedSH1 | FlagSchedSH2 | FlagHashed},
		want: []string{
			"4c 00 00 00  24 00  05 00  01 00 00 00  00 00 00 00 // len 76",
			"01 01 00 00",
			"38 00 01 00                                         // SERVICE, 56 bytes",
			"06 00 01 00  02 00 00 00                            // AF_INET",
			"08 00 05 00  07 00 00 00                            // FWMARK: 7",
			"07 00 06 00  73 68 00 00                            // SCHED_NAME: sh\\0 (+1 pad)",
			"0c 00 07 00  18 00 00 00  ff ff ff ff               // FLAGS: SCHED1|SCHED2",
			"08 00 08 00  00 00 00 00                            // TIMEOUT: 0",
			"08 00 09 00  ff ff ff ff                            // NETMASK: /32",
		},
	}, {
		name: "UDP IPv6, one-packet, persistent 60 s, /64",
		svc: Service{Key: ServiceKey{Protocol: UDP, Address: vip6, Port: 53},
			Scheduler: "sh", Flags: FlagPersistent | FlagOnePacket | FlagSchedSH1 | FlagSchedSH2,
			Timeout: time.Minute, NetmaskBits: 64},
		want: []string{
			"68 00 00 00  24 00  05 00  01 00 00 00  00 00 00 00",
			"01 01 00 00",
			"54 00 01 00",
			"06 00 01 00  0a 00 00 00                            // AF_INET6",
			"06 00 02 00  11 00 00 00                            // PROTOCOL: 17",
			"14 00 03 00  20 01 0d b8 00000000 00000000 00000050 // ADDR: 2001:db8::50",
			"06 00 04 00  00 35 00 00                            // PORT: 53",
			"07 00 06 00  73 68 00 00",
			"0c 00 07 00  1d 00 00 00  ff ff ff ff               // FLAGS: PERSISTENT|ONEPACKET|SCHED1|SCHED2",
			"08 00 08 00  3c 00 00 00                            // TIMEOUT: 60",
			"08 00 09 00  40 00 00 00                            // NETMASK: prefix length 64, host order",
		},
	}, {
		name: "fwmark IPv6, netmask unset means /128",
		svc:  Service{Key: ServiceKey{FWMark: 8, IPv6: true}, Scheduler: "rr"},
		want: []string{
			"4c 00 00 00  24 00  05 00  01 00 00 00  00 00 00 00",
			"01 01 00 00",
			"38 00 01 00",
			"06 00 01 00  0a 00 00 00                            // AF_INET6",
			"08 00 05 00  08 00 00 00                            // FWMARK: 8",
			"07 00 06 00  72 72 00 00                            // rr\\0",
			"0c 00 07 00  00 00 00 00  ff ff ff ff",
			"08 00 08 00  00 00 00 00",
			"08 00 09 00  80 00 00 00                            // NETMASK: 128",
		},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			got := serialize(cmdNewService, unix.NLM_F_ACK, mustServiceAttr(t, tc.svc, true))
			if want := golden(t, tc.want...); !cmpBytes(t, got, want) {
				t.Fail()
			}
		})
	}
}

func TestEncodeNewDestGolden(t *testing.T) {
	littleEndianOnly(t)
	svcTCP4 := []string{
		"30 00 01 00                                         // IPVS_CMD_ATTR_SERVICE, 48 bytes: the key only",
		"06 00 01 00  02 00 00 00",
		"06 00 02 00  06 00 00 00",
		"14 00 03 00  c0 00 02 32 00000000 00000000 00000000",
		"06 00 04 00  00 50 00 00",
	}
	for _, tc := range []struct {
		name string
		key  ServiceKey
		dest Destination
		want []string
	}{{
		name: "masq IPv4 real with weight and thresholds",
		key:  ServiceKey{Protocol: TCP, Address: vip4, Port: 80},
		dest: Destination{Key: DestKey{real4, 80}, Forward: Masq, Weight: 1, UpperThreshold: 10, LowerThreshold: 5},
		want: append(append([]string{
			"8c 00 00 00  24 00  05 00  01 00 00 00  00 00 00 00 // len 140",
			"05 01 00 00                                         // IPVS_CMD_NEW_DEST",
		}, svcTCP4...),
			"48 00 02 00                                         // IPVS_CMD_ATTR_DEST, 72 bytes",
			"14 00 01 00  c6 33 64 0b 00000000 00000000 00000000 // ADDR: 198.51.100.11",
			"06 00 02 00  00 50 00 00                            // PORT: 80",
			"06 00 0b 00  02 00 00 00                            // ADDR_FAMILY: AF_INET",
			"08 00 03 00  00 00 00 00                            // FWD_METHOD: MASQ",
			"08 00 04 00  01 00 00 00                            // WEIGHT: 1",
			"08 00 05 00  0a 00 00 00                            // U_THRESH: 10",
			"08 00 06 00  05 00 00 00                            // L_THRESH: 5",
		),
	}, {
		name: "GRE tunnel IPv4 real",
		key:  ServiceKey{Protocol: TCP, Address: vip4, Port: 80},
		dest: Destination{Key: DestKey{netip.MustParseAddr("198.51.100.14"), 80}, Forward: Tunnel, Weight: 3, TunnelType: TunnelGRE},
		want: append(append([]string{
			"94 00 00 00  24 00  05 00  01 00 00 00  00 00 00 00 // len 148",
			"05 01 00 00",
		}, svcTCP4...),
			"50 00 02 00                                         // DEST, 80 bytes",
			"14 00 01 00  c6 33 64 0e 00000000 00000000 00000000",
			"06 00 02 00  00 50 00 00",
			"06 00 0b 00  02 00 00 00",
			"08 00 03 00  02 00 00 00                            // FWD_METHOD: TUNNEL",
			"08 00 04 00  03 00 00 00",
			"08 00 05 00  00 00 00 00",
			"08 00 06 00  00 00 00 00",
			"05 00 0d 00  02 00 00 00                            // TUN_TYPE: u8 GRE (+3 pad)",
		),
	}, {
		name: "ipip tunnel to an IPv6 real behind an IPv4 service",
		key:  ServiceKey{Protocol: TCP, Address: vip4, Port: 80},
		dest: Destination{Key: DestKey{real6, 80}, Forward: Tunnel, Weight: 3},
		want: append(append([]string{
			"94 00 00 00  24 00  05 00  01 00 00 00  00 00 00 00",
			"05 01 00 00",
		}, svcTCP4...),
			"50 00 02 00",
			"14 00 01 00  20 01 0d b8 00 01 00 00 00000000 00000014 // ADDR: 2001:db8:1::14",
			"06 00 02 00  00 50 00 00",
			"06 00 0b 00  0a 00 00 00                            // ADDR_FAMILY: AF_INET6, unlike the service",
			"08 00 03 00  02 00 00 00",
			"08 00 04 00  03 00 00 00",
			"08 00 05 00  00 00 00 00",
			"08 00 06 00  00 00 00 00",
			"05 00 0d 00  00 00 00 00                            // TUN_TYPE: IPIP",
		),
	}, {
		name: "route IPv6 real in an IPv6 fwmark service",
		key:  ServiceKey{FWMark: 8, IPv6: true},
		dest: Destination{Key: DestKey{real6, 0}, Forward: Route, Weight: 2},
		want: []string{
			"70 00 00 00  24 00  05 00  01 00 00 00  00 00 00 00 // len 112",
			"05 01 00 00",
			"14 00 01 00                                         // SERVICE, 20 bytes",
			"06 00 01 00  0a 00 00 00",
			"08 00 05 00  08 00 00 00                            // FWMARK: 8",
			"48 00 02 00                                         // DEST, 72 bytes",
			"14 00 01 00  20 01 0d b8 00 01 00 00 00000000 00000014",
			"06 00 02 00  00 00 00 00                            // PORT: 0",
			"06 00 0b 00  0a 00 00 00",
			"08 00 03 00  03 00 00 00                            // FWD_METHOD: DROUTE",
			"08 00 04 00  02 00 00 00",
			"08 00 05 00  00 00 00 00",
			"08 00 06 00  00 00 00 00",
		},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			got := serialize(cmdNewDest, unix.NLM_F_ACK, mustServiceAttr(t, Service{Key: tc.key}, false), mustDestAttr(t, tc.dest, true))
			if want := golden(t, tc.want...); !cmpBytes(t, got, want) {
				t.Fail()
			}
		})
	}
}

func TestEncodeOtherRequestsGolden(t *testing.T) {
	littleEndianOnly(t)
	key := ServiceKey{Protocol: TCP, Address: vip4, Port: 80}
	for _, tc := range []struct {
		name string
		got  []byte
		want []string
	}{{
		name: "GET_SERVICE dump",
		got:  serialize(cmdGetService, unix.NLM_F_DUMP),
		want: []string{"14 00 00 00  24 00  01 03  01 00 00 00  00 00 00 00 // REQUEST|DUMP", "04 01 00 00"},
	}, {
		name: "GET_DEST dump of one service",
		got:  serialize(cmdGetDest, unix.NLM_F_DUMP, mustServiceAttr(t, Service{Key: key}, false)),
		want: []string{
			"44 00 00 00  24 00  01 03  01 00 00 00  00 00 00 00", "08 01 00 00",
			"30 00 01 00", "06 00 01 00  02 00 00 00", "06 00 02 00  06 00 00 00",
			"14 00 03 00  c0 00 02 32 00000000 00000000 00000000", "06 00 04 00  00 50 00 00",
		},
	}, {
		name: "DEL_DEST sends the destination's key and family only",
		got: serialize(cmdDelDest, unix.NLM_F_ACK, mustServiceAttr(t, Service{Key: key}, false),
			mustDestAttr(t, Destination{Key: DestKey{real4, 8080}, Weight: 5}, false)),
		want: []string{
			"6c 00 00 00  24 00  05 00  01 00 00 00  00 00 00 00", "07 01 00 00",
			"30 00 01 00", "06 00 01 00  02 00 00 00", "06 00 02 00  06 00 00 00",
			"14 00 03 00  c0 00 02 32 00000000 00000000 00000000", "06 00 04 00  00 50 00 00",
			"28 00 02 00", "14 00 01 00  c6 33 64 0b 00000000 00000000 00000000",
			"06 00 02 00  1f 90 00 00 // PORT: 8080", "06 00 0b 00  02 00 00 00",
		},
	}, {
		name: "SET_CONFIG leaves out zero timeouts",
		got: func() []byte {
			attrs, err := timeoutAttrs(Timeouts{TCP: 900 * time.Second, UDP: 300 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			return serialize(cmdSetConfig, unix.NLM_F_ACK, attrs...)
		}(),
		want: []string{
			"24 00 00 00  24 00  05 00  01 00 00 00  00 00 00 00", "0c 01 00 00",
			"08 00 04 00  84 03 00 00 // TIMEOUT_TCP: 900",
			"08 00 06 00  2c 01 00 00 // TIMEOUT_UDP: 300",
		},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			if !cmpBytes(t, tc.got, golden(t, tc.want...)) {
				t.Fail()
			}
		})
	}
}

// cmpBytes reports a difference as hex dumps of both.
func cmpBytes(t *testing.T, got, want []byte) bool {
	t.Helper()
	if string(got) == string(want) {
		return true
	}
	t.Errorf("bytes differ\n got:\n%s\nwant:\n%s", hex.Dump(got), hex.Dump(want))
	return false
}

func TestEncodeRejects(t *testing.T) {
	key := ServiceKey{Protocol: TCP, Address: vip4, Port: 80}
	for _, tc := range []struct {
		name string
		svc  *Service
		dest *Destination
		want string
	}{
		{"no scheduler", &Service{Key: key}, nil, "scheduler name"},
		{"scheduler name too long", &Service{Key: key, Scheduler: strings.Repeat("x", 16)}, nil, "scheduler name"},
		{"IPv4 /33", &Service{Key: key, Scheduler: "rr", NetmaskBits: 33}, nil, "out of range 1..32"},
		{"IPv6 /129", &Service{Key: ServiceKey{Protocol: TCP, Address: vip6, Port: 80}, Scheduler: "rr", NetmaskBits: 129}, nil, "out of range 1..128"},
		{"fractional timeout", &Service{Key: key, Scheduler: "rr", Timeout: 1500 * time.Millisecond}, nil, "whole number of seconds"},
		{"fwmark with an address", &Service{Key: ServiceKey{FWMark: 1, Address: vip4}, Scheduler: "rr"}, nil, "firewall-mark service"},
		{"no protocol", &Service{Key: ServiceKey{Address: vip4, Port: 80}, Scheduler: "rr"}, nil, "no protocol"},
		{"no address", &Service{Key: ServiceKey{Protocol: TCP, Port: 80}, Scheduler: "rr"}, nil, "no address"},
		{"negative weight", nil, &Destination{Key: DestKey{real4, 80}, Weight: -1}, "weight -1"},
		{"thresholds upside down", nil, &Destination{Key: DestKey{real4, 80}, UpperThreshold: 5, LowerThreshold: 10}, "lower threshold"},
		{"tunnel type without tunnel", nil, &Destination{Key: DestKey{real4, 80}, Forward: Route, TunnelType: TunnelGRE}, "tunnel type"},
		{"GUE without port", nil, &Destination{Key: DestKey{real4, 80}, Forward: Tunnel, TunnelType: TunnelGUE}, "GUE"},
		{"unknown forward", nil, &Destination{Key: DestKey{real4, 80}, Forward: 4}, "forwarding method"},
		{"no real address", nil, &Destination{}, "no real server address"},
	} {
		var err error
		if tc.svc != nil {
			_, err = serviceAttr(*tc.svc, true)
		} else {
			_, err = destAttr(*tc.dest, true)
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one containing %q", tc.name, err, tc.want)
		}
	}
	if _, err := timeoutAttrs(Timeouts{TCP: -time.Second}); err == nil {
		t.Error("negative timeout accepted")
	}
}

// readHex reads a reply captured in the VM (Debian kernel 6.1.0-56-amd64)
// by printing the payload of each GET_SERVICE / GET_DEST / GET_CONFIG reply
// message (genl header and attributes) in hex.
func readHex(t *testing.T, name string) []byte {
	t.Helper()
	s, err := os.ReadFile(filepath.Join("testdata", "netlink", name))
	if err != nil {
		t.Fatal(err)
	}
	b, err := hex.DecodeString(strings.TrimSpace(string(s)))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDecodeCapturedServiceReplies(t *testing.T) {
	littleEndianOnly(t)
	for _, tc := range []struct {
		file string
		want Entry
	}{{
		file: "service_tcp4_persistent.hex",
		want: Entry{Service: Service{Key: ServiceKey{Protocol: TCP, Address: vip4, Port: 80},
			Scheduler: "wrr", Flags: FlagPersistent, Timeout: 300 * time.Second, NetmaskBits: 24}},
	}, {
		// Three connections through a masq service on a local listener,
		// read after the estimator's 2 s tick.
		file: "service_tcp4_stats.hex",
		want: Entry{
			Service: Service{Key: ServiceKey{Protocol: TCP, Address: netip.MustParseAddr("198.51.100.1"), Port: 8080},
				Scheduler: "rr", NetmaskBits: 32},
			Stats: Stats{Conns: 3, InPkts: 13, OutPkts: 11, InBytes: 700, OutBytes: 602,
				InPPS: 1, OutPPS: 1, InBPS: 49, OutBPS: 42},
		},
	}, {
		// The kernel reports FlagHashed (0x1f); it is dropped.
		file: "service_udp6_sh_flags.hex",
		want: Entry{Service: Service{Key: ServiceKey{Protocol: UDP, Address: vip6, Port: 53},
			Scheduler: "sh", Flags: FlagPersistent | FlagOnePacket | FlagSchedSH1 | FlagSchedSH2,
			Timeout: time.Minute, NetmaskBits: 64}},
	}, {
		file: "service_fwm6.hex",
		want: Entry{Service: Service{Key: ServiceKey{FWMark: 8, IPv6: true}, Scheduler: "rr", NetmaskBits: 128}},
	}} {
		t.Run(tc.file, func(t *testing.T) {
			got, err := decodeServiceMsg(readHex(t, tc.file))
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got, cmpAddrs); diff != "" {
				t.Errorf("decoded service (-want +got):\n%s", diff)
			}
		})
	}
}

func TestDecodeCapturedDestReplies(t *testing.T) {
	littleEndianOnly(t)
	for _, tc := range []struct {
		file   string
		family uint16
		want   DestEntry
	}{{
		file: "dest_masq_stats.hex", family: unix.AF_INET,
		want: DestEntry{
			Destination:   Destination{Key: DestKey{netip.MustParseAddr("198.51.100.1"), 9090}, Forward: Masq, Weight: 1},
			InactiveConns: 3,
			Stats: Stats{Conns: 3, InPkts: 13, OutPkts: 11, InBytes: 700, OutBytes: 602,
				InPPS: 1, OutPPS: 1, InBPS: 49, OutBPS: 42},
		},
	}, {
		file: "dest_tun_gre4.hex", family: unix.AF_INET,
		want: DestEntry{Destination: Destination{Key: DestKey{netip.MustParseAddr("198.51.100.14"), 80},
			Forward: Tunnel, Weight: 3, TunnelType: TunnelGRE}},
	}, {
		// The IPv6 real of an IPv4 service: ADDR_FAMILY decides.
		file: "dest_tun_ipip6_in_v4.hex", family: unix.AF_INET,
		want: DestEntry{Destination: Destination{Key: DestKey{real6, 80}, Forward: Tunnel, Weight: 3, TunnelType: TunnelIPIP}},
	}} {
		t.Run(tc.file, func(t *testing.T) {
			got, err := decodeDestMsg(readHex(t, tc.file), tc.family)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got, cmpAddrs); diff != "" {
				t.Errorf("decoded destination (-want +got):\n%s", diff)
			}
		})
	}
}

func TestDecodeCapturedConfig(t *testing.T) {
	littleEndianOnly(t)
	got, err := decodeConfigMsg(readHex(t, "config.hex"))
	if err != nil {
		t.Fatal(err)
	}
	// The kernel's defaults, as `ipvsadm -L --timeout` prints them:
	// "Timeout (tcp tcpfin udp): 900 120 300".
	want := Timeouts{TCP: 900 * time.Second, TCPFin: 120 * time.Second, UDP: 300 * time.Second}
	if got != want {
		t.Errorf("got %+v, want %+v", got, want)
	}
}

// TestDecodeStats32 decodes a hand-built reply of a kernel without
// STATS64 (before 4.1): 32-bit counters except the byte counters, and
// nested attributes flagged NLA_F_NESTED, which the decoder must mask.
func TestDecodeStats32(t *testing.T) {
	svc := nl.NewRtAttr(cmdAttrService|unix.NLA_F_NESTED, nil)
	svc.AddRtAttr(svcAttrAF, nl.Uint16Attr(unix.AF_INET))
	svc.AddRtAttr(svcAttrProtocol, nl.Uint16Attr(6))
	svc.AddRtAttr(svcAttrAddr, []byte{192, 0, 2, 50, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	svc.AddRtAttr(svcAttrPort, []byte{0, 80})
	svc.AddRtAttr(svcAttrSchedName, nl.ZeroTerminated("lc"))
	svc.AddRtAttr(svcAttrFlags, append(nl.Uint32Attr(FlagHashed), 0xff, 0xff, 0xff, 0xff))
	svc.AddRtAttr(svcAttrTimeout, nl.Uint32Attr(0))
	svc.AddRtAttr(svcAttrNetmask, []byte{0xff, 0xff, 0xff, 0xff})
	st := svc.AddRtAttr(svcAttrStats|unix.NLA_F_NESTED, nil)
	st.AddRtAttr(statsAttrConns, nl.Uint32Attr(7))
	st.AddRtAttr(statsAttrInPkts, nl.Uint32Attr(70))
	st.AddRtAttr(statsAttrOutPkts, nl.Uint32Attr(60))
	st.AddRtAttr(statsAttrInBytes, nl.Uint64Attr(1<<33))
	st.AddRtAttr(statsAttrOutBytes, nl.Uint64Attr(5000))
	st.AddRtAttr(statsAttrCPS, nl.Uint32Attr(1))
	st.AddRtAttr(statsAttrInPPS, nl.Uint32Attr(2))
	st.AddRtAttr(statsAttrOutPPS, nl.Uint32Attr(3))
	st.AddRtAttr(statsAttrInBPS, nl.Uint32Attr(4))
	st.AddRtAttr(statsAttrOutBPS, nl.Uint32Attr(5))
	msg := append([]byte{cmdNewService, genlVersion, 0, 0}, svc.Serialize()...)

	got, err := decodeServiceMsg(msg)
	if err != nil {
		t.Fatal(err)
	}
	want := Entry{
		Service: Service{Key: ServiceKey{Protocol: TCP, Address: vip4, Port: 80}, Scheduler: "lc", NetmaskBits: 32},
		Stats:   Stats{Conns: 7, InPkts: 70, OutPkts: 60, InBytes: 1 << 33, OutBytes: 5000, CPS: 1, InPPS: 2, OutPPS: 3, InBPS: 4, OutBPS: 5},
	}
	if diff := cmp.Diff(want, got, cmpAddrs); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func TestDecodeRejectsMalformed(t *testing.T) {
	good := readHex(t, "service_tcp4_persistent.hex")
	for name, b := range map[string][]byte{
		"empty":             nil,
		"header only":       good[:4],
		"truncated":         good[:40],
		"no service attr":   {cmdNewService, 1, 0, 0, 8, 0, 9, 0, 0, 0, 0, 0},
		"bad family":        append([]byte{4, 1, 0, 0, 12, 0, 1, 0}, 6, 0, 1, 0, 7, 0, 0, 0),
		"attr past the end": {4, 1, 0, 0, 0x40, 0, 1, 0},
	} {
		if _, err := decodeServiceMsg(b); err == nil {
			t.Errorf("%s: decoded without error", name)
		}
		if _, err := decodeDestMsg(b, unix.AF_INET); err == nil {
			t.Errorf("%s: decoded as a destination without error", name)
		}
	}
}

func FuzzDecodeReplies(f *testing.F) {
	for _, name := range []string{"service_tcp4_stats.hex", "service_fwm6.hex", "dest_masq_stats.hex", "dest_tun_ipip6_in_v4.hex", "config.hex"} {
		b, err := os.ReadFile(filepath.Join("testdata", "netlink", name))
		if err != nil {
			f.Fatal(err)
		}
		raw, err := hex.DecodeString(strings.TrimSpace(string(b)))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(raw)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		decodeServiceMsg(b)
		decodeDestMsg(b, unix.AF_INET)
		decodeDestMsg(b, unix.AF_INET6)
		decodeConfigMsg(b)
		parseNlmsgerr(b, unix.NLM_F_ACK_TLVS)
	})
}

// cmpAddrs compares netip values by value.
var cmpAddrs = cmp.Comparer(func(a, b netip.Addr) bool { return a == b })

func TestParseNlmsgerr(t *testing.T) {
	littleEndianOnly(t)
	// struct nlmsgerr {int error; struct nlmsghdr msg}, then NLMSGERR_ATTR_MSG.
	capped := golden(t,
		"ea ff ff ff                                         // error: -22 (EINVAL)",
		"20 00 00 00  24 00  05 00  01 00 00 00  00 00 00 00 // the request's header, payload capped",
		"20 00 01 00  41 74 74 72 69 62 75 74 65 20 66 61 69 6c 65 64 20 70 6f 6c 69 63 79 00 00 00 00 00 // MSG",
	)
	err := parseNlmsgerr(capped, unix.NLM_F_ACK_TLVS|unix.NLM_F_CAPPED)
	if !errors.Is(err, syscall.EINVAL) || !strings.Contains(err.Error(), "Attribute failed policy") {
		t.Errorf("capped: got %v", err)
	}
	// Not capped: the whole request (header + 4 bytes) is echoed first.
	full := golden(t,
		"fe ff ff ff                                         // -2 (ENOENT)",
		"14 00 00 00  24 00  05 00  01 00 00 00  00 00 00 00  01 01 00 00",
		"08 00 01 00  62 61 64 00                            // MSG: bad",
	)
	err = parseNlmsgerr(full, unix.NLM_F_ACK_TLVS)
	if !errors.Is(err, syscall.ENOENT) || !strings.HasSuffix(err.Error(), "(kernel: bad)") {
		t.Errorf("full: got %v", err)
	}
	if err := parseNlmsgerr(full[:4], 0); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("plain: got %v", err)
	}
	if err := parseNlmsgerr([]byte{0, 0, 0, 0}, 0); err != nil {
		t.Errorf("ack: got %v", err)
	}
}

func TestExplainErrnos(t *testing.T) {
	svc := &Service{Key: ServiceKey{Protocol: TCP, Address: vip4, Port: 80}, Scheduler: "foo"}
	for _, tc := range []struct {
		cmd   uint8
		errno syscall.Errno
		dest  *Destination
		want  string
	}{
		{cmdNewService, syscall.ENOENT, nil, `scheduler "foo" not available in this kernel?`},
		{cmdNewService, syscall.EEXIST, nil, "service already exists"},
		{cmdSetService, syscall.ESRCH, nil, "no such service"},
		{cmdNewDest, syscall.ESRCH, &Destination{Key: DestKey{real4, 80}}, "no such service"},
		{cmdNewDest, syscall.EEXIST, &Destination{Key: DestKey{real4, 80}}, "real server already in this service"},
		{cmdNewDest, syscall.EINVAL, &Destination{Key: DestKey{real4, 80}}, "not routable in this network namespace"},
		{cmdNewDest, syscall.EINVAL, &Destination{Key: DestKey{real6, 80}}, "needs tunnel forwarding"},
		{cmdSetDest, syscall.ENOENT, &Destination{Key: DestKey{real4, 80}}, "no such real server"},
		{cmdDelDest, syscall.ENOENT, &Destination{Key: DestKey{real4, 80}}, "no such real server"},
		{cmdNewDest, syscall.ERANGE, &Destination{Key: DestKey{real4, 80}}, "threshold"},
		{cmdNewService, syscall.EPERM, nil, "CAP_NET_ADMIN"},
	} {
		got := explain(tc.cmd, &kernelError{errno: tc.errno, msg: "x"}, svc, tc.dest)
		if !strings.Contains(got, tc.want) {
			t.Errorf("explain(cmd %d, %v) = %q, want it to contain %q", tc.cmd, tc.errno, got, tc.want)
		}
	}
	err := opError("new service "+svc.Key.String(), syscall.ENOENT, explain(cmdNewService, syscall.ENOENT, svc, nil))
	if want := `new service TCP 192.0.2.50:80: no such file or directory (scheduler "foo" not available in this kernel?)`; err.Error() != want {
		t.Errorf("error text\n got %s\nwant %s", err, want)
	}
	if !errors.Is(err, syscall.ENOENT) {
		t.Error("the errno is not wrapped")
	}
}

// TestNewKernelWithoutIPVS: on a kernel without IPVS (the development host
// and CI's host kernel), NewKernel fails and says what is missing. Inside
// the VM, the guest tests prove the positive case.
func TestNewKernelWithoutIPVS(t *testing.T) {
	k, err := NewKernel()
	if _, statErr := os.Stat("/proc/net/ip_vs"); statErr == nil {
		if err != nil {
			t.Fatalf("/proc/net/ip_vs exists but NewKernel failed: %v", err)
		}
		k.Close()
		t.Skip("this kernel has IPVS")
	}
	if err == nil {
		k.Close()
		t.Fatal("NewKernel succeeded on a kernel without /proc/net/ip_vs")
	}
	if !regexp.MustCompile(`kernel IPVS unavailable: .*"IPVS" not found .*modprobe ip_vs`).MatchString(err.Error()) {
		t.Errorf("unclear error: %v", err)
	}
	t.Logf("as expected: %v", err)
}

func TestClosedKernel(t *testing.T) {
	k := &NetlinkKernel{}
	if _, err := k.Services(); !errors.Is(err, errClosed) {
		t.Errorf("Services on a closed handle: %v", err)
	}
	if err := k.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}
