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
			// An IPv6 fwmark service reads "FWM  8 IPv6 rr".
			if f[0] == "FWM" && f[2] == "IPv6" && len(f) >= 4 {
				f = append([]string{f[0], f[1] + " IPv6"}, f[3:]...)
			}
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
FWM  8 IPv6 mh (mh-fallback)
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
		{Proto: "FWM", Addr: "8 IPv6", Sched: "mh", Flags: "(mh-fallback)"},
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

// ipvsadmSaveLine is one rule of `ipvsadm -S -n` (save format), e.g.
//
//	-A -t 192.0.2.50:80 -s wrr -p 300 -M 255.255.255.0
//	-a -t 192.0.2.50:80 -r 198.51.100.14:80 -i -w 3 --tun-type gre --tun-nocsum
type ipvsadmSaveLine struct {
	Cmd     string // -A (service) or -a (real server)
	Service string // "-t 192.0.2.50:80", "-u [2001:db8::50]:53", "--sctp-service ...", "-f 7", "-f 8 -6"
	Real    string // the -r argument of -a
	// Opts holds every other option with its argument ("" for switches
	// such as -o, -m, -g, -i, --tun-nocsum).
	Opts map[string]string
}

// ipvsadm's save options, with whether they take an argument.
var ipvsadmSaveOpts = map[string]bool{
	"-s": true, "-p": true, "-M": true, "-b": true, "--pe": true,
	"-w": true, "-x": true, "-y": true, "--tun-type": true, "--tun-port": true,
	"-o": false, "-m": false, "-g": false, "-i": false,
	"--tun-nocsum": false, "--tun-csum": false, "--tun-remcsum": false,
}

// parseIpvsadmSave parses `ipvsadm -S -n`. Unknown options are errors, so
// a format change shows up instead of being ignored. Lines are sorted by
// service, then -A before -a, then real server.
func parseIpvsadmSave(out string) ([]ipvsadmSaveLine, error) {
	var lines []ipvsadmSaveLine
	for i, l := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
		f := strings.Fields(l)
		if len(f) == 0 {
			continue
		}
		if f[0] != "-A" && f[0] != "-a" {
			return nil, fmt.Errorf("line %d: not -A or -a: %q", i+1, l)
		}
		sl := ipvsadmSaveLine{Cmd: f[0], Opts: map[string]string{}}
		if len(f) < 3 {
			return nil, fmt.Errorf("line %d: no service in %q", i+1, l)
		}
		switch f[1] {
		case "-t", "-u", "--sctp-service", "-f":
			sl.Service = f[1] + " " + f[2]
		default:
			return nil, fmt.Errorf("line %d: unknown service option %q", i+1, f[1])
		}
		rest := f[3:]
		if f[1] == "-f" && len(rest) > 0 && rest[0] == "-6" {
			sl.Service += " -6"
			rest = rest[1:]
		}
		for j := 0; j < len(rest); j++ {
			o := rest[j]
			if o == "-r" && sl.Cmd == "-a" && j+1 < len(rest) {
				sl.Real = rest[j+1]
				j++
				continue
			}
			arg, known := ipvsadmSaveOpts[o]
			if !known {
				return nil, fmt.Errorf("line %d: unknown option %q in %q", i+1, o, l)
			}
			if _, dup := sl.Opts[o]; dup {
				return nil, fmt.Errorf("line %d: %s twice in %q", i+1, o, l)
			}
			if arg {
				if j+1 >= len(rest) {
					return nil, fmt.Errorf("line %d: %s without argument", i+1, o)
				}
				sl.Opts[o] = rest[j+1]
				j++
			} else {
				sl.Opts[o] = ""
			}
		}
		if sl.Cmd == "-a" && sl.Real == "" {
			return nil, fmt.Errorf("line %d: -a without -r: %q", i+1, l)
		}
		lines = append(lines, sl)
	}
	sortSaveLines(lines)
	return lines, nil
}

func sortSaveLines(lines []ipvsadmSaveLine) {
	sort.SliceStable(lines, func(a, b int) bool {
		x, y := lines[a], lines[b]
		if x.Service != y.Service {
			return x.Service < y.Service
		}
		if x.Cmd != y.Cmd {
			return x.Cmd == "-A"
		}
		return x.Real < y.Real
	})
}

