package ipvs

import (
	"fmt"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// ipvsadmService is one virtual service as listed by `ipvsadm -Ln`.
type ipvsadmService struct {
	Proto string // TCP, UDP, SCTP or FWM
	Addr  string // "192.0.2.50:80", "[2001:db8::1]:80" or the fwmark
	Sched string
	Flags string // the rest of the line, e.g. "persistent 300"
	Reals []ipvsadmReal
}

// ipvsadmReal is one real server line ("  -> ADDR:PORT Forward Weight ...").
type ipvsadmReal struct {
	Addr    string
	Forward string // Masq, Route, Tunnel, Local
	Weight  int
}

// parseIpvsadmList parses the output of `ipvsadm -Ln` (numeric listing).
// Real servers are sorted by address so results compare independently of
// the kernel's list order.
func parseIpvsadmList(out string) ([]ipvsadmService, error) {
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if len(lines) < 3 ||
		!strings.HasPrefix(lines[0], "IP Virtual Server version") ||
		!strings.HasPrefix(lines[1], "Prot LocalAddress:Port Scheduler Flags") ||
		!strings.HasPrefix(strings.TrimSpace(lines[2]), "-> RemoteAddress:Port") {
		return nil, fmt.Errorf("unexpected ipvsadm -Ln header:\n%s", out)
	}
	var svcs []ipvsadmService
	for i, l := range lines[3:] {
		f := strings.Fields(l)
		switch {
		case len(f) == 0:
			continue
		case f[0] == "->":
			if len(svcs) == 0 {
				return nil, fmt.Errorf("line %d: real server before any service: %q", i+4, l)
			}
			if len(f) != 6 {
				return nil, fmt.Errorf("line %d: want 6 fields in %q", i+4, l)
			}
			w, err := strconv.Atoi(f[3])
			if err != nil {
				return nil, fmt.Errorf("line %d: weight: %v", i+4, err)
			}
			s := &svcs[len(svcs)-1]
			s.Reals = append(s.Reals, ipvsadmReal{Addr: f[1], Forward: f[2], Weight: w})
		case !strings.HasPrefix(l, " ") && len(f) >= 3:
			svcs = append(svcs, ipvsadmService{Proto: f[0], Addr: f[1], Sched: f[2], Flags: strings.Join(f[3:], " ")})
		default:
			return nil, fmt.Errorf("line %d: cannot parse %q", i+4, l)
		}
	}
	for i := range svcs {
		sort.Slice(svcs[i].Reals, func(a, b int) bool { return svcs[i].Reals[a].Addr < svcs[i].Reals[b].Addr })
	}
	return svcs, nil
}

func TestParseIpvsadmList(t *testing.T) {
	// Layout of ipvsadm v1.31 on kernel 6.1 (the first service as captured
	// in the VM, reals in reverse order; the others follow the same format).
	out := `IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn
TCP  192.0.2.50:80 wrr
  -> 198.51.100.12:80             Masq    2      0          0         
  -> 198.51.100.11:80             Masq    1      0          0         
UDP  [2001:db8::50]:53 rr persistent 300
  -> [2001:db8::11]:53            Route   0      0          3         
FWM  7 sh
`
	got, err := parseIpvsadmList(out)
	if err != nil {
		t.Fatal(err)
	}
	want := []ipvsadmService{
		{Proto: "TCP", Addr: "192.0.2.50:80", Sched: "wrr", Reals: []ipvsadmReal{
			{Addr: "198.51.100.11:80", Forward: "Masq", Weight: 1},
			{Addr: "198.51.100.12:80", Forward: "Masq", Weight: 2},
		}},
		{Proto: "UDP", Addr: "[2001:db8::50]:53", Sched: "rr", Flags: "persistent 300", Reals: []ipvsadmReal{
			{Addr: "[2001:db8::11]:53", Forward: "Route", Weight: 0},
		}},
		{Proto: "FWM", Addr: "7", Sched: "sh"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got  %+v\nwant %+v", got, want)
	}

	empty := "IP Virtual Server version 1.2.1 (size=4096)\nProt LocalAddress:Port Scheduler Flags\n  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n"
	if got, err := parseIpvsadmList(empty); err != nil || len(got) != 0 {
		t.Fatalf("empty table: %v, %v", got, err)
	}
	for _, bad := range []string{
		"",
		"modprobe: FATAL: Module ip_vs not found\n",
		empty + "  -> 198.51.100.11:80 Masq 1 0 0\n",
		empty + "TCP  192.0.2.50:80 wrr\n  -> 198.51.100.11:80 Masq x 0 0\n",
	} {
		if _, err := parseIpvsadmList(bad); err == nil {
			t.Errorf("parseIpvsadmList(%q) succeeded", bad)
		}
	}
}
