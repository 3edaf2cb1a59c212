package kaimport

import (
	"cmp"
	"fmt"
	"math"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Note is a keepalived option that was not carried over, or not exactly.
type Note struct {
	File   string `json:"file"`
	Line   int    `json:"line"`
	Option string `json:"option"`
	Why    string `json:"why"`
}

func (n Note) String() string {
	return fmt.Sprintf("%s:%d: %s: %s", n.File, n.Line, n.Option, n.Why)
}

// notes collects Notes in the order found, once per file, line and option
// (a service-wide option inherited by ten real servers is one note).
type notes struct {
	list []Note
	seen map[Note]bool
}

func (ns *notes) add(pos Pos, option, why string) {
	if option == "" {
		option = `""` // an empty quoted word where a keyword belongs
	}
	n := Note{File: pos.File, Line: pos.Line, Option: option, Why: why}
	key := n
	key.Why = ""
	if ns.seen == nil {
		ns.seen = map[Note]bool{}
	}
	if ns.seen[key] {
		return
	}
	ns.seen[key] = true
	ns.list = append(ns.list, n)
}

// Convert reads the keepalived configuration at path, with its includes,
// and returns the equivalent directord configuration as YAML, and what was
// not carried over.
func Convert(path string) ([]byte, []Note, error) {
	return ConvertFS(OSFS{}, path)
}

// ConvertFS is Convert reading through fsys.
func ConvertFS(fsys FS, path string) ([]byte, []Note, error) {
	data, err := fsys.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("read %s: %w", path, err)
	}
	return ConvertSource(fsys, path, data)
}

// ConvertSource converts data, read from path; includes are read through
// fsys relative to path's directory.
func ConvertSource(fsys FS, path string, data []byte) ([]byte, []Note, error) {
	ns := &notes{}
	lx := &lexer{fsys: fsys, notes: ns}
	if err := lx.lexFile(path, data); err != nil {
		return nil, nil, err
	}
	tree, err := parse(lx.toks)
	if err != nil {
		return nil, nil, err
	}
	c := &conv{notes: ns}
	cfg := c.convert(tree)
	out, err := render(cfg, path)
	if err != nil {
		return nil, nil, err
	}
	// In file order: files as they were first read, lines within each.
	slices.SortStableFunc(ns.list, func(a, b Note) int {
		return cmp.Or(cmp.Compare(slices.Index(lx.order, a.File), slices.Index(lx.order, b.File)), cmp.Compare(a.Line, b.Line))
	})
	return out, ns.list, nil
}

// keepalived's defaults, where they differ from directord's.
const (
	kaDelayLoop      = 60 * time.Second // virtual_server delay_loop
	kaConnectTimeout = 5 * time.Second  // checker connect_timeout
	kaPersistence    = 360              // persistence_timeout without a value, seconds
	kaVRRPVersion    = 2
	kaPriority       = 100
	kaScheduler      = "wlc"
)

