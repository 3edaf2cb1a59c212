package config

import (
	"net/netip"
	"os"
	"reflect"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Config is one director's configuration file (shared/CONFIG.md).
type Config struct {
	Node Node `yaml:"node"`
	VRRP VRRP `yaml:"vrrp"`
	IPVS IPVS `yaml:"ipvs"`
	// Sync is nil when the block is left out: connection sync is disabled.
	Sync *Sync `yaml:"sync"`

	// File is the path the configuration was read from.
	File string `yaml:"-"`
	c    *collector
}

// ErrorAt builds an Error located at key path in the file this configuration
// came from, for problems found after validation (a section this build
// cannot run yet, a kernel that refuses a value).
func (c *Config) ErrorAt(path, msg string) Error {
	at := pos{1, 1}
	if c.c != nil {
		at = c.c.locate(path)
	}
	return Error{File: c.File, Line: at.line, Column: at.col, Path: path, Msg: msg}
}

// Warnings returns problems that did not stop the file from loading
// (settings that are ignored), in file order.
func (c *Config) Warnings() Errors {
	if c.c == nil {
		return nil
	}
	return c.c.warns
}

// Has reports whether key path was written in the file (as opposed to being
// a default).
func (c *Config) Has(path string) bool {
	return c.c != nil && c.c.has(path)
}

// Node holds settings of this director host.
type Node struct {
	Name           string `yaml:"name"`
	ControlSocket  string `yaml:"control_socket"`
	StateDir       string `yaml:"state_dir"`
	MetricsAddress string `yaml:"metrics_address"`
	Log            Log    `yaml:"log"`
	// VRRPRTPriority is the SCHED_FIFO priority of the thread that runs
	// the VRRP timers and reads the adverts (keepalived's
	// vrrp_rt_priority); 0 leaves it to the normal scheduler.
	VRRPRTPriority int `yaml:"vrrp_rt_priority"`
	// LockMemory locks the daemon's memory (mlockall), so a page fault
	// cannot delay an advert.
	LockMemory bool `yaml:"lock_memory"`
}

// DefaultVRRPRTPriority is modest: above every normal process, below the
// kernel's threaded interrupt handlers (50) that carry the adverts.
const DefaultVRRPRTPriority = 10

// MaxVRRPRTPriority keeps the VRRP thread below those handlers.
const MaxVRRPRTPriority = 49

func (n *Node) setDefaults() {
	n.Name, _ = os.Hostname()
	n.ControlSocket = "/run/directord/directord.sock"
	n.StateDir = "/run/directord"
	n.VRRPRTPriority = DefaultVRRPRTPriority
	n.LockMemory = true
}

// Log selects the log level and format.
type Log struct {
	Level  string `yaml:"level"`
	Format string `yaml:"format"`
}

func (l *Log) setDefaults() { l.Level, l.Format = "info", "text" }

// VRRP holds the virtual routers, their sync groups and tracked scripts.
type VRRP struct {
	Instances  []Instance  `yaml:"instances"`
	SyncGroups []SyncGroup `yaml:"sync_groups"`
	Scripts    []Script    `yaml:"scripts"`
}

// Instance is one virtual router (one VRID on one interface).
type Instance struct {
	Name             string           `yaml:"name"`
	Interface        string           `yaml:"interface"`
	VRID             int              `yaml:"vrid"`
	Priority         int              `yaml:"priority"`
	Version          int              `yaml:"version"`
	AdvertInterval   time.Duration    `yaml:"advert_interval"`
	Preempt          bool             `yaml:"preempt"`
	PreemptDelay     time.Duration    `yaml:"preempt_delay"`
	Accept           bool             `yaml:"accept"`
	SourceAddress    netip.Addr       `yaml:"source_address"`
	UnicastPeers     []netip.Addr     `yaml:"unicast_peers"`
	Authentication   *Authentication  `yaml:"authentication"`
	ChecksumCompat   string           `yaml:"checksum_compat"`
	VirtualAddresses []VirtualAddress `yaml:"virtual_addresses"`
	GARP             GARP             `yaml:"garp"`
	Track            Track            `yaml:"track"`
	Notify           Notify           `yaml:"notify"`
}

func (i *Instance) setDefaults() {
	i.Priority = 100
	i.Version = 3
	i.AdvertInterval = time.Second
	i.Preempt = true
	i.ChecksumCompat = "rfc"
}

// IPv6 reports whether the instance carries IPv6 virtual addresses (and so
// speaks VRRP over IPv6).
func (i *Instance) IPv6() bool {
	return len(i.VirtualAddresses) > 0 && i.VirtualAddresses[0].Address.Addr().Is6()
}

// Authentication is VRRPv2 simple-text authentication, for interop only.
type Authentication struct {
	Type     string `yaml:"type"`
	Password string `yaml:"password"`
}

// VirtualAddress is a VIP. In YAML it is either a plain address ("192.0.2.50")
// or a mapping with an interface and label.
type VirtualAddress struct {
	// Address carries the prefix length it is bound with; a plain address
	// means /32 or /128.
	Address   netip.Prefix `yaml:"address"`
	Interface string       `yaml:"interface"`
	Label     string       `yaml:"label"`
}

func (va *VirtualAddress) decodeNode(d *decoder, n *yaml.Node, path string) {
	if n.Kind == yaml.ScalarNode {
		if p, ok := d.prefix(n, path); ok {
			va.Address = p
		}
		return
	}
	type plain VirtualAddress
	d.decodeStruct(n, reflect.ValueOf((*plain)(va)).Elem(), path)
}

// GARP controls gratuitous ARP / unsolicited NA announcements.
type GARP struct {
	Repeat      int           `yaml:"repeat"`
	Interval    time.Duration `yaml:"interval"`
	MasterDelay time.Duration `yaml:"master_delay"`
	Refresh     time.Duration `yaml:"refresh"`
}

func (g *GARP) setDefaults() {
	g.Repeat = 5
	g.MasterDelay = 5 * time.Second
}

// Track lists what lowers an instance's priority or puts it in FAULT.
type Track struct {
	Interfaces []TrackRef `yaml:"interfaces"`
	Scripts    []TrackRef `yaml:"scripts"`
	Services   []TrackRef `yaml:"services"`
}

// TrackRef names a tracked object. Weight 0 means FAULT while it fails;
// otherwise the weight is added to the priority while it fails.
type TrackRef struct {
	Name   string `yaml:"name"`
	Weight int    `yaml:"weight"`
}

// Notify holds argv lists run on transitions (no shell).
type Notify struct {
	Master []string `yaml:"master"`
	Backup []string `yaml:"backup"`
	Fault  []string `yaml:"fault"`
	Stop   []string `yaml:"stop"`
	Any    []string `yaml:"any"`
}

// SyncGroup makes its instances change state together.
type SyncGroup struct {
	Name      string   `yaml:"name"`
	Instances []string `yaml:"instances"`
}

// Script is a tracked script (keepalived's vrrp_script).
type Script struct {
	Name     string        `yaml:"name"`
	Command  []string      `yaml:"command"`
	Interval time.Duration `yaml:"interval"`
	Timeout  time.Duration `yaml:"timeout"`
	Rise     int           `yaml:"rise"`
	Fall     int           `yaml:"fall"`
	User     string        `yaml:"user"`
}

func (s *Script) setDefaults() {
	s.Interval = 2 * time.Second
	s.Timeout = time.Second
	s.Rise, s.Fall = 2, 2
}

// IPVS is the desired IPVS table.
type IPVS struct {
	Timeouts        Timeouts         `yaml:"timeouts"`
	VirtualServices []VirtualService `yaml:"virtual_services"`
	// ResyncInterval is how often the kernel's table is compared with the
	// desired one and drift repaired (someone ran ipvsadm -C).
	ResyncInterval time.Duration `yaml:"resync_interval"`
}

func (i *IPVS) setDefaults() { i.ResyncInterval = 10 * time.Second }

// Timeouts are the global connection timeouts (ipvsadm --set); zero leaves
// the kernel's value alone.
type Timeouts struct {
	TCP    time.Duration `yaml:"tcp"`
	TCPFin time.Duration `yaml:"tcp_fin"`
	UDP    time.Duration `yaml:"udp"`
}

// Endpoint is an IP address with an optional port ("192.0.2.50:80",
// "[2001:db8::1]:80", "198.51.100.11", "2001:db8::11").
type Endpoint struct {
	Addr    netip.Addr
	Port    uint16
	HasPort bool
}

func (e Endpoint) String() string {
	if !e.HasPort {
		return e.Addr.String()
	}
	return netip.AddrPortFrom(e.Addr, e.Port).String()
}

// IsZero reports whether the endpoint was left empty.
func (e Endpoint) IsZero() bool { return !e.Addr.IsValid() }

func (e *Endpoint) decodeNode(d *decoder, n *yaml.Node, path string) {
	s, ok := d.scalar(n, path, "an address")
	if !ok {
		return
	}
	ep, err := ParseEndpoint(s)
	if err != nil {
		d.c.addf(path, "%v", err)
		return
	}
	*e = ep
}

// ParseEndpoint parses an IP address with an optional port.
func ParseEndpoint(s string) (Endpoint, error) {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return Endpoint{Addr: ap.Addr().Unmap(), Port: ap.Port(), HasPort: true}, nil
	}
	bare := s
	if strings.HasPrefix(s, "[") && strings.HasSuffix(s, "]") {
		bare = s[1 : len(s)-1]
	}
	if a, err := netip.ParseAddr(bare); err == nil {
		return Endpoint{Addr: a.Unmap()}, nil
	}
	if i := strings.LastIndexByte(s, ':'); i > 0 {
		if _, err := strconv.ParseUint(s[i+1:], 10, 16); err != nil {
			return Endpoint{}, &endpointError{s, "port must be a number 0..65535"}
		}
	}
	return Endpoint{}, &endpointError{s, "expected IP, IP:port or [IPv6]:port"}
}

