package ipvs

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// connSample is /proc/net/ip_vs_conn in the kernel's format
// (net/netfilter/ipvs/ip_vs_conn.c, ip_vs_conn_seq_show): "%-3s %08X %04X
// %08X %04X %s %04X %-11s %7u%s" with IPv6 addresses as %pI6. The first
// three entries are captured in the VM (three connections through a masq
// service to a local listener); the others follow the same format: an
// IPv6 connection, a persistence template, a fwmark template (the mark
// in the virtual address), an IPv6 real behind an IPv4 service, and a
// SIP persistence engine's data.
const connSample = `Pro FromIP   FPrt ToIP     TPrt DestIP   DPrt State       Expires PEName PEData
TCP C6336401 C582 C6336401 1F90 C6336401 2382 TIME_WAIT       119
TCP C6336401 C57C C6336401 1F90 C6336401 2382 TIME_WAIT       119
TCP C6336401 C578 C6336401 1F90 C6336401 2382 ESTABLISHED     899
UDP 2001:0db8:0000:0000:0000:0000:0000:0099 D431 2001:0db8:0000:0000:0000:0000:0000:0050 0035 2001:0db8:0001:0000:0000:0000:0000:0011 0035 UDP             299
IP  CB007109 0000 C0000232 0050 C633640B 0050 NONE            359
IP  CB007109 0000 00000007 0000 C633640B 0000 NONE            300
TCP CB007109 D431 C0000232 0050 2001:0db8:0001:0000:0000:0000:0000:0014 0050 SYN_RECV         59
UDP CB007109 13C4 C0000232 13C4 C633640B 13C4 UDP             180 sip a84b4c76e66710@client.example
`

func TestParseConnections(t *testing.T) {
	got, err := ParseConnections(strings.NewReader(connSample))
	if err != nil {
		t.Fatal(err)
	}
	ap := netip.MustParseAddrPort
	want := []Connection{
		{Protocol: "TCP", Client: ap("198.51.100.1:50562"), Virtual: ap("198.51.100.1:8080"), Dest: ap("198.51.100.1:9090"), State: "TIME_WAIT", Expires: 119 * time.Second},
		{Protocol: "TCP", Client: ap("198.51.100.1:50556"), Virtual: ap("198.51.100.1:8080"), Dest: ap("198.51.100.1:9090"), State: "TIME_WAIT", Expires: 119 * time.Second},
		{Protocol: "TCP", Client: ap("198.51.100.1:50552"), Virtual: ap("198.51.100.1:8080"), Dest: ap("198.51.100.1:9090"), State: "ESTABLISHED", Expires: 899 * time.Second},
		{Protocol: "UDP", Client: ap("[2001:db8::99]:54321"), Virtual: ap("[2001:db8::50]:53"), Dest: ap("[2001:db8:1::11]:53"), State: "UDP", Expires: 299 * time.Second},
		{Protocol: "IP", Client: ap("203.0.113.9:0"), Virtual: ap("192.0.2.50:80"), Dest: ap("198.51.100.11:80"), State: "NONE", Expires: 359 * time.Second},
		{Protocol: "IP", Client: ap("203.0.113.9:0"), Virtual: ap("0.0.0.7:0"), Dest: ap("198.51.100.11:0"), State: "NONE", Expires: 300 * time.Second},
		{Protocol: "TCP", Client: ap("203.0.113.9:54321"), Virtual: ap("192.0.2.50:80"), Dest: ap("[2001:db8:1::14]:80"), State: "SYN_RECV", Expires: 59 * time.Second},
		{Protocol: "UDP", Client: ap("203.0.113.9:5060"), Virtual: ap("192.0.2.50:5060"), Dest: ap("198.51.100.11:5060"), State: "UDP", Expires: 180 * time.Second,
			PEName: "sip", PEData: "a84b4c76e66710@client.example"},
	}
	if diff := cmp.Diff(want, got, cmpAddrPorts); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	var templates int
	for _, c := range got {
		if c.Template() {
			templates++
		}
	}
	if templates != 2 {
		t.Errorf("%d templates, want 2", templates)
	}
}

var cmpAddrPorts = cmp.Comparer(func(a, b netip.AddrPort) bool { return a == b })

func TestParseConnectionsEmptyAndBad(t *testing.T) {
	header := strings.SplitAfter(connSample, "\n")[0]
	if got, err := ParseConnections(strings.NewReader(header)); err != nil || len(got) != 0 {
		t.Errorf("empty table: %v, %v", got, err)
	}
	for _, bad := range []string{
		"",
		"IP Virtual Server version 1.2.1 (size=4096)\n",
		header + "TCP C6336401 C582 C6336401 1F90 C6336401 2382 TIME_WAIT\n",
		header + "TCP C63364 C582 C6336401 1F90 C6336401 2382 TIME_WAIT 119\n",
		header + "TCP C6336401 C58 C6336401 1F90 C6336401 2382 TIME_WAIT 119\n",
		header + "TCP 2001:db8::zz C582 C6336401 1F90 C6336401 2382 TIME_WAIT 119\n",
		header + "TCP C6336401 C582 C6336401 1F90 C6336401 2382 TIME_WAIT -1\n",
	} {
		if _, err := ParseConnections(strings.NewReader(bad)); err == nil {
			t.Errorf("ParseConnections(%q) succeeded", bad)
		}
	}
}

func TestReadConnections(t *testing.T) {
	p := filepath.Join(t.TempDir(), "ip_vs_conn")
	if err := os.WriteFile(p, []byte(connSample), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := ReadConnections(p)
	if err != nil || len(got) != 8 {
		t.Fatalf("ReadConnections: %d entries, %v", len(got), err)
	}
	if _, err := ReadConnections(filepath.Join(t.TempDir(), "missing")); err == nil || !strings.Contains(err.Error(), "read IPVS connections") {
		t.Errorf("missing file: %v", err)
	}
}

func FuzzParseConnections(f *testing.F) {
	f.Add(connSample)
	f.Fuzz(func(t *testing.T, s string) {
		conns, err := ParseConnections(strings.NewReader(s))
		if err != nil {
			return
		}
		for _, c := range conns {
			if !c.Client.Addr().IsValid() || !c.Virtual.Addr().IsValid() || !c.Dest.Addr().IsValid() {
				t.Fatalf("invalid address in %+v", c)
			}
		}
	})
}
