package config

import (
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Limits from the protocols and the kernel, named so the rules read like
// their sources.
const (
	maxIfName       = 15 // IFNAMSIZ - 1
	maxVIPs         = 255
	maxPassword     = 8 // RFC 2338 simple-text authentication data
	v3MinInterval   = 10 * time.Millisecond
	v3MaxInterval   = 4095 * 10 * time.Millisecond // 12-bit field in centiseconds
	v2MaxInterval   = 255 * time.Second            // 8-bit field in seconds
	maxPreemptDelay = 1000 * time.Second
	maxTrackWeight  = 253
	maxRealWeight   = 65535
	maxThreshold    = 1<<32 - 1
	maxPersistence  = 1<<32 - 1 // seconds, u32 in the kernel
)

var (
	schedulers = []string{"rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "fo", "ovf", "mh", "twos"}
	// flag -> scheduler it belongs to
	schedulerFlags = map[string]string{"sh-fallback": "sh", "sh-port": "sh", "mh-fallback": "mh", "mh-port": "mh"}
	forwardings    = []string{"nat", "dr", "tun"}
	checkTypes     = []string{"tcp", "http", "https", "udp", "dns", "exec", "none"}
	dnsRecords     = []string{"A", "AAAA", "CNAME", "MX", "NS", "PTR", "SOA", "SRV", "TXT"}
	ifNameRe       = regexp.MustCompile(`^[^/\s:]+$`)
	userRe         = regexp.MustCompile(`^[a-z_][a-z0-9_.-]*\$?$`)
)

// v validates one configuration, recording every problem.
type v struct {
	cfg *Config
	c   *collector
	// quiet holds paths whose errors were already reported elsewhere: a
	// real server's check inherits the service's values, and a bad value
	// there is reported once, at the service.
	quiet map[string]bool
}

func validate(cfg *Config, c *collector) {
	x := &v{cfg: cfg, c: c}
	x.node()
	scripts := x.scripts()
	services := x.services()
	instances := x.instances(scripts, services)
	x.syncGroups(instances)
	x.sync(instances)
}

// warnf records a problem that does not stop the file from loading.
func (x *v) warnf(path, format string, args ...any) {
	at := x.c.locate(path)
	x.c.warns = append(x.c.warns, Error{File: x.c.file, Line: at.line, Column: at.col, Path: path, Msg: fmt.Sprintf(format, args...)})
}

func (x *v) errf(path, format string, args ...any) {
	for p := path; p != ""; p = parentPath(p) {
		if x.quiet[p] {
			return
		}
	}
	x.c.addf(path, format, args...)
}

func (x *v) oneOf(path, val string, allowed []string) bool {
	if !slices.Contains(allowed, val) {
		x.errf(path, "%q is not one of %s", val, strings.Join(allowed, ", "))
		return false
	}
	return true
}

func (x *v) intRange(path string, val, lo, hi int) bool {
	if val < lo || val > hi {
		x.errf(path, "%d is out of range %d..%d", val, lo, hi)
		return false
	}
	return true
}

func (x *v) required(path, val string) bool {
	if strings.TrimSpace(val) == "" {
		x.errf(path, "required")
		return false
	}
	return true
}

func (x *v) ifName(path, name string) {
	switch {
	case len(name) > maxIfName:
		x.errf(path, "interface name %q is longer than %d characters", name, maxIfName)
	case name == "." || name == ".." || !ifNameRe.MatchString(name):
		x.errf(path, "%q is not a valid interface name", name)
	}
}

func (x *v) nonNegative(path string, d time.Duration) bool {
	if d < 0 {
		x.errf(path, "must not be negative, got %s", d)
		return false
	}
	return true
}

func (x *v) positive(path string, d time.Duration) bool {
	if d <= 0 {
		x.errf(path, "must be greater than 0, got %s", d)
		return false
	}
	return true
}

func (x *v) wholeSeconds(path string, d time.Duration) {
	if d%time.Second != 0 {
		x.errf(path, "%s is not a whole number of seconds (the kernel counts in seconds)", d)
	}
}

// argv checks a command written as an argument list (no shell).
func (x *v) argv(path string, argv []string, required bool) {
	if len(argv) == 0 {
		if required {
			x.errf(path, "required: the command as a list, e.g. [\"/usr/bin/pgrep\", \"-x\", \"nginx\"]")
		}
		return
	}
	if strings.TrimSpace(argv[0]) == "" {
		x.errf(joinIndex(path, 0), "the program must not be empty")
		return
	}
	if len(argv) == 1 && strings.ContainsAny(argv[0], " \t") {
		x.errf(joinIndex(path, 0), "%q looks like a shell command line; commands run without a shell, write each argument as its own list item", argv[0])
	}
}

// uniqueNames reports duplicate names among n items.
func (x *v) uniqueNames(kind string, n int, name func(int) string, path func(int) string) map[string]int {
	seen := map[string]int{}
	for i := 0; i < n; i++ {
		nm := name(i)
		if nm == "" {
			continue
		}
		if first, dup := seen[nm]; dup {
			x.errf(path(i)+".name", "duplicate %s name %q (also %s)", kind, nm, path(first))
			continue
		}
		seen[nm] = i
	}
	return seen
}

// maxSocketPath is the longest path a unix socket can be bound to.
const maxSocketPath = 107

func (x *v) node() {
	n := &x.cfg.Node
	x.required("node.name", n.Name)
	for _, f := range []struct{ path, val string }{
		{"node.control_socket", n.ControlSocket},
		{"node.state_dir", n.StateDir},
	} {
		if x.required(f.path, f.val) && !filepath.IsAbs(f.val) {
			x.errf(f.path, "%q must be an absolute path", f.val)
		}
	}
	// sun_path holds 108 bytes with the terminating NUL.
	if len(n.ControlSocket) > maxSocketPath {
		x.errf("node.control_socket", "%q is %d bytes long; a unix socket path has at most %d", n.ControlSocket, len(n.ControlSocket), maxSocketPath)
	}
	if n.MetricsAddress != "" {
		host, port, err := net.SplitHostPort(n.MetricsAddress)
		if err != nil {
			x.errf("node.metrics_address", "%q is not HOST:PORT (e.g. \"127.0.0.1:9580\")", n.MetricsAddress)
		} else if p, err := strconv.ParseUint(port, 10, 16); err != nil || p == 0 {
			x.errf("node.metrics_address", "port %q must be a number 1..65535", port)
		} else if host != "" {
			if _, err := netip.ParseAddr(host); err != nil {
				x.errf("node.metrics_address", "host %q must be an IP address (or empty for all addresses)", host)
			}
		}
	}
	x.oneOf("node.log.level", n.Log.Level, []string{"debug", "info", "warn", "error"})
	x.oneOf("node.log.format", n.Log.Format, []string{"text", "json"})
	if n.VRRPRTPriority < 0 || n.VRRPRTPriority > MaxVRRPRTPriority {
		x.errf("node.vrrp_rt_priority", "%d is out of range 0..%d (0 = no real-time scheduling; above %d the VRRP thread would starve the interrupt threads that carry its adverts)", n.VRRPRTPriority, MaxVRRPRTPriority, MaxVRRPRTPriority)
	}
}

func (x *v) scripts() map[string]int {
	ss := x.cfg.VRRP.Scripts
	p := func(i int) string { return joinIndex("vrrp.scripts", i) }
	for i := range ss {
		s := &ss[i]
		x.required(p(i)+".name", s.Name)
		x.argv(p(i)+".command", s.Command, true)
		x.positive(p(i)+".interval", s.Interval)
		if x.positive(p(i)+".timeout", s.Timeout) && s.Interval > 0 && s.Timeout > s.Interval {
			x.errf(p(i)+".timeout", "%s is longer than interval %s: runs would overlap", s.Timeout, s.Interval)
		}
		x.intRange(p(i)+".rise", s.Rise, 1, 1000)
		x.intRange(p(i)+".fall", s.Fall, 1, 1000)
		if s.User != "" && !userRe.MatchString(s.User) {
			x.errf(p(i)+".user", "%q is not a valid user name", s.User)
		}
	}
	return x.uniqueNames("script", len(ss), func(i int) string { return ss[i].Name }, p)
}

func (x *v) instances(scripts, services map[string]int) map[string]int {
	is := x.cfg.VRRP.Instances
	p := func(i int) string { return joinIndex("vrrp.instances", i) }
	type routerKey struct {
		ifname string
		v6     bool
		vrid   int
	}
	routers := map[routerKey]int{}
	vipOwner := map[netip.Addr]string{}
	for i := range is {
		in := &is[i]
		ip := p(i)
		x.required(ip+".name", in.Name)
		if x.required(ip+".interface", in.Interface) {
			x.ifName(ip+".interface", in.Interface)
		}
		// A missing vrid stays 0, which the range check reports.
		vridOK := x.intRange(ip+".vrid", in.VRID, 1, 255)
		x.intRange(ip+".priority", in.Priority, 1, 255)
		versionOK := x.oneOfInt(ip+".version", in.Version, 2, 3)

		v6 := x.instanceVIPs(ip, in, vipOwner)
		if v6 && in.Version == 2 {
			x.errf(ip+".version", "IPv6 instances require VRRP version 3 (RFC 5798); version 2 is IPv4 only")
		}
		if versionOK {
			x.advertInterval(ip+".advert_interval", in.Version, in.AdvertInterval)
		}
		if x.nonNegative(ip+".preempt_delay", in.PreemptDelay) && in.PreemptDelay > maxPreemptDelay {
			x.errf(ip+".preempt_delay", "%s is out of range 0s..%s", in.PreemptDelay, maxPreemptDelay)
		}
		if in.PreemptDelay > 0 && !in.Preempt {
			x.errf(ip+".preempt_delay", "preempt_delay is set but preempt is false")
		}
		if in.Priority == 255 && !in.Preempt {
			// RFC 5798 6.4.1: the owner always takes over at once.
			x.errf(ip+".preempt", "priority 255 is the address owner, which always preempts; preempt: false cannot apply")
		}
		if len(in.VirtualAddresses) > 0 {
			fam := familyName(v6)
			if in.SourceAddress.IsValid() && in.SourceAddress.Is6() != v6 {
				x.errf(ip+".source_address", "%s is not %s like the instance's virtual addresses", in.SourceAddress, fam)
			}
			x.noZone(ip+".source_address", in.SourceAddress)
			seen := map[netip.Addr]bool{}
			for j, peer := range in.UnicastPeers {
				pp := joinIndex(ip+".unicast_peers", j)
				switch {
				case !peer.IsValid():
					x.errf(pp, "required: the peer's address")
				case peer.Zone() != "":
					x.errf(pp, "%s: an address takes no zone here; the instance's interface is the zone", peer)
				case peer.Is6() != v6:
					x.errf(pp, "%s is not %s like the instance's virtual addresses", peer, fam)
				case seen[peer]:
					x.errf(pp, "duplicate peer %s", peer)
				case peer == in.SourceAddress:
					x.errf(pp, "%s is this node's own source_address", peer)
				case peer.IsMulticast() || peer.IsUnspecified():
					x.errf(pp, "%s is not a unicast address", peer)
				}
				seen[peer] = true
			}
		}
		if a := in.Authentication; a != nil {
			ap := ip + ".authentication"
			x.oneOf(ap+".type", a.Type, []string{"pass"})
			if a.Password == "" {
				x.errf(ap+".password", "required")
			} else if len(a.Password) > maxPassword {
				x.errf(ap+".password", "is %d bytes; VRRPv2 simple-text passwords hold at most %d", len(a.Password), maxPassword)
			}
			if in.Version != 2 {
				// keepalived ignores it too; --strict makes it an error.
				x.warnf(ap, "ignored: authentication exists only in VRRP version 2 (RFC 5798 removed it); set version: 2 or remove the block")
				in.Authentication = nil
			}
		}
		if x.oneOf(ip+".checksum_compat", in.ChecksumCompat, []string{"rfc", "v2"}) && in.ChecksumCompat == "v2" && v6 {
			x.errf(ip+".checksum_compat", "v2 applies to IPv4 only; IPv6 always uses the pseudo-header")
		}
		x.garp(ip+".garp", &in.GARP)
		x.track(ip+".track", &in.Track, scripts, services)
		for _, n := range []struct {
			key  string
			argv []string
		}{{"master", in.Notify.Master}, {"backup", in.Notify.Backup}, {"fault", in.Notify.Fault}, {"stop", in.Notify.Stop}, {"any", in.Notify.Any}} {
			x.argv(ip+".notify."+n.key, n.argv, false)
		}

		if in.Interface != "" && vridOK {
			k := routerKey{in.Interface, v6, in.VRID}
			if first, dup := routers[k]; dup {
				x.errf(ip+".vrid", "vrid %d is already used on %s by %s (%s); a VRID must be unique per interface and address family", in.VRID, in.Interface, is[first].Name, p(first))
			} else {
				routers[k] = i
			}
		}
	}
	return x.uniqueNames("instance", len(is), func(i int) string { return is[i].Name }, p)
}

func (x *v) noZone(path string, a netip.Addr) {
	if a.Zone() != "" {
		x.errf(path, "%s: an address takes no zone here; the interface is the zone", a)
	}
}

func (x *v) oneOfInt(path string, val int, allowed ...int) bool {
	if !slices.Contains(allowed, val) {
		strs := make([]string, len(allowed))
		for i, a := range allowed {
			strs[i] = strconv.Itoa(a)
		}
		x.errf(path, "%d is not one of %s", val, strings.Join(strs, ", "))
		return false
	}
	return true
}

func familyName(v6 bool) string {
	if v6 {
		return "IPv6"
	}
	return "IPv4"
}

// instanceVIPs checks an instance's virtual addresses and returns whether
// they are IPv6.
func (x *v) instanceVIPs(ip string, in *Instance, owner map[netip.Addr]string) bool {
	vp := ip + ".virtual_addresses"
	vas := in.VirtualAddresses
	switch {
	case len(vas) == 0:
		x.errf(vp, "at least one virtual address is required")
		return false
	case len(vas) > maxVIPs:
		x.errf(vp, "%d addresses; an instance holds at most %d", len(vas), maxVIPs)
	}
	var v6 bool
	for j := range vas {
		va := &vas[j]
		jp := joinIndex(vp, j)
		if !va.Address.IsValid() {
			if !x.c.seen[jp] && !x.c.seen[jp+".address"] {
				x.errf(jp+".address", "required")
			}
			continue
		}
		a := va.Address.Addr()
		if j == 0 || !vas[0].Address.IsValid() {
			v6 = a.Is6()
		} else if a.Is6() != vas[0].Address.Addr().Is6() {
			x.errf(jp, "%s is %s but %s is %s: one address family per instance (use a second instance)", a, familyName(a.Is6()), vas[0].Address.Addr(), familyName(vas[0].Address.Addr().Is6()))
		}
		switch {
		case a.Zone() != "":
			x.errf(jp, "%s: a virtual address takes no zone; set interface instead", va.Address)
		case a.IsUnspecified() || a.IsMulticast() || a.IsLoopback():
			x.errf(jp, "%s cannot be a virtual address", a)
		}
		if other, dup := owner[a]; dup {
			x.errf(jp, "%s is already a virtual address of %s", a, other)
		} else {
			owner[a] = ip
		}
		ifname := in.Interface
		if va.Interface != "" {
			x.ifName(jp+".interface", va.Interface)
			ifname = va.Interface
		}
		if va.Label != "" {
			lp := jp + ".label"
			switch {
			case a.Is6():
				x.errf(lp, "labels exist for IPv4 addresses only")
			case len(va.Label) > maxIfName:
				x.errf(lp, "%q is longer than %d characters", va.Label, maxIfName)
			case ifname != "" && !strings.HasPrefix(va.Label, ifname):
				// The kernel rejects a label that does not start with the device name.
				x.errf(lp, "%q must start with the interface name %q (e.g. %q)", va.Label, ifname, ifname+":vip")
			}
		}
	}
	return v6
}

func (x *v) advertInterval(path string, version int, d time.Duration) {
	if version == 2 {
		if d%time.Second != 0 || d < time.Second || d > v2MaxInterval {
			x.errf(path, "%s: VRRPv2 adverts are whole seconds 1s..255s (RFC 3768); use version 3 for sub-second intervals", d)
		}
		return
	}
	if d < v3MinInterval || d > v3MaxInterval || d%v3MinInterval != 0 {
		x.errf(path, "%s: VRRPv3 adverts are 10ms..40.95s in steps of 10ms (RFC 5798 centiseconds)", d)
	}
}

func (x *v) garp(gp string, g *GARP) {
	x.intRange(gp+".repeat", g.Repeat, 0, 1000)
	x.nonNegative(gp+".interval", g.Interval)
	x.nonNegative(gp+".master_delay", g.MasterDelay)
	if x.nonNegative(gp+".refresh", g.Refresh) && g.Refresh > 0 && g.Refresh < 100*time.Millisecond {
		x.errf(gp+".refresh", "%s would flood the segment; use 100ms or more (0 = off)", g.Refresh)
	}
}

func (x *v) track(tp string, t *Track, scripts, services map[string]int) {
	check := func(kind string, refs []TrackRef, known map[string]int) {
		lp := tp + "." + kind
		seen := map[string]bool{}
		for i, r := range refs {
			rp := joinIndex(lp, i)
			if !x.required(rp+".name", r.Name) {
				continue
			}
			switch {
			case seen[r.Name]:
				x.errf(rp+".name", "%q is tracked twice", r.Name)
			case kind == "interfaces":
				x.ifName(rp+".name", r.Name)
			default:
				if _, ok := known[r.Name]; !ok {
					where := map[string]string{"scripts": "vrrp.scripts", "services": "ipvs.virtual_services"}[kind]
					x.errf(rp+".name", "no %s named %q", where, r.Name)
				}
			}
			seen[r.Name] = true
			x.intRange(rp+".weight", r.Weight, -maxTrackWeight, maxTrackWeight)
		}
	}
	check("interfaces", t.Interfaces, nil)
	check("scripts", t.Scripts, scripts)
	check("services", t.Services, services)
}

func (x *v) syncGroups(instances map[string]int) {
	gs := x.cfg.VRRP.SyncGroups
	p := func(i int) string { return joinIndex("vrrp.sync_groups", i) }
	member := map[string]string{}
	for i := range gs {
		g := &gs[i]
		x.required(p(i)+".name", g.Name)
		if len(g.Instances) == 0 {
			x.errf(p(i)+".instances", "at least one instance is required")
		}
		known := g.Instances[:0:0]
		for j, name := range g.Instances {
			jp := joinIndex(p(i)+".instances", j)
			if _, ok := instances[name]; !ok {
				// keepalived drops such a member with a warning; so do we,
				// and --strict makes it an error.
				x.warnf(jp, "ignored: no vrrp.instances named %q", name)
				continue
			}
			known = append(known, name)
			if other, dup := member[name]; dup {
				if other == g.Name {
					x.errf(jp, "%q is listed twice", name)
				} else {
					x.errf(jp, "%q is already in sync group %q; an instance belongs to one group", name, other)
				}
				continue
			}
			member[name] = g.Name
		}
		if len(g.Instances) > 0 && len(known) == 0 {
			x.warnf(p(i)+".instances", "ignored: the group names no existing instance")
		}
		g.Instances = known
	}
	x.uniqueNames("sync group", len(gs), func(i int) string { return gs[i].Name }, p)
}

func (x *v) services() map[string]int {
	vss := x.cfg.IPVS.VirtualServices
	p := func(i int) string { return joinIndex("ipvs.virtual_services", i) }
	t := &x.cfg.IPVS.Timeouts
	for _, f := range []struct {
		key string
		d   time.Duration
	}{{"tcp", t.TCP}, {"tcp_fin", t.TCPFin}, {"udp", t.UDP}} {
		path := "ipvs.timeouts." + f.key
		if x.nonNegative(path, f.d) {
			x.wholeSeconds(path, f.d)
		}
	}
	if x.positive("ipvs.resync_interval", x.cfg.IPVS.ResyncInterval) && x.cfg.IPVS.ResyncInterval < time.Second {
		x.errf("ipvs.resync_interval", "%s is too often: each resync reads the whole table; use 1s or more", x.cfg.IPVS.ResyncInterval)
	}
	type svcKey struct {
		proto string
		ep    netip.AddrPort
		mark  uint32
		v6    bool
	}
	keys := map[svcKey]int{}
	for i := range vss {
		vs := &vss[i]
		sp := p(i)
		x.required(sp+".name", vs.Name)
		hasAddr := !vs.Address.IsZero()
		protoOK := x.oneOf(sp+".protocol", vs.Protocol, []string{"tcp", "udp", "sctp"})
		switch {
		case vs.FWMark > 0 && hasAddr:
			x.errf(sp+".address", "a firewall-mark service has no address; set either address or fwmark")
		case vs.FWMark > 0:
			if vs.Family == "" {
				vs.Family = "ipv4"
			}
			x.oneOf(sp+".family", vs.Family, []string{"ipv4", "ipv6"})
		case !hasAddr:
			// A fwmark that failed to decode already explains the gap.
			if !x.c.seen[sp+".address"] && !x.c.seen[sp+".fwmark"] {
				x.errf(sp+".address", "required: IP:port, or fwmark for a firewall-mark service")
			}
		default:
			if vs.Family != "" && x.oneOf(sp+".family", vs.Family, []string{"ipv4", "ipv6"}) && (vs.Family == "ipv6") != vs.Address.Addr.Is6() {
				x.errf(sp+".family", "%s contradicts the address %s (family is for fwmark services; leave it out)", vs.Family, vs.Address.Addr)
			}
			x.serviceAddress(sp, vs)
		}
		if x.oneOf(sp+".scheduler", vs.Scheduler, schedulers) {
			seen := map[string]bool{}
			for j, f := range vs.SchedulerFlags {
				fp := joinIndex(sp+".scheduler_flags", j)
				owner, ok := schedulerFlags[f]
				switch {
				case !ok:
					x.errf(fp, "%q is not one of sh-fallback, sh-port, mh-fallback, mh-port", f)
				case owner != vs.Scheduler:
					x.errf(fp, "%s applies to the %s scheduler, not %s", f, owner, vs.Scheduler)
				case seen[f]:
					x.errf(fp, "%s is listed twice", f)
				}
				seen[f] = true
			}
		}
		x.persistence(sp, vs)
		if vs.OnePacket && vs.FWMark == 0 && vs.Protocol != "udp" && protoOK {
			x.errf(sp+".one_packet", "one-packet scheduling is for UDP services, not %s", vs.Protocol)
		}
		x.oneOf(sp+".forwarding", vs.Forwarding, forwardings)
		if vs.Quorum < 0 {
			x.errf(sp+".quorum", "must not be negative, got %d", vs.Quorum)
		}
		x.oneOf(sp+".on_failure", vs.OnFailure, []string{"remove", "quiesce"})
		if ss := vs.SorryServer; ss != nil {
			ssp := sp + ".sorry_server"
			if ss.Forwarding == "" {
				ss.Forwarding = vs.Forwarding
			}
			if x.oneOf(ssp+".forwarding", ss.Forwarding, forwardings) {
				x.realAddress(ssp, vs, ss.Address, ss.Forwarding)
			}
		}
		x.check(sp+".check", vs, &vs.Check, nil)
		x.realServers(sp, vs)

		if vs.FWMark > 0 || (hasAddr && protoOK && vs.Address.HasPort) {
			k := svcKey{mark: vs.FWMark, v6: vs.IPv6()}
			if vs.FWMark == 0 {
				k.proto, k.ep = vs.Protocol, netip.AddrPortFrom(vs.Address.Addr, vs.Address.Port)
			}
			if first, dup := keys[k]; dup {
				x.errf(sp, "same virtual service as %s (%s)", vss[first].Name, p(first))
			} else {
				keys[k] = i
			}
		}
	}
	return x.uniqueNames("virtual service", len(vss), func(i int) string { return vss[i].Name }, p)
}

func (x *v) serviceAddress(sp string, vs *VirtualService) {
	a := vs.Address
	switch {
	case !a.HasPort:
		x.errf(sp+".address", "%s has no port; write IP:port ([IPv6]:port), or use fwmark", a.Addr)
	case a.Port == 0 && vs.Persistence.Timeout == 0:
		x.errf(sp+".address", "port 0 (all ports) is only allowed for persistent services")
	}
	if a.Addr.Zone() != "" || a.Addr.IsUnspecified() || a.Addr.IsMulticast() {
		x.errf(sp+".address", "%s cannot be a virtual service address", a.Addr)
	}
}

func (x *v) persistence(sp string, vs *VirtualService) {
	pp := sp + ".persistence"
	p := &vs.Persistence
	if x.nonNegative(pp+".timeout", p.Timeout) {
		x.wholeSeconds(pp+".timeout", p.Timeout)
		if p.Timeout > maxPersistence*time.Second {
			x.errf(pp+".timeout", "%s is too long", p.Timeout)
		}
	}
	if p.Netmask == "" {
		return
	}
	if p.Timeout == 0 {
		x.errf(pp+".netmask", "netmask applies only to persistent services (set persistence.timeout)")
		return
	}
	if _, err := PersistenceBits(p.Netmask, vs.IPv6()); err != nil {
		x.errf(pp+".netmask", "%v", err)
	}
}

// PersistenceBits parses a persistence netmask into a prefix length.
func PersistenceBits(mask string, v6 bool) (int, error) {
	max := 32
	if v6 {
		max = 128
	}
	s := strings.TrimPrefix(mask, "/")
	if n, err := strconv.Atoi(s); err == nil {
		if n < 1 || n > max {
			return 0, fmt.Errorf("prefix length %d is out of range 1..%d", n, max)
		}
		return n, nil
	}
	if v6 {
		return 0, fmt.Errorf("%q: IPv6 services take a prefix length like 64", mask)
	}
	a, err := netip.ParseAddr(mask)
	if err != nil || !a.Is4() {
		return 0, fmt.Errorf("%q is not a netmask (e.g. 255.255.255.0 or 24)", mask)
	}
	b := a.As4()
	ones, bits := net.IPMask(b[:]).Size()
	if bits == 0 || ones == 0 {
		return 0, fmt.Errorf("%q is not a contiguous netmask", mask)
	}
	return ones, nil
}

// realAddress checks a real (or sorry) server address against its service.
func (x *v) realAddress(rp string, vs *VirtualService, ep Endpoint, fwd string) {
	ap := rp + ".address"
	if ep.IsZero() {
		if !x.c.seen[ap] {
			x.errf(ap, "required")
		}
		return
	}
	if !ep.HasPort && fwd == "nat" {
		x.errf(ap, "%s has no port; NAT needs IP:port (the port may only be omitted for dr and tun)", ep.Addr)
	}
	if ep.HasPort && ep.Port == 0 && !(vs.Persistence.Timeout > 0 && vs.Address.Port == 0) {
		x.errf(ap, "port 0 is not a real server port")
	}
	if !vs.Address.IsZero() || vs.FWMark > 0 {
		if ep.Addr.Is6() != vs.IPv6() && fwd != "tun" {
			x.errf(ap, "%s is %s but the service is %s; mixed families work only with tun forwarding", ep.Addr, familyName(ep.Addr.Is6()), familyName(vs.IPv6()))
		}
	}
	if ep.Addr.Zone() != "" || ep.Addr.IsUnspecified() || ep.Addr.IsMulticast() {
		x.errf(ap, "%s cannot be a real server address", ep.Addr)
	}
}

func (x *v) realServers(sp string, vs *VirtualService) {
	seen := map[Endpoint]int{}
	for j := range vs.RealServers {
		rs := &vs.RealServers[j]
		rp := joinIndex(sp+".real_servers", j)
		if rs.Forwarding == "" {
			rs.Forwarding = vs.Forwarding
		}
		if x.oneOf(rp+".forwarding", rs.Forwarding, forwardings) {
			x.realAddress(rp, vs, rs.Address, rs.Forwarding)
		}
		if !rs.Address.IsZero() {
			key := rs.Address
			if !key.HasPort && vs.Address.HasPort {
				key.Port, key.HasPort = vs.Address.Port, true
			}
			if first, dup := seen[key]; dup {
				x.errf(rp+".address", "%s is already real server %d of this service", rs.Address, first)
			} else {
				seen[key] = j
			}
		}
		x.intRange(rp+".weight", rs.Weight, 0, maxRealWeight)
		x.intRange(rp+".upper_threshold", rs.UpperThreshold, 0, maxThreshold)
		x.intRange(rp+".lower_threshold", rs.LowerThreshold, 0, maxThreshold)
		switch {
		case rs.LowerThreshold > 0 && rs.UpperThreshold == 0:
			// The kernel refuses lower > upper even when upper is 0 (off).
			x.errf(rp+".lower_threshold", "needs upper_threshold: the lower threshold is where a server that reached the upper one takes connections again")
		case rs.UpperThreshold > 0 && rs.LowerThreshold > rs.UpperThreshold:
			x.errf(rp+".lower_threshold", "%d is above upper_threshold %d", rs.LowerThreshold, rs.UpperThreshold)
		}
		x.quiet = map[string]bool{}
		for key := range checkKeys {
			if x.c.has(sp+".check."+key) && !x.c.has(rp+".check."+key) {
				x.quiet[rp+".check."+key] = true
			}
		}
		x.check(rp+".check", vs, &rs.Check, rs)
		x.quiet = nil
	}
}

// checkKeys are the YAML keys of a check.
var checkKeys, _ = fieldsOf(reflect.TypeFor[Check]())

// checkFields lists which check keys each type uses; a key written for a type
// that ignores it is an error, not a silent no-op.
var checkFields = map[string][]string{
	"path": {"http", "https"}, "host": {"http", "https"}, "expect_status": {"http", "https"},
	"body_regex": {"http", "https"}, "tls_skip_verify": {"https"},
	"send": {"udp"}, "expect": {"udp"},
	"query": {"dns"}, "record": {"dns"},
	"command": {"exec"}, "dynamic_weight": {"exec"},
	"port": {"tcp", "http", "https", "udp", "dns"},
}

// check validates a check. For a real server (rs != nil) c is the merged
// check and only keys written under the real server are checked for
// applicability; the service's own keys were checked at the service.
func (x *v) check(cp string, vs *VirtualService, c *Check, rs *RealServer) {
	if !x.oneOf(cp+".type", c.Type, checkTypes) {
		return
	}
	if rs != nil && !x.c.has(cp) {
		// Nothing written here: the service level reported any problem.
		// What is left is whether the service's check can reach this server.
		x.checkPort(cp, vs, c, rs)
		return
	}
	cv := reflect.ValueOf(c).Elem()
	for key, types := range checkFields {
		// A key left at its zero value ("tls_skip_verify: false") asks
		// for nothing, so it is not flagged.
		if x.c.has(cp+"."+key) && !cv.FieldByIndex(checkKeys[key].index).IsZero() && !slices.Contains(types, c.Type) {
			x.errf(cp+"."+key, "%s does not apply to a %s check (only %s)", key, c.Type, strings.Join(types, ", "))
		}
	}
	if x.positive(cp+".interval", c.Interval) && x.positive(cp+".timeout", c.Timeout) && c.Timeout > c.Interval {
		x.errf(cp+".timeout", "%s is longer than interval %s: checks would overlap", c.Timeout, c.Interval)
	}
	x.intRange(cp+".rise", c.Rise, 1, 1000)
	x.intRange(cp+".fall", c.Fall, 1, 1000)
	x.intRange(cp+".port", c.Port, 0, 65535)
	if c.Type == "none" {
		return
	}
	switch c.Type {
	case "http", "https":
		if c.Path != "" && !strings.HasPrefix(c.Path, "/") {
			x.errf(cp+".path", "%q must start with /", c.Path)
		}
		for i, s := range c.ExpectStatus {
			x.intRange(joinIndex(cp+".expect_status", i), s, 100, 599)
		}
		if c.BodyRegex != "" {
			if _, err := regexp.Compile(c.BodyRegex); err != nil {
				x.errf(cp+".body_regex", "%v", err)
			}
		}
		if strings.ContainsAny(c.Host, " /\t") {
			x.errf(cp+".host", "%q is not a host name", c.Host)
		}
	case "udp":
		if c.Send == "" {
			x.errf(cp+".send", "required for a udp check: the payload to send")
		}
		for _, f := range []struct{ key, val string }{{"send", c.Send}, {"expect", c.Expect}} {
			if _, err := Payload(f.val); err != nil {
				x.errf(cp+"."+f.key, "%v", err)
			}
		}
	case "dns":
		if c.Query == "" {
			x.errf(cp+".query", "required for a dns check: the name to resolve")
		}
		if c.Record == "" {
			c.Record = "A"
		}
		c.Record = strings.ToUpper(c.Record)
		x.oneOf(cp+".record", c.Record, dnsRecords)
	case "exec":
		x.argv(cp+".command", c.Command, true)
	}
	if rs != nil {
		x.checkPort(cp, vs, c, rs)
	}
}

// checkPort makes sure a network check knows which port to probe: its own
// port, the real server's, or the service's.
func (x *v) checkPort(cp string, vs *VirtualService, c *Check, rs *RealServer) {
	if c.Type == "none" || c.Type == "exec" || c.Port != 0 {
		return
	}
	if rs != nil && (rs.Address.HasPort && rs.Address.Port != 0 || x.c.seen[cp[:len(cp)-len(".check")]+".address"]) {
		// The port is known, or the address is already reported.
		return
	}
	if vs.Address.HasPort && vs.Address.Port != 0 {
		return
	}
	x.errf(cp+".port", "required: a %s check of %s needs a port (the real server and the service have none)", c.Type, rs.Address)
}

// Payload decodes a udp check payload: text, or hex with a "0x" prefix.
func Payload(s string) ([]byte, error) {
	if h, ok := strings.CutPrefix(s, "0x"); ok {
		b, err := hex.DecodeString(h)
		if err != nil {
			return nil, fmt.Errorf("%q is not valid hex after 0x", s)
		}
		return b, nil
	}
	return []byte(s), nil
}

func (x *v) sync(instances map[string]int) {
	s := x.cfg.Sync
	if s == nil {
		return
	}
	if x.required("sync.interface", s.Interface) {
		x.ifName("sync.interface", s.Interface)
	}
	x.intRange("sync.sync_id", s.SyncID, 0, 255)
	if s.Follow != "" {
		if _, ok := instances[s.Follow]; !ok {
			x.errf("sync.follow", "no vrrp.instances named %q", s.Follow)
		}
	}
	x.intRange("sync.max_len", s.MaxLen, 0, 65535)
	x.noZone("sync.group", s.Group)
	if !s.Group.IsValid() {
		x.errf("sync.group", "required: a multicast group (default 224.0.0.81)")
	} else if !s.Group.IsMulticast() {
		x.errf("sync.group", "%s is not a multicast address", s.Group)
	}
	x.intRange("sync.port", s.Port, 1, 65535)
	x.intRange("sync.ttl", s.TTL, 1, 255)
	if r := s.Relay; r != nil {
		for _, f := range []struct {
			key string
			ep  Endpoint
		}{{"listen", r.Listen}, {"peer", r.Peer}} {
			fp := "sync.relay." + f.key
			switch {
			case x.c.seen[fp]:
			case f.ep.IsZero():
				x.errf(fp, "required: IP:port")
			case !f.ep.HasPort || f.ep.Port == 0:
				x.errf(fp, "%s needs a port (IP:port)", f.ep.Addr)
			}
		}
		if !r.Listen.IsZero() && !r.Peer.IsZero() && r.Listen.Addr.Is6() != r.Peer.Addr.Is6() {
			x.errf("sync.relay.peer", "%s and listen %s are of different address families", r.Peer.Addr, r.Listen.Addr)
		}
		if x.required("sync.relay.key_file", r.KeyFile) && !filepath.IsAbs(r.KeyFile) {
			x.errf("sync.relay.key_file", "%q must be an absolute path", r.KeyFile)
		}
	}
}