type endpointError struct{ in, why string }

func (e *endpointError) Error() string { return strconv.Quote(e.in) + " is not an address: " + e.why }

// VirtualService is one IPVS virtual service and its real servers.
type VirtualService struct {
	Name           string       `yaml:"name"`
	Address        Endpoint     `yaml:"address"`
	FWMark         uint32       `yaml:"fwmark"`
	Family         string       `yaml:"family"`
	Protocol       string       `yaml:"protocol"`
	Scheduler      string       `yaml:"scheduler"`
	SchedulerFlags []string     `yaml:"scheduler_flags"`
	Persistence    Persistence  `yaml:"persistence"`
	OnePacket      bool         `yaml:"one_packet"`
	Forwarding     string       `yaml:"forwarding"`
	Quorum         int          `yaml:"quorum"`
	OnFailure      string       `yaml:"on_failure"`
	SorryServer    *SorryServer `yaml:"sorry_server"`
	Check          Check        `yaml:"check"`
	RealServers    []RealServer `yaml:"real_servers"`
}

func (vs *VirtualService) setDefaults() {
	vs.Protocol = "tcp"
	vs.Scheduler = "wlc"
	vs.Forwarding = "dr"
	vs.Quorum = 1
	vs.OnFailure = "remove"
}

// IPv6 reports whether the service is an IPv6 service (by its address, or
// by family for firewall-mark services).
func (vs *VirtualService) IPv6() bool {
	if vs.FWMark > 0 {
		return vs.Family == "ipv6"
	}
	return vs.Address.Addr.Is6()
}