// parseIpvsadmThresholds parses `ipvsadm -Ln --thresholds` into the upper
// and lower threshold of each real server, keyed by "PROTO ADDR" of the
// service (as in ipvsadmService) and the real server's address.
func parseIpvsadmThresholds(out string) (map[string]map[string][2]uint32, error) {
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if len(lines) < 3 || !strings.HasPrefix(lines[1], "Prot LocalAddress:Port") ||
		!strings.Contains(lines[1], "Uthreshold Lthreshold") {
		return nil, fmt.Errorf("unexpected ipvsadm --thresholds header:\n%s", out)
	}
	res := map[string]map[string][2]uint32{}
	var cur map[string][2]uint32
	for i, l := range lines[3:] {
		f := strings.Fields(l)
		switch {
		case len(f) == 0:
		case f[0] == "->":
			if cur == nil || len(f) != 6 {
				return nil, fmt.Errorf("line %d: cannot parse %q", i+4, l)
			}
			u, err1 := strconv.ParseUint(f[2], 10, 32)
			lo, err2 := strconv.ParseUint(f[3], 10, 32)
			if err1 != nil || err2 != nil {
				return nil, fmt.Errorf("line %d: thresholds in %q", i+4, l)
			}
			cur[f[1]] = [2]uint32{uint32(u), uint32(lo)}
		case len(f) >= 2:
			key := f[0] + " " + f[1]
			if f[0] == "FWM" && len(f) >= 3 && f[2] == "IPv6" {
				key += " IPv6"
			}
			cur = map[string][2]uint32{}
			res[key] = cur
		default:
			return nil, fmt.Errorf("line %d: cannot parse %q", i+4, l)
		}
	}
	return res, nil
}

func TestParseIpvsadmSave(t *testing.T) {
	// Captured from ipvsadm v1.31 in the VM (kernel 6.1).
	out := `-A -t 192.0.2.50:80 -s wrr -p 300 -M 255.255.255.0
-a -t 192.0.2.50:80 -r 198.51.100.11:80 -m -w 1
-a -t 192.0.2.50:80 -r 198.51.100.14:80 -i -w 3 --tun-type gre --tun-nocsum
-a -t 192.0.2.50:80 -r [2001:db8:1::14]:80 -i -w 3 --tun-type ipip
-A --sctp-service 192.0.2.50:90 -s none
-A -u [2001:db8::50]:53 -s sh -p 60 -M 64 -o -b sh-fallback,sh-port
-A -f 8 -6 -s rr
`
	got, err := parseIpvsadmSave(out)
	if err != nil {
		t.Fatal(err)
	}
	want := []ipvsadmSaveLine{
		{Cmd: "-A", Service: "--sctp-service 192.0.2.50:90", Opts: map[string]string{"-s": "none"}},
		{Cmd: "-A", Service: "-f 8 -6", Opts: map[string]string{"-s": "rr"}},
		{Cmd: "-A", Service: "-t 192.0.2.50:80", Opts: map[string]string{"-s": "wrr", "-p": "300", "-M": "255.255.255.0"}},
		{Cmd: "-a", Service: "-t 192.0.2.50:80", Real: "198.51.100.11:80", Opts: map[string]string{"-m": "", "-w": "1"}},
		{Cmd: "-a", Service: "-t 192.0.2.50:80", Real: "198.51.100.14:80", Opts: map[string]string{"-i": "", "-w": "3", "--tun-type": "gre", "--tun-nocsum": ""}},
		{Cmd: "-a", Service: "-t 192.0.2.50:80", Real: "[2001:db8:1::14]:80", Opts: map[string]string{"-i": "", "-w": "3", "--tun-type": "ipip"}},
		{Cmd: "-A", Service: "-u [2001:db8::50]:53", Opts: map[string]string{"-s": "sh", "-p": "60", "-M": "64", "-o": "", "-b": "sh-fallback,sh-port"}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got  %+v\nwant %+v", got, want)
	}
	for _, bad := range []string{
		"-A -t 192.0.2.50:80 -s wrr --frobnicate\n",
		"-a -t 192.0.2.50:80 -m -w 1\n",
		"-A -t 192.0.2.50:80 -s\n",
		"IP Virtual Server version 1.2.1\n",
	} {
		if _, err := parseIpvsadmSave(bad); err == nil {
			t.Errorf("parseIpvsadmSave(%q) succeeded", bad)
		}
	}
}

func TestParseIpvsadmThresholds(t *testing.T) {
	// Captured from ipvsadm v1.31 in the VM.
	out := `IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port            Uthreshold Lthreshold ActiveConn InActConn 
  -> RemoteAddress:Port
TCP  192.0.2.50:80 wrr persistent 300 mask 255.255.255.0
  -> 198.51.100.11:80             10         5          0          0         
  -> [2001:db8:1::14]:80          0          0          0          0         
FWM  8 IPv6 rr
  -> [2001:db8:1::11]:0           7          3          0          0         
SCTP 192.0.2.50:90 none
`
	got, err := parseIpvsadmThresholds(out)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]map[string][2]uint32{
		"TCP 192.0.2.50:80":  {"198.51.100.11:80": {10, 5}, "[2001:db8:1::14]:80": {0, 0}},
		"FWM 8 IPv6":         {"[2001:db8:1::11]:0": {7, 3}},
		"SCTP 192.0.2.50:90": {},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got  %v\nwant %v", got, want)
	}
}