var schedulers = []string{"rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "fo", "ovf", "mh", "twos"}

type conv struct {
	*notes
	g       globals
	scripts map[string]*scriptInfo
	out     outConfig
	// inst records the converted instances by name.
	inst map[string]*instInfo
}

type globals struct {
	routerID         string
	vrrpVersion      int
	garpRepeat       *int
	garpDelay        *dur
	garpRefresh      *dur
	garpInterval     *dur
	gnaInterval      *dur
	scriptUser       string
	defaultInterface string
	lvsSync          *stmt
	timeouts         *outTimeouts
}

type scriptInfo struct {
	out    *outScript
	weight int
	// reverse is keepalived's "weight N reverse".
	reverse bool
}

type instInfo struct {
	out  *outInstance
	vrid int
}

// groupInfo is what a sync group means for its members' tracking.
type groupInfo struct {
	name string
	// weights is keepalived's sync_group_tracking_weight: without it,
	// keepalived ignores weights of objects tracked by group members.
	weights bool
	// tracking pushed down from the group to every member
	ifaces  []*stmt
	scripts []*stmt
}

func (c *conv) convert(tree []*stmt) *outConfig {
	c.scripts = map[string]*scriptInfo{}
	c.inst = map[string]*instInfo{}
	var instances, groups, services []*stmt
	for _, s := range tree {
		switch s.key {
		case "global_defs":
			c.globalDefs(s)
		case "vrrp_script":
			c.script(s)
		case "vrrp_instance":
			instances = append(instances, s)
		case "vrrp_sync_group":
			groups = append(groups, s)
		case "virtual_server":
			services = append(services, s)
		case "virtual_server_group":
			c.add(s.pos, s.key, "virtual server groups are not supported: write one virtual service per address")
		case "static_ipaddress", "static_routes", "static_rules":
			c.add(s.pos, s.key, "directord manages no static addresses, routes or rules: configure them with the system's network configuration")
		default:
			c.unsupported(s)
		}
	}
	members := c.syncGroups(groups)
	for _, s := range instances {
		c.instance(s, members)
	}
	if len(c.out.VRRP.syncGroupsOrNil()) > 0 {
		// Members that did not convert leave the group.
		for _, g := range c.out.VRRP.SyncGroups {
			g.Instances = slices.DeleteFunc(g.Instances, func(n string) bool { return c.inst[n] == nil })
		}
		c.out.VRRP.SyncGroups = slices.DeleteFunc(c.out.VRRP.SyncGroups, func(g *outSyncGroup) bool { return len(g.Instances) == 0 })
	}
	for _, s := range services {
		c.virtualServer(s)
	}
	c.syncDaemon()
	if c.g.routerID != "" {
		c.out.Node = &outNode{Name: c.g.routerID}
	}
	if c.g.timeouts != nil {
		c.ipvs().Timeouts = c.g.timeouts
	}
	if c.out.VRRP != nil && len(c.out.VRRP.Instances) == 0 && len(c.out.VRRP.Scripts) == 0 && len(c.out.VRRP.SyncGroups) == 0 {
		c.out.VRRP = nil
	}
	if c.out.Node == nil && c.out.VRRP == nil && c.out.IPVS == nil && c.out.Sync == nil {
		// An empty document is not a configuration; node: {} is.
		c.out.Node = &outNode{}
	}
	return &c.out
}

func (v *outVRRP) syncGroupsOrNil() []*outSyncGroup {
	if v == nil {
		return nil
	}
	return v.SyncGroups
}

func (c *conv) vrrp() *outVRRP {
	if c.out.VRRP == nil {
		c.out.VRRP = &outVRRP{}
	}
	return c.out.VRRP
}

func (c *conv) ipvs() *outIPVS {
	if c.out.IPVS == nil {
		c.out.IPVS = &outIPVS{}
	}
	return c.out.IPVS
}

// unsupported notes an option directord has no equivalent for.
func (c *conv) unsupported(s *stmt) {
	c.add(s.pos, s.key, whyNot(s.key))
}

// whyNot explains the options operators most often meet; everything else
// gets the plain answer.
func whyNot(key string) string {
	switch {
	case key == "notification_email" || key == "notification_email_from" || strings.HasPrefix(key, "smtp_"):
		return "directord sends no email: use notify commands or the events stream"
	case key == "enable_script_security":
		return "directord always runs commands without a shell, as the script's user"
	case key == "vrrp_strict" || key == "strict_mode":
		return "no strict mode: directord follows RFC 5798 and installs no packet filters"
	case key == "use_vmac" || key == "vmac_xmit_base":
		return "no VRRP virtual MAC: directord announces VIPs with the interface's MAC (gratuitous ARP / NA)"
	case key == "dont_track_primary":
		return "directord always tracks the instance's interface (FAULT while it is down)"
	case key == "virtual_routes" || key == "virtual_rules":
		return "directord installs no routes or rules with a VIP"
	case key == "track_file" || key == "track_process" || key == "track_bfd" || key == "vrrp_track_file" || key == "vrrp_track_process" || key == "bfd_instance":
		return "only interfaces, scripts and virtual services can be tracked: wrap the check in a vrrp_script"
	case strings.HasPrefix(key, "notify_") || key == "notify":
		return "no notify hook for this event"
	}
	return "no directord equivalent"
}

// ---- values

func (c *conv) intArg(s *stmt, i, lo, hi int) (int, bool) {
	if i >= len(s.args) {
		c.add(s.pos, s.key, "value missing; left out")
		return 0, false
	}
	n, err := strconv.Atoi(s.args[i].text)
	if err != nil || n < lo || n > hi {
		c.add(s.pos, s.key, fmt.Sprintf("%q is not a number %d..%d; left out", s.args[i].text, lo, hi))
		return 0, false
	}
	return n, true
}

// secondsArg reads keepalived seconds, which may have a fraction.
func (c *conv) secondsArg(s *stmt, i int) (time.Duration, bool) {
	if i >= len(s.args) {
		c.add(s.pos, s.key, "value missing; left out")
		return 0, false
	}
	f, err := strconv.ParseFloat(s.args[i].text, 64)
	if err != nil || f < 0 || f > 1e6 || math.IsNaN(f) {
		c.add(s.pos, s.key, fmt.Sprintf("%q is not a number of seconds; left out", s.args[i].text))
		return 0, false
	}
	return time.Duration(math.Round(f*1000)) * time.Millisecond, true
}

func (c *conv) wordArg(s *stmt, i int) (string, bool) {
	if i >= len(s.args) || s.args[i].text == "" {
		c.add(s.pos, s.key, "value missing; left out")
		return "", false
	}
	return s.args[i].text, true
}

// command turns keepalived script arguments into argv. A quoted argument
// holds the command and its arguments, split like keepalived splits them.
func command(args []token) []string {
	var argv []string
	for _, a := range args {
		if a.quoted {
			argv = append(argv, splitCommand(a.text)...)
		} else {
			argv = append(argv, a.text)
		}
	}
	return argv
}

// splitCommand splits at blanks, honouring single and double quotes and
// backslash escapes.
func splitCommand(s string) []string {
	var out []string
	var cur strings.Builder
	have := false
	var quote byte
	for i := 0; i < len(s); i++ {
		ch := s[i]
		switch {
		case quote != 0:
			if ch == quote {
				quote = 0
			} else if ch == '\\' && quote == '"' && i+1 < len(s) {
				i++
				cur.WriteByte(s[i])
			} else {
				cur.WriteByte(ch)
			}
		case ch == '\'' || ch == '"':
			quote, have = ch, true
		case ch == '\\' && i+1 < len(s):
			i++
			cur.WriteByte(s[i])
			have = true
		case ch == ' ' || ch == '\t':
			if have {
				out = append(out, cur.String())
				cur.Reset()
				have = false
			}
		default:
			cur.WriteByte(ch)
			have = true
		}
	}
	if have {
		out = append(out, cur.String())
	}
	return out
}

// ---- global_defs

func (c *conv) globalDefs(s *stmt) {
	for _, k := range s.body {
		switch k.key {
		case "router_id":
			if v, ok := c.wordArg(k, 0); ok {
				c.g.routerID = v
			}
		case "vrrp_version":
			if v, ok := c.intArg(k, 0, 2, 3); ok {
				c.g.vrrpVersion = v
			}
		case "vrrp_garp_master_repeat":
			if v, ok := c.intArg(k, 0, 0, 1000); ok {
				c.g.garpRepeat = &v
			}
		case "vrrp_garp_master_delay":
			if v, ok := c.secondsArg(k, 0); ok {
				c.g.garpDelay = durp(v)
			}
		case "vrrp_garp_master_refresh":
			if v, ok := c.secondsArg(k, 0); ok {
				c.g.garpRefresh = durp(v)
			}
		case "vrrp_garp_interval":
			if v, ok := c.secondsArg(k, 0); ok {
				c.g.garpInterval = durp(v)
			}
		case "vrrp_gna_interval":
			if v, ok := c.secondsArg(k, 0); ok {
				c.g.gnaInterval = durp(v)
			}
		case "script_user":
			if v, ok := c.wordArg(k, 0); ok {
				c.g.scriptUser = v
				c.add(k.pos, k.key, "carried to the user of every vrrp_script without one; notify commands and exec checks run as directord's user, and the group is not carried")
			}
		case "default_interface":
			if v, ok := c.wordArg(k, 0); ok {
				c.g.defaultInterface = v
			}
		case "lvs_sync_daemon":
			c.g.lvsSync = k
		case "lvs_timeouts":
			c.lvsTimeouts(k)
		default:
			c.unsupported(k)
		}
	}
}

func (c *conv) lvsTimeouts(s *stmt) {
	t := &outTimeouts{}
	for i := 0; i+1 < len(s.args); i += 2 {
		secs, err := strconv.Atoi(s.args[i+1].text)
		if err != nil || secs < 0 {
			c.add(s.pos, s.key, fmt.Sprintf("%s %q is not a number of seconds; left out", s.args[i].text, s.args[i+1].text))
			continue
		}
		d := dur(time.Duration(secs) * time.Second)
		switch s.args[i].text {
		case "tcp":
			t.TCP = d
		case "tcpfin":
			t.TCPFin = d
		case "udp":
			t.UDP = d
		default:
			c.add(s.pos, s.key, fmt.Sprintf("timeout %q is not one of tcp, tcpfin, udp; left out", s.args[i].text))
		}
	}
	if len(s.args)%2 != 0 {
		c.add(s.pos, s.key, fmt.Sprintf("%q has no value; left out", s.args[len(s.args)-1].text))
	}
	if *t != (outTimeouts{}) {
		c.g.timeouts = t
	}
}

// ---- vrrp_script

func (c *conv) script(s *stmt) {
	name, ok := c.wordArg(s, 0)
	if !ok {
		return
	}
	if c.scripts[name] != nil {
		c.add(s.pos, s.key, fmt.Sprintf("a second vrrp_script %s; left out", name))
		return
	}
	out := &outScript{Name: name, Interval: dur(time.Second), Rise: 1, Fall: 1, src: s.pos}
	info := &scriptInfo{out: out}
	var timeout time.Duration
	var timeoutAt *stmt
	for _, k := range s.body {
		switch k.key {
		case "script":
			out.Command = command(k.args)
		case "interval":
			if v, ok := c.secondsArg(k, 0); ok && v > 0 {
				out.Interval = dur(v)
			}
		case "timeout":
			if v, ok := c.secondsArg(k, 0); ok && v > 0 {
				timeout, timeoutAt = v, k
			}
		case "weight":
			if v, ok := c.intArg(k, 0, -253, 253); ok {
				info.weight = v
			}
			if k.argText(1) == "reverse" {
				info.reverse = true
			}
		case "rise":
			if v, ok := c.intArg(k, 0, 1, 1000); ok {
				out.Rise = v
			}
		case "fall":
			if v, ok := c.intArg(k, 0, 1, 1000); ok {
				out.Fall = v
			}
		case "user":
			if v, ok := c.wordArg(k, 0); ok {
				out.User = v
				if len(k.args) > 1 {
					c.add(k.pos, k.key, "the group is not carried: the script runs with the user's groups")
				}
			}
		case "init_fail":
			c.add(k.pos, k.key, "a tracked script counts as healthy until its first rise successes or fall failures")
		default:
			c.unsupported(k)
		}
	}
	if len(out.Command) == 0 {
		c.add(s.pos, s.key, fmt.Sprintf("vrrp_script %s has no script; left out", name))
		return
	}
	// keepalived waits for a script as long as its interval unless told
	// otherwise.
	out.Timeout = out.Interval
	if timeoutAt != nil {
		out.Timeout = dur(timeout)
		if timeout > time.Duration(out.Interval) {
			c.add(timeoutAt.pos, "timeout", fmt.Sprintf("%s is longer than the interval %s, which directord refuses (runs would overlap); written as %s", dur(timeout), out.Interval, out.Interval))
			out.Timeout = out.Interval
		}
	}
	if out.User == "" {
		out.User = c.g.scriptUser
	}
	c.scripts[name] = info
	c.vrrp().Scripts = append(c.vrrp().Scripts, out)
}

// ---- vrrp_sync_group

func (c *conv) syncGroups(groups []*stmt) map[string]*groupInfo {
	members := map[string]*groupInfo{}
	for _, s := range groups {
		name, ok := c.wordArg(s, 0)
		if !ok {
			continue
		}
		g := &groupInfo{name: name}
		out := &outSyncGroup{Name: name, src: s.pos}
		for _, k := range s.body {
			switch k.key {
			case "group":
				for _, m := range k.body {
					for _, n := range append([]string{m.key}, argTexts(m.args)...) {
						if other, dup := members[n]; dup {
							c.add(m.pos, n, fmt.Sprintf("already in sync group %s; an instance belongs to one group", other.name))
							continue
						}
						members[n] = g
						out.Instances = append(out.Instances, n)
					}
				}
				for _, n := range argTexts(k.args) {
					c.add(k.pos, k.key, fmt.Sprintf("member %q written after group instead of inside { }; left out", n))
				}
			case "track_interface":
				g.ifaces = append(g.ifaces, k.body...)
			case "track_script":
				g.scripts = append(g.scripts, k.body...)
			case "sync_group_tracking_weight":
				g.weights = true
			case "global_tracking":
				// The older name of sync_group_tracking_weight.
				g.weights = true
			case "notify_master", "notify_backup", "notify_fault", "notify_stop", "notify":
				c.add(k.pos, k.key, "sync groups have no notify commands: put the command on the member instances")
			default:
				c.unsupported(k)
			}
		}
		c.vrrp().SyncGroups = append(c.vrrp().SyncGroups, out)
	}
	return members
}

func argTexts(ts []token) []string {
	out := make([]string, len(ts))
	for i, t := range ts {
		out[i] = t.text
	}
	return out
}

// ---- vrrp_instance

func (c *conv) instance(s *stmt, members map[string]*groupInfo) {
	name, ok := c.wordArg(s, 0)
	if !ok {
		return
	}
	if c.inst[name] != nil {
		c.add(s.pos, s.key, fmt.Sprintf("a second vrrp_instance %s; left out", name))
		return
	}
	in := &outInstance{Name: name, src: s.pos}
	var (
		state                     string
		priority, version         int
		advert                    = time.Second
		advertAt                  *stmt
		nopreempt                 *stmt
		preemptDelay              time.Duration
		preemptDelayAt            *stmt
		excluded                  []*stmt
		ifaceRefs, scriptRefs     []*stmt
		garp                      outGARP
		garpInterval, gnaInterval *dur
		syncIface                 *stmt
		authType, authPass        string
		authAt                    *stmt
		notify                    outNotify
		vips                      []*stmt
		versionAt                 *stmt
	)
	for _, k := range s.body {
		switch k.key {
		case "state":
			state = strings.ToUpper(k.argText(0))
			if state == "MASTER" {
				c.add(k.pos, k.key, "no initial state: every router but the address owner (priority 255) starts as BACKUP and the election picks the master")
			}
		case "interface":
			if v, ok := c.wordArg(k, 0); ok {
				in.Interface = v
			}
		case "virtual_router_id":
			if v, ok := c.intArg(k, 0, 1, 255); ok {
				in.VRID = v
			}
		case "priority":
			if v, ok := c.intArg(k, 0, 1, 255); ok {
				priority = v
			}
		case "advert_int":
			if v, ok := c.secondsArg(k, 0); ok && v > 0 {
				advert, advertAt = v, k
			}
		case "version":
			if v, ok := c.intArg(k, 0, 2, 3); ok {
				version, versionAt = v, k
			}
		case "nopreempt":
			nopreempt = k
		case "preempt":
			// keepalived's default; the keyword is accepted and does nothing.
		case "preempt_delay":
			if v, ok := c.secondsArg(k, 0); ok {
				preemptDelay, preemptDelayAt = v, k
			}
		case "old_unicast_checksum":
			// directord notices a peer's old unicast checksum by itself
			// and answers in kind (docs/vrrp.md, Checksums).
		case "accept":
			t := true
			in.Accept = &t
		case "no_accept":
			f := false
			in.Accept = &f
		case "mcast_src_ip", "unicast_src_ip":
			if a, ok := c.addrArg(k, 0); ok {
				in.SourceAddress = a.String()
			}
		case "unicast_peer":
			for _, p := range k.body {
				a, err := netip.ParseAddr(p.key)
				if err != nil {
					c.add(p.pos, p.key, "not an IP address; left out")
					continue
				}
				in.UnicastPeers = append(in.UnicastPeers, a.String())
				if len(p.args) > 0 {
					c.add(p.pos, p.argText(0), "per-peer options (min_ttl, max_ttl) are not supported")
				}
			}
		case "authentication":
			authAt = k
			for _, a := range k.body {
				switch a.key {
				case "auth_type":
					authType = strings.ToUpper(a.argText(0))
				case "auth_pass":
					authPass = a.argText(0)
				default:
					c.unsupported(a)
				}
			}
		case "virtual_ipaddress":
			vips = append(vips, k.body...)
		case "virtual_ipaddress_excluded":
			excluded = append(excluded, k.body...)
		case "track_interface":
			ifaceRefs = append(ifaceRefs, k.body...)
		case "track_script":
			scriptRefs = append(scriptRefs, k.body...)
		case "notify_master":
			notify.Master = c.notifyArgv(k)
		case "notify_backup":
			notify.Backup = c.notifyArgv(k)
		case "notify_fault":
			notify.Fault = c.notifyArgv(k)
		case "notify_stop":
			notify.Stop = c.notifyArgv(k)
		case "notify":
			notify.Any = c.notifyArgv(k)
		case "garp_master_repeat":
			if v, ok := c.intArg(k, 0, 0, 1000); ok {
				garp.Repeat = &v
			}
		case "garp_master_delay":
			if v, ok := c.secondsArg(k, 0); ok {
				garp.MasterDelay = durp(v)
			}
		case "garp_master_refresh":
			if v, ok := c.secondsArg(k, 0); ok {
				garp.Refresh = durp(v)
			}
		case "garp_interval":
			if v, ok := c.secondsArg(k, 0); ok {
				garpInterval = durp(v)
			}
		case "gna_interval":
			if v, ok := c.secondsArg(k, 0); ok {
				gnaInterval = durp(v)
			}
		case "lvs_sync_daemon_interface":
			syncIface = k
		default:
			c.unsupported(k)
		}
	}
	if in.Interface == "" {
		in.Interface = c.g.defaultInterface
		if in.Interface == "" {
			// keepalived's default_interface defaults to eth0.
			in.Interface = "eth0"
		}
	}
	if in.VRID == 0 {
		c.add(s.pos, s.key, fmt.Sprintf("vrrp_instance %s has no virtual_router_id; left out", name))
		return
	}

	// Virtual addresses: one family per instance, the first address decides.
	for _, v := range vips {
		c.vip(in, v, false)
	}
	for _, v := range excluded {
		c.vip(in, v, true)
	}
	if len(in.VirtualAddresses) == 0 {
		c.add(s.pos, s.key, fmt.Sprintf("vrrp_instance %s has no virtual address; left out", name))
		return
	}
	v6 := strings.Contains(vipAddr(in.VirtualAddresses[0]), ":")
	for i := 0; i < len(in.UnicastPeers); i++ {
		if strings.Contains(in.UnicastPeers[i], ":") != v6 {
			c.add(s.pos, "unicast_peer", fmt.Sprintf("%s is not of the instance's address family; left out", in.UnicastPeers[i]))
			in.UnicastPeers = slices.Delete(in.UnicastPeers, i, i+1)
			i--
		}
	}
	if in.SourceAddress != "" && strings.Contains(in.SourceAddress, ":") != v6 {
		c.add(s.pos, "unicast_src_ip", fmt.Sprintf("%s is not of the instance's address family; left out", in.SourceAddress))
		in.SourceAddress = ""
	}

	// Version: the instance's, else global_defs vrrp_version, else
	// keepalived's default 2; IPv6 is always 3.
	in.Version = version
	if in.Version == 0 {
		in.Version = c.g.vrrpVersion
	}
	if in.Version == 0 {
		in.Version = kaVRRPVersion
	}
	if v6 && in.Version == 2 {
		at := s
		if versionAt != nil {
			at = versionAt
		}
		if versionAt != nil || c.g.vrrpVersion == 2 {
			c.add(at.pos, "version", "IPv6 instances speak VRRP version 3 (keepalived switches too); written as version 3")
		}
		in.Version = 3
	}
	in.AdvertInterval = dur(c.advertInterval(in.Version, advert, advertAt))

	// Priority: without one, MASTER means the address owner (255).
	in.Priority = priority
	if in.Priority == 0 {
		in.Priority = kaPriority
		if state == "MASTER" {
			in.Priority = 255
		}
	}

	if nopreempt != nil {
		if in.Priority == 255 {
			c.add(nopreempt.pos, nopreempt.key, "the address owner (priority 255) always preempts")
		} else {
			f := false
			in.Preempt = &f
		}
	}
	if preemptDelayAt != nil && preemptDelay > 0 {
		switch {
		case in.Preempt != nil && !*in.Preempt:
			c.add(preemptDelayAt.pos, preemptDelayAt.key, "has no effect with nopreempt; left out")
		case preemptDelay > 1000*time.Second:
			c.add(preemptDelayAt.pos, preemptDelayAt.key, "longer than 1000s; written as 1000s")
			in.PreemptDelay = dur(1000 * time.Second)
		default:
			in.PreemptDelay = dur(preemptDelay)
		}
	}

	if authAt != nil {
		switch {
		case authType != "PASS":
			c.add(authAt.pos, authAt.key, fmt.Sprintf("auth_type %s is not supported (only PASS); left out", strings.ToLower(cmpOr(authType, "missing"))))
		case in.Version != 2:
			c.add(authAt.pos, authAt.key, "VRRP version 3 has no authentication (keepalived ignores it too); left out")
		case authPass == "":
			c.add(authAt.pos, authAt.key, "auth_pass is missing; left out")
		default:
			if len(authPass) > 8 {
				c.add(authAt.pos, "auth_pass", "longer than 8 bytes; keepalived sends the first 8, and so does the converted file")
				authPass = authPass[:8]
			}
			in.Authentication = &outAuth{Type: "pass", Password: authPass}
		}
	}

	// GARP: the instance's settings over global_defs.
	g := outGARP{Repeat: cmpOrPtr(garp.Repeat, c.g.garpRepeat), MasterDelay: cmpOrPtr(garp.MasterDelay, c.g.garpDelay), Refresh: cmpOrPtr(garp.Refresh, c.g.garpRefresh)}
	if v6 {
		g.Interval = cmpOrPtr(gnaInterval, c.g.gnaInterval)
	} else {
		g.Interval = cmpOrPtr(garpInterval, c.g.garpInterval)
	}
	if g != (outGARP{}) {
		in.GARP = &g
	}

	grp := members[name]
	c.track(in, grp, ifaceRefs, scriptRefs)
	if len(notify.Master)+len(notify.Backup)+len(notify.Fault)+len(notify.Stop)+len(notify.Any) > 0 {
		in.Notify = &notify
	}
	c.vrrp().Instances = append(c.vrrp().Instances, in)
	c.inst[name] = &instInfo{out: in, vrid: in.VRID}
	if syncIface != nil {
		if c.g.lvsSync == nil {
			if ifname, ok := c.wordArg(syncIface, 0); ok {
				c.out.Sync = &outSync{Interface: ifname, SyncID: in.VRID, Follow: name}
			}
		} else {
			c.add(syncIface.pos, syncIface.key, "global_defs lvs_sync_daemon takes precedence")
		}
	}
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func cmpOrPtr[T any](a, b *T) *T {
	if a != nil {
		return a
	}
	return b
}

func vipAddr(v any) string {
	switch v := v.(type) {
	case string:
		return v
	case *outVIP:
		return v.Address
	}
	return ""
}

// advertInterval fits keepalived's advert_int to the version's encoding:
// whole seconds for v2, centiseconds for v3.
func (c *conv) advertInterval(version int, d time.Duration, at *stmt) time.Duration {
	var fit time.Duration
	if version == 2 {
		fit = d.Round(time.Second)
		fit = max(fit, time.Second)
		fit = min(fit, 255*time.Second)
	} else {
		fit = d.Round(10 * time.Millisecond)
		fit = max(fit, 10*time.Millisecond)
		fit = min(fit, 4095*10*time.Millisecond)
	}
	if fit != d && at != nil {
		c.add(at.pos, at.key, fmt.Sprintf("%s does not fit VRRP version %d; written as %s", dur(d), version, dur(fit)))
	}
	return fit
}

func (c *conv) addrArg(s *stmt, i int) (netip.Addr, bool) {
	v, ok := c.wordArg(s, i)
	if !ok {
		return netip.Addr{}, false
	}
	a, err := netip.ParseAddr(v)
	if err != nil {
		c.add(s.pos, s.key, fmt.Sprintf("%q is not an IP address; left out", v))
		return netip.Addr{}, false
	}
	return a, true
}

// vip converts one virtual_ipaddress line:
// ADDR[/LEN] [dev IF] [label LABEL] [brd ADDR] [scope SCOPE] ...
func (c *conv) vip(in *outInstance, v *stmt, excluded bool) {
	addr := v.key
	var (
		prefix netip.Prefix
		err    error
	)
	if strings.Contains(addr, "/") {
		prefix, err = netip.ParsePrefix(addr)
	} else {
		var a netip.Addr
		if a, err = netip.ParseAddr(addr); err == nil {
			prefix = netip.PrefixFrom(a, a.BitLen())
		}
	}
	if err != nil {
		c.add(v.pos, v.key, "not an IP address; left out")
		return
	}
	if len(in.VirtualAddresses) > 0 {
		first := vipAddr(in.VirtualAddresses[0])
		if strings.Contains(first, ":") != prefix.Addr().Is6() {
			c.add(v.pos, v.key, "of the other address family than the instance's first virtual address; directord needs a second instance for it; left out")
			return
		}
	}
	if len(in.VirtualAddresses) >= 255 {
		c.add(v.pos, v.key, "an instance holds at most 255 virtual addresses; left out")
		return
	}
	if excluded {
		c.add(v.pos, "virtual_ipaddress_excluded", v.key+" is bound like the other virtual addresses, but also listed in adverts")
	}
	vip := &outVIP{Address: addr}
	for i := 0; i < len(v.args); i++ {
		opt := v.args[i].text
		val := ""
		if i+1 < len(v.args) {
			val = v.args[i+1].text
		}
		switch opt {
		case "dev":
			if val != in.Interface {
				vip.Interface = val
			}
			i++
		case "label":
			vip.Label = val
			i++
		case "brd", "broadcast", "scope", "peer", "preferred_lft", "track_group", "protocol":
			c.add(v.pos, opt, "not supported on a virtual address; left out")
			i++
		default:
			c.add(v.pos, opt, "not supported on a virtual address; left out")
		}
	}
	if vip.Interface == "" && vip.Label == "" {
		in.VirtualAddresses = append(in.VirtualAddresses, addr)
	} else {
		in.VirtualAddresses = append(in.VirtualAddresses, vip)
	}
}

// notifyArgv reads notify_*: "COMMAND ARGS" [USER [GROUP]].
func (c *conv) notifyArgv(s *stmt) []string {
	if len(s.args) == 0 {
		c.add(s.pos, s.key, "value missing; left out")
		return nil
	}
	argv := command(s.args[:1])
	if len(s.args) > 1 {
		c.add(s.pos, s.key, fmt.Sprintf("user %s is not carried: notify commands run as directord's user", s.args[1].text))
	}
	if len(argv) == 0 {
		return nil
	}
	if s.key != "notify" {
		// keepalived's generic notify gets the same arguments.
		c.add(s.pos, s.key, "carried, but directord appends INSTANCE <name> <STATE> <priority> to the command's arguments")
	}
	return argv
}

// track converts track_interface and track_script. keepalived adds a
// positive weight while the object is up and a negative one while it is
// down; directord adds the weight while the object fails. A positive
// keepalived weight W becomes priority + W and weight -W, which gives the
// same priorities in both states.
func (c *conv) track(in *outInstance, grp *groupInfo, ifaces, scripts []*stmt) {
	type ref struct {
		at      *stmt
		name    string
		weight  int
		reverse bool
		script  bool
		fromGrp bool
	}
	var refs []ref
	parse := func(list []*stmt, script, fromGrp bool) {
		for _, r := range list {
			rf := ref{at: r, name: r.key, script: script, fromGrp: fromGrp}
			weightSet := false
			for i := 0; i < len(r.args); i++ {
				switch r.args[i].text {
				case "weight":
					if i+1 < len(r.args) {
						w, err := strconv.Atoi(r.args[i+1].text)
						if err != nil || w < -253 || w > 253 {
							c.add(r.pos, r.key, fmt.Sprintf("weight %q is not a number -253..253; tracked with weight 0", r.args[i+1].text))
						} else {
							rf.weight, weightSet = w, true
						}
						i++
					}
				case "reverse":
					rf.reverse = true
				case "noreverse":
					rf.reverse = false
				default:
					c.add(r.pos, r.args[i].text, "not supported on a tracked object")
				}
			}
			if script {
				si := c.scripts[r.key]
				if si == nil {
					c.add(r.pos, r.key, "no vrrp_script of this name; not tracked")
					continue
				}
				if !weightSet {
					rf.weight, rf.reverse = si.weight, si.reverse
				}
			}
			if fromGrp {
				// keepalived: a group's tracked objects put the whole
				// group in FAULT, whatever their weight.
				rf.weight = 0
			}
			refs = append(refs, rf)
		}
	}
	parse(ifaces, false, false)
	parse(scripts, true, false)
	if grp != nil {
		parse(grp.ifaces, false, true)
		parse(grp.scripts, true, true)
	}
	bump := 0
	t := &outTrack{}
	for _, r := range refs {
		if r.reverse {
			c.add(r.at.pos, r.name, "reverse tracking is not supported; not tracked")
			continue
		}
		w := r.weight
		if w != 0 && grp != nil && !grp.weights {
			if r.script {
				// keepalived drops weighted scripts of a sync group member.
				c.add(r.at.pos, r.name, fmt.Sprintf("weighted script in sync group %s: keepalived ignores it without sync_group_tracking_weight, so it is not tracked", grp.name))
				continue
			}
			c.add(r.at.pos, r.name, fmt.Sprintf("weight in sync group %s: keepalived ignores it without sync_group_tracking_weight; tracked with weight 0 (FAULT)", grp.name))
			w = 0
		}
		if w > 0 && in.Priority < 255 {
			bump += w
		}
		if w > 0 {
			w = -w
		}
		list := &t.Interfaces
		if r.script {
			list = &t.Scripts
		}
		if slices.ContainsFunc(*list, func(o outRef) bool { return o.Name == r.name }) {
			c.add(r.at.pos, r.name, "tracked twice; the first one is kept")
			continue
		}
		*list = append(*list, outRef{Name: r.name, Weight: w})
	}
	if bump > 0 {
		p := in.Priority + bump
		if p > 254 {
			c.add(in.src, "priority", fmt.Sprintf("priority %d plus positive track weights %d exceeds 254; written as 254", in.Priority, bump))
			p = 254
		}
		in.Priority = p
	}
	if len(t.Interfaces) > 0 || len(t.Scripts) > 0 {
		in.Track = t
	}
}

// ---- lvs_sync_daemon

// syncDaemon converts global_defs lvs_sync_daemon:
// INTERFACE [INSTANCE] [id ID] [maxlen LEN] [port PORT] [ttl TTL] [group ADDR]
func (c *conv) syncDaemon() {
	s := c.g.lvsSync
	if s == nil {
		return
	}
	ifname, ok := c.wordArg(s, 0)
	if !ok {
		return
	}
	out := &outSync{Interface: ifname}
	idSet := false
	for i := 1; i < len(s.args); i++ {
		opt := s.args[i].text
		if i == 1 && !slices.Contains([]string{"id", "maxlen", "port", "ttl", "group"}, opt) {
			if c.inst[opt] == nil {
				c.add(s.pos, s.key, fmt.Sprintf("no vrrp_instance %s to follow; both sync daemons run all the time", opt))
			} else {
				out.Follow = opt
			}
			continue
		}
		if i+1 >= len(s.args) {
			c.add(s.pos, opt, "value missing; left out")
			break
		}
		val := s.args[i+1].text
		i++
		n, err := strconv.Atoi(val)
		switch opt {
		case "id":
			if err == nil && n >= 0 && n <= 255 {
				out.SyncID, idSet = n, true
				continue
			}
		case "maxlen":
			if err == nil && n >= 0 && n <= 65535 {
				out.MaxLen = n
				continue
			}
		case "port":
			if err == nil && n >= 1 && n <= 65535 {
				out.Port = n
				continue
			}
		case "ttl":
			if err == nil && n >= 1 && n <= 255 {
				out.TTL = n
				continue
			}
		case "group":
			if a, err := netip.ParseAddr(val); err == nil && a.IsMulticast() {
				out.Group = a.String()
				continue
			}
		default:
			c.add(s.pos, opt, "not an lvs_sync_daemon option; left out")
			continue
		}
		c.add(s.pos, opt, fmt.Sprintf("%q is not a valid value; left out", val))
	}
	if !idSet && out.Follow != "" {
		// keepalived's sync id defaults to the followed instance's VRID.
		out.SyncID = c.inst[out.Follow].vrid
	}
	c.out.Sync = out
}

// ---- virtual_server

// vsDefaults are the settings a virtual server hands down to its real
// servers and their checkers.
type chain struct {
	delayLoop, connectTimeout, delayBeforeRetry *stmt
	retry                                       *stmt
	inhibit                                     *stmt
	virtualhost                                 *stmt
}

func (ch chain) over(o chain) chain {
	return chain{
		delayLoop:        firstStmt(o.delayLoop, ch.delayLoop),
		connectTimeout:   firstStmt(o.connectTimeout, ch.connectTimeout),
		delayBeforeRetry: firstStmt(o.delayBeforeRetry, ch.delayBeforeRetry),
		retry:            firstStmt(o.retry, ch.retry),
		inhibit:          firstStmt(o.inhibit, ch.inhibit),
		virtualhost:      firstStmt(o.virtualhost, ch.virtualhost),
	}
}

func firstStmt(a, b *stmt) *stmt {
	if a != nil {
		return a
	}
	return b
}

// chainKey records a key that is inherited down the chain; it reports
// whether k was one.
func (ch *chain) take(k *stmt) bool {
	switch k.key {
	case "delay_loop":
		ch.delayLoop = k
	case "connect_timeout":
		ch.connectTimeout = k
	case "delay_before_retry":
		ch.delayBeforeRetry = k
	case "retry", "nb_get_retry":
		ch.retry = k
	case "inhibit_on_failure":
		ch.inhibit = k
	case "virtualhost":
		ch.virtualhost = k
	default:
		return false
	}
	return true
}

var netmaskRe = regexp.MustCompile(`^[0-9.]+$`)

func (c *conv) virtualServer(s *stmt) {
	vs := &outService{src: s.pos}
	var (
		addr  netip.Addr
		port  int
		v6    bool
		proto string
	)
	switch s.argText(0) {
	case "group":
		c.add(s.pos, s.key, "virtual_server group is not supported: write one virtual service per address; left out")
		return
	case "fwmark":
		m, ok := c.intArg(s, 1, 1, math.MaxInt32)
		if !ok {
			return
		}
		vs.FWMark = uint32(m)
		vs.Name = fmt.Sprintf("fwmark_%d", m)
	default:
		a, ok := c.addrArg(s, 0)
		if !ok {
			return
		}
		addr, v6 = a.Unmap(), a.Unmap().Is6()
		if len(s.args) > 1 {
			p, ok := c.intArg(s, 1, 0, 65535)
			if !ok {
				return
			}
			port = p
		}
	}
	var (
		ch          chain
		fwd         = ""
		sched       = ""
		persist     *stmt
		granularity *stmt
		sorry       *stmt
		sorryFwd    string
		reals       []*stmt
		quorum      *stmt
	)
	for _, k := range s.body {
		if ch.take(k) {
			continue
		}
		switch k.key {
		case "lb_algo", "lvs_sched":
			v := strings.ToLower(k.argText(0))
			if slices.Contains(schedulers, v) {
				sched = v
			} else {
				c.add(k.pos, k.key, fmt.Sprintf("scheduler %q is not supported; written as %s", v, kaScheduler))
			}
		case "lb_kind", "lvs_method":
			fwd = c.forwarding(k)
		case "protocol":
			switch p := strings.ToLower(k.argText(0)); p {
			case "tcp", "udp", "sctp":
				proto = p
			default:
				c.add(k.pos, k.key, fmt.Sprintf("%q is not one of TCP, UDP, SCTP; left out", k.argText(0)))
			}
		case "persistence_timeout":
			persist = k
		case "persistence_granularity":
			granularity = k
		case "ip_family":
			switch k.argText(0) {
			case "inet":
				vs.Family = "ipv4"
			case "inet6":
				vs.Family = "ipv6"
			default:
				c.add(k.pos, k.key, fmt.Sprintf("%q is not inet or inet6; left out", k.argText(0)))
			}
		case "ops":
			vs.OnePacket = true
		case "sh-port", "sh-fallback", "mh-port", "mh-fallback":
			vs.SchedulerFlags = append(vs.SchedulerFlags, k.key)
		case "quorum":
			quorum = k
		case "hysteresis":
			if k.argText(0) != "0" {
				c.add(k.pos, k.key, "no hysteresis: the service is down as soon as the healthy weight is below quorum")
			}
		case "sorry_server":
			sorry = k
		case "sorry_server_lvs_method":
			sorryFwd = c.forwarding(k)
		case "real_server":
			reals = append(reals, k)
		case "alpha":
			c.add(k.pos, k.key, "directord's checks start from their own initial state: a real server counts as healthy until its first fall failures")
		case "quorum_up", "quorum_down":
			c.add(k.pos, k.key, "no quorum commands: track the service from a VRRP instance (track.services) instead")
		case "ha_suspend":
			c.add(k.pos, k.key, "checks run on every director, master or backup")
		default:
			c.unsupported(k)
		}
	}
	if fwd == "" {
		// keepalived's default (it reports the missing lb_kind).
		fwd = "nat"
		c.add(s.pos, "lb_kind", "missing; keepalived defaults to NAT, written as forwarding: nat")
	}
	vs.Forwarding = fwd
	vs.Scheduler = cmpOr(sched, kaScheduler)
	if vs.FWMark == 0 {
		if proto == "" {
			// The kernel's default, which keepalived makes explicit.
			proto = "udp"
			c.add(s.pos, "protocol", "missing; keepalived defaults to UDP, written as protocol: udp")
		}
		vs.Protocol = proto
		vs.Address = netip.AddrPortFrom(addr, uint16(port)).String()
		vs.Name = fmt.Sprintf("%s_%s_%d", proto, addr, port)
		if vs.Family != "" {
			c.add(s.pos, "ip_family", "only for fwmark services; left out")
			vs.Family = ""
		}
	} else {
		v6 = vs.Family == "ipv6"
		if proto != "" {
			c.add(s.pos, "protocol", "ignored for a fwmark service, as by keepalived")
		}
	}
	if vs.OnePacket && vs.FWMark == 0 && vs.Protocol != "udp" {
		c.add(s.pos, "ops", "one-packet scheduling is for UDP services; left out")
		vs.OnePacket = false
	}
	vs.SchedulerFlags = slices.DeleteFunc(vs.SchedulerFlags, func(f string) bool {
		if !strings.HasPrefix(f, vs.Scheduler+"-") {
			c.add(s.pos, f, fmt.Sprintf("applies to the %s scheduler, not %s; left out", strings.Split(f, "-")[0], vs.Scheduler))
			return true
		}
		return false
	})
	if persist != nil {
		secs := kaPersistence
		if len(persist.args) > 0 {
			n, ok := c.intArg(persist, 0, 0, math.MaxInt32)
			if !ok {
				n = kaPersistence
			}
			secs = n
		}
		if secs > 0 {
			vs.Persistence = &outPersistence{Timeout: dur(time.Duration(secs) * time.Second)}
		}
	}
	if vs.FWMark == 0 && port == 0 && vs.Persistence == nil {
		c.add(s.pos, "persistence_timeout", "port 0 needs a persistent service; keepalived sets 360s, and so does the converted file")
		vs.Persistence = &outPersistence{Timeout: dur(kaPersistence * time.Second)}
	}
	if granularity != nil {
		g := granularity.argText(0)
		switch {
		case vs.Persistence == nil:
			c.add(granularity.pos, granularity.key, "applies only to persistent services; left out")
		case v6 && !netmaskRe.MatchString(g):
			c.add(granularity.pos, granularity.key, fmt.Sprintf("%q is not a prefix length; left out", g))
		default:
			vs.Persistence.Netmask = g
		}
	}
	if quorum != nil {
		if n, ok := c.intArg(quorum, 0, 0, math.MaxInt32); ok && n != 1 {
			vs.Quorum = &n
		}
	}
	if sorry != nil {
		c.sorryServer(vs, sorry, sorryFwd, port)
	}
	if len(reals) == 0 {
		c.add(s.pos, s.key, "no real_server; keepalived ignores the virtual server, and so does the converted file")
		return
	}
	inhibited := 0
	var checks []*outCheck
	for _, r := range reals {
		rs, chk, inhibit := c.realServer(vs, port, ch, r)
		if rs == nil {
			continue
		}
		if inhibit {
			inhibited++
		}
		vs.RealServers = append(vs.RealServers, rs)
		checks = append(checks, chk)
	}
	if len(vs.RealServers) == 0 {
		c.add(s.pos, s.key, "no real server could be converted; left out")
		return
	}
	switch {
	case inhibited == len(vs.RealServers):
		vs.OnFailure = "quiesce"
	case inhibited > 0:
		c.add(s.pos, "inhibit_on_failure", "set for some real servers only; directord sets on_failure per service: written as remove")
	}
	// One check for the service when every real server has the same;
	// otherwise each carries its own, complete.
	same := true
	for _, chk := range checks[1:] {
		if !equalCheck(chk, checks[0]) {
			same = false
		}
	}
	if same {
		vs.Check = checks[0]
	} else {
		for i, rs := range vs.RealServers {
			rs.Check = checks[i]
		}
	}
	vs.Name = uniqueName(vs.Name, c.out.IPVS)
	c.ipvs().VirtualServices = append(c.ipvs().VirtualServices, vs)
}

func uniqueName(name string, ipvs *outIPVS) string {
	if ipvs == nil {
		return name
	}
	taken := func(n string) bool {
		return slices.ContainsFunc(ipvs.VirtualServices, func(v *outService) bool { return v.Name == n })
	}
	out := name
	for i := 2; taken(out); i++ {
		out = fmt.Sprintf("%s_%d", name, i)
	}
	return out
}

func (c *conv) forwarding(k *stmt) string {
	switch v := strings.ToUpper(k.argText(0)); v {
	case "NAT":
		return "nat"
	case "DR":
		return "dr"
	case "TUN":
		if len(k.args) > 1 && !(len(k.args) == 3 && k.argText(1) == "type" && strings.EqualFold(k.argText(2), "ipip")) {
			c.add(k.pos, k.key, "tunnel options (type gue/gre, port, checksum) are not supported: written as plain TUN (IPIP)")
		}
		return "tun"
	default:
		c.add(k.pos, k.key, fmt.Sprintf("%q is not one of NAT, DR, TUN; left out", k.argText(0)))
		return ""
	}
}

// realAddress writes a real (or sorry) server address as keepalived would
// use it: NAT keeps its port (the service's when none is given); DR and TUN
// use the service's port, and a fwmark service's reals have none.
func (c *conv) realAddress(at *stmt, addr netip.Addr, port int, hasPort bool, vsPort int, fwmark bool, fwd string) string {
	switch {
	case fwd == "nat" && fwmark:
		if hasPort && port != 0 {
			return netip.AddrPortFrom(addr, uint16(port)).String()
		}
		return addr.String()
	case fwd == "nat":
		if !hasPort || port == 0 {
			port = vsPort
		}
		return netip.AddrPortFrom(addr, uint16(port)).String()
	case fwmark:
		if hasPort && port != 0 {
			c.add(at.pos, at.key, "a DR or TUN real server of a fwmark service takes no port; left out")
		}
		return addr.String()
	default:
		if hasPort && port != 0 && port != vsPort {
			c.add(at.pos, at.key, fmt.Sprintf("port %d differs from the service's %d, which DR and TUN cannot change; keepalived resets it, and so does the converted file", port, vsPort))
			return addr.String()
		}
		if hasPort && port != 0 {
			return netip.AddrPortFrom(addr, uint16(port)).String()
		}
		return addr.String()
	}
}

func (c *conv) hostPort(s *stmt) (netip.Addr, int, bool, bool) {
	a, ok := c.addrArg(s, 0)
	if !ok {
		return netip.Addr{}, 0, false, false
	}
	if len(s.args) < 2 {
		return a.Unmap(), 0, false, true
	}
	p, ok := c.intArg(s, 1, 0, 65535)
	if !ok {
		return netip.Addr{}, 0, false, false
	}
	return a.Unmap(), p, true, true
}

func (c *conv) sorryServer(vs *outService, s *stmt, sorryFwd string, vsPort int) {
	a, p, hasPort, ok := c.hostPort(s)
	if !ok {
		return
	}
	fwd := cmpOr(sorryFwd, vs.Forwarding)
	ss := &outSorry{Address: c.realAddress(s, a, p, hasPort, vsPort, vs.FWMark > 0, fwd)}
	if fwd != vs.Forwarding {
		ss.Forwarding = fwd
	}
	vs.SorryServer = ss
}

func (c *conv) realServer(vs *outService, vsPort int, vsChain chain, s *stmt) (*outReal, *outCheck, bool) {
	a, p, hasPort, ok := c.hostPort(s)
	if !ok {
		return nil, nil, false
	}
	rs := &outReal{Weight: 1}
	var rch chain
	fwd := vs.Forwarding
	var checkers []*stmt
	for _, k := range s.body {
		if rch.take(k) {
			continue
		}
		switch k.key {
		case "weight":
			if n, ok := c.intArg(k, 0, 0, 65535); ok {
				rs.Weight = n
			}
		case "lvs_method", "lb_kind":
			if f := c.forwarding(k); f != "" {
				fwd = f
			}
		case "uthreshold":
			if n, ok := c.intArg(k, 0, 0, math.MaxInt32); ok {
				rs.UpperThreshold = n
			}
		case "lthreshold":
			if n, ok := c.intArg(k, 0, 0, math.MaxInt32); ok {
				rs.LowerThreshold = n
			}
		case "TCP_CHECK", "HTTP_GET", "SSL_GET", "MISC_CHECK", "DNS_CHECK", "UDP_CHECK":
			checkers = append(checkers, k)
		case "SMTP_CHECK", "BFD_CHECK", "FILE_CHECK", "PING_CHECK":
			c.add(k.pos, k.key, "checker not supported: use MISC_CHECK (an exec check) instead")
		case "notify_up", "notify_down":
			c.add(k.pos, k.key, "no real server notify commands: health changes are in the events stream")
		case "alpha":
			c.add(k.pos, k.key, "directord's checks start from their own initial state: a real server counts as healthy until its first fall failures")
		default:
			c.unsupported(k)
		}
	}
	if rs.LowerThreshold > 0 && (rs.UpperThreshold == 0 || rs.LowerThreshold > rs.UpperThreshold) {
		c.add(s.pos, "lthreshold", "needs a uthreshold at or above it; left out")
		rs.LowerThreshold = 0
	}
	if fwd != vs.Forwarding {
		rs.Forwarding = fwd
	}
	rs.Address = c.realAddress(s, a, p, hasPort, vsPort, vs.FWMark > 0, fwd)
	ch := vsChain.over(rch)
	for _, extra := range checkers[min(1, len(checkers)):] {
		c.add(extra.pos, extra.key, "directord runs one check per real server: the first checker is kept, this one is left out")
	}
	var chk *outCheck
	if len(checkers) == 0 {
		chk = &outCheck{Type: "none"}
	} else {
		chk = c.checker(checkers[0], ch, rsPort(p, hasPort, vsPort))
	}
	return rs, chk, ch.inhibit != nil
}

func rsPort(p int, hasPort bool, vsPort int) int {
	if hasPort && p != 0 {
		return p
	}
	return vsPort
}

// checker converts one keepalived checker. keepalived declares a real
// server down after retry+1 failed attempts in a row (the retries spaced by
// delay_before_retry) and up again after one success.
func (c *conv) checker(k *stmt, ch chain, port int) *outCheck {
	chk := &outCheck{Rise: 1}
	retry := 1
	switch k.key {
	case "TCP_CHECK":
		chk.Type = "tcp"
	case "HTTP_GET":
		chk.Type = "http"
	case "SSL_GET":
		// keepalived does not verify the certificate without an SSL block.
		chk.Type, chk.TLSSkipVerify = "https", true
	case "MISC_CHECK":
		chk.Type = "exec"
		retry = 0
	case "DNS_CHECK":
		chk.Type = "dns"
		retry = 3
		chk.Query, chk.Record = ".", "SOA"
	case "UDP_CHECK":
		chk.Type = "udp"
		chk.Send = "0x"
	}
	var (
		cch          chain
		connectPort  int
		miscTimeout  *stmt
		urls         []*stmt
		requireReply *stmt
	)
	for _, o := range k.body {
		if cch.take(o) {
			if o.key == "inhibit_on_failure" || (o.key == "virtualhost" && chk.Type != "http" && chk.Type != "https") {
				c.unsupported(o)
			}
			continue
		}
		switch o.key {
		case "connect_port":
			if n, ok := c.intArg(o, 0, 1, 65535); ok {
				connectPort = n
			}
		case "url":
			if chk.Type == "http" || chk.Type == "https" {
				urls = append(urls, o)
			} else {
				c.unsupported(o)
			}
		case "misc_path":
			if chk.Type == "exec" {
				chk.Command = command(o.args)
			} else {
				c.unsupported(o)
			}
		case "misc_timeout":
			miscTimeout = o
		case "misc_dynamic":
			chk.DynamicWeight = true
		case "user":
			c.add(o.pos, o.key, "exec checks run as directord's user; the user is not carried")
		case "type":
			rec := strings.ToUpper(o.argText(0))
			if slices.Contains([]string{"A", "AAAA", "CNAME", "MX", "NS", "PTR", "SOA", "SRV", "TXT"}, rec) {
				chk.Record = rec
			} else {
				c.add(o.pos, o.key, fmt.Sprintf("record type %q is not supported; written as SOA", o.argText(0)))
			}
		case "name":
			if v, ok := c.wordArg(o, 0); ok {
				chk.Query = v
			}
		case "payload":
			if h, ok := c.hexArg(o); ok {
				chk.Send = "0x" + h
			}
		case "require_reply":
			requireReply = o
			if len(o.args) > 0 {
				if h, ok := c.hexArg(o); ok {
					chk.Expect = "0x" + h
					c.add(o.pos, o.key, "the reply must contain the pattern anywhere, not only at its start")
				}
			}
		case "enable_sni":
			// directord sends SNI whenever host is set.
		default:
			c.unsupported(o)
		}
	}
	full := ch.over(cch)
	interval := kaDelayLoop
	if full.delayLoop != nil {
		if v, ok := c.secondsArg(full.delayLoop, 0); ok && v > 0 {
			interval = v
		}
	}
	chk.Interval = dur(interval)
	timeout := kaConnectTimeout
	timeoutAt := full.connectTimeout
	if chk.Type == "exec" {
		// misc_timeout, else keepalived waits up to the delay_loop.
		timeout, timeoutAt = interval, miscTimeout
	}
	if timeoutAt != nil {
		if v, ok := c.secondsArg(timeoutAt, 0); ok && v > 0 {
			timeout = v
		}
	}
	if timeout > interval {
		at := k
		if timeoutAt != nil {
			at = timeoutAt
		}
		option := "connect_timeout"
		if timeoutAt != nil {
			option = at.key
		}
		c.add(at.pos, option, fmt.Sprintf("timeout %s is longer than the check interval %s, which directord refuses; written as %s", dur(timeout), dur(interval), dur(interval)))
		timeout = interval
	}
	chk.Timeout = dur(timeout)
	if full.retry != nil {
		if n, ok := c.intArg(full.retry, 0, 0, 999); ok {
			retry = n
		}
	}
	chk.Fall = retry + 1
	if full.delayBeforeRetry != nil && retry > 0 {
		c.add(full.delayBeforeRetry.pos, full.delayBeforeRetry.key, fmt.Sprintf("no separate retry pace: the %d retries run at the check interval (fall: %d)", retry, retry+1))
	}
	if chk.Type == "http" || chk.Type == "https" {
		if full.virtualhost != nil {
			chk.Host = full.virtualhost.argText(0)
		}
		c.url(chk, urls)
	}
	if chk.Type == "udp" && requireReply == nil {
		c.add(k.pos, k.key, "without require_reply keepalived counts the server up unless an ICMP error comes back; directord waits for a reply")
	}
	if chk.Type == "exec" && len(chk.Command) == 0 {
		c.add(k.pos, k.key, "MISC_CHECK without misc_path; the real server is not checked")
		return &outCheck{Type: "none"}
	}
	if connectPort != 0 && connectPort != port {
		chk.Port = connectPort
	}
	if chk.Type == "exec" {
		chk.Port = 0
	}
	return chk
}

func (c *conv) hexArg(s *stmt) (string, bool) {
	h := strings.ToLower(strings.Join(argTexts(s.args), ""))
	if h == "" {
		c.add(s.pos, s.key, "value missing; left out")
		return "", false
	}
	for _, ch := range h {
		if !strings.ContainsRune("0123456789abcdef", ch) {
			c.add(s.pos, s.key, "only plain hex is supported (no masks or wildcards); left out")
			return "", false
		}
	}
	if len(h)%2 != 0 {
		h = "0" + h
	}
	return h, true
}

// url carries the first url block of an HTTP_GET or SSL_GET.
func (c *conv) url(chk *outCheck, urls []*stmt) {
	for _, extra := range urls[min(1, len(urls)):] {
		c.add(extra.pos, extra.key, "directord requests one URL per check: the first is kept, this one is left out")
	}
	if len(urls) == 0 {
		return
	}
	for _, o := range urls[0].body {
		switch o.key {
		case "path":
			if v, ok := c.wordArg(o, 0); ok {
				chk.Path = v
			}
		case "status_code":
			codes, ok := statusCodes(argTexts(o.args))
			if !ok {
				c.add(o.pos, o.key, fmt.Sprintf("%q is not a list of status codes and ranges; left out", strings.Join(argTexts(o.args), " ")))
				continue
			}
			if !isDefaultStatus(codes) {
				chk.ExpectStatus = codes
			}
		case "virtualhost":
			if v, ok := c.wordArg(o, 0); ok {
				chk.Host = v
			}
		case "regex":
			if v, ok := c.wordArg(o, 0); ok {
				if _, err := regexp.Compile(v); err != nil {
					c.add(o.pos, o.key, "not a Go (RE2) regular expression; left out")
				} else {
					chk.BodyRegex = v
				}
			}
		case "digest":
			c.add(o.pos, o.key, "no body digest check: use regex (body_regex) instead")
		default:
			c.unsupported(o)
		}
	}
}

// statusCodes reads keepalived's "200 301 400-499" (also comma
// separated).
func statusCodes(args []string) ([]int, bool) {
	var out []int
	for _, a := range args {
		for _, f := range strings.Split(a, ",") {
			if f == "" {
				continue
			}
			lo, hi, isRange := strings.Cut(f, "-")
			l, err := strconv.Atoi(lo)
			if err != nil || l < 100 || l > 599 {
				return nil, false
			}
			h := l
			if isRange {
				if h, err = strconv.Atoi(hi); err != nil || h < l || h > 599 {
					return nil, false
				}
			}
			for code := l; code <= h; code++ {
				if !slices.Contains(out, code) {
					out = append(out, code)
				}
			}
		}
	}
	return out, len(out) > 0
}

// isDefaultStatus reports whether codes are exactly 200..299, directord's
// default.
func isDefaultStatus(codes []int) bool {
	if len(codes) != 100 {
		return false
	}
	for _, c := range codes {
		if c < 200 || c > 299 {
			return false
		}
	}
	return true
}

func equalCheck(a, b *outCheck) bool {
	return a.Type == b.Type && a.Interval == b.Interval && a.Timeout == b.Timeout && a.Rise == b.Rise && a.Fall == b.Fall &&
		a.Port == b.Port && a.Path == b.Path && a.Host == b.Host && slices.Equal(a.ExpectStatus, b.ExpectStatus) &&
		a.BodyRegex == b.BodyRegex && a.TLSSkipVerify == b.TLSSkipVerify && a.Send == b.Send && a.Expect == b.Expect &&
		a.Query == b.Query && a.Record == b.Record && slices.Equal(a.Command, b.Command) && a.DynamicWeight == b.DynamicWeight
}