// Persistence makes a client stick to one real server for Timeout.
type Persistence struct {
	Timeout time.Duration `yaml:"timeout"`
	// Netmask groups clients: a dotted IPv4 mask or a prefix length
	// ("255.255.255.0", "24", "/24"; IPv6 services take a prefix length).
	Netmask string `yaml:"netmask"`
}

// SorryServer receives traffic while no real server is healthy.
type SorryServer struct {
	Address    Endpoint `yaml:"address"`
	Forwarding string   `yaml:"forwarding"`
}

// RealServer is a backend of a virtual service.
type RealServer struct {
	Address        Endpoint `yaml:"address"`
	Weight         int      `yaml:"weight"`
	Forwarding     string   `yaml:"forwarding"`
	UpperThreshold int      `yaml:"upper_threshold"`
	LowerThreshold int      `yaml:"lower_threshold"`
	// Check is the effective check: the service's check with the fields
	// written under this real server's check laid over it.
	Check Check `yaml:"check"`
}

func (rs *RealServer) setDefaults() { rs.Weight = 1 }

// Check is a health check of a real server.
type Check struct {
	Type          string        `yaml:"type"`
	Interval      time.Duration `yaml:"interval"`
	Timeout       time.Duration `yaml:"timeout"`
	Rise          int           `yaml:"rise"`
	Fall          int           `yaml:"fall"`
	Port          int           `yaml:"port"`
	Path          string        `yaml:"path"`
	Host          string        `yaml:"host"`
	ExpectStatus  []int         `yaml:"expect_status"`
	BodyRegex     string        `yaml:"body_regex"`
	TLSSkipVerify bool          `yaml:"tls_skip_verify"`
	Send          string        `yaml:"send"`
	Expect        string        `yaml:"expect"`
	Query         string        `yaml:"query"`
	Record        string        `yaml:"record"`
	Command       []string      `yaml:"command"`
	DynamicWeight bool          `yaml:"dynamic_weight"`
}

func (c *Check) setDefaults() {
	c.Type = "tcp"
	c.Interval = 2 * time.Second
	c.Timeout = time.Second
	c.Rise, c.Fall = 2, 3
}

// Sync configures IPVS connection synchronisation.
type Sync struct {
	Interface      string     `yaml:"interface"`
	SyncID         int        `yaml:"sync_id"`
	Follow         string     `yaml:"follow"`
	MaxLen         int        `yaml:"max_len"`
	Group          netip.Addr `yaml:"group"`
	Port           int        `yaml:"port"`
	TTL            int        `yaml:"ttl"`
	Relay          *Relay     `yaml:"relay"`
	ResyncOnBackup bool       `yaml:"resync_on_backup"`
}

func (s *Sync) setDefaults() {
	s.Group = netip.MustParseAddr("224.0.0.81")
	s.Port = 8848
	s.TTL = 1
	s.ResyncOnBackup = true
}

// Relay carries sync datagrams over authenticated unicast.
type Relay struct {
	Listen  Endpoint `yaml:"listen"`
	Peer    Endpoint `yaml:"peer"`
	KeyFile string   `yaml:"key_file"`
}
