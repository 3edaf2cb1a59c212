package kaimport

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode"

	"gopkg.in/yaml.v3"
)

// The output types mirror shared/CONFIG.md key for key and in its order, so
// the YAML reads like the contract. Keys left at directord's default are
// omitted unless keepalived's default differs.

type outConfig struct {
	Node *outNode `yaml:"node,omitempty"`
	VRRP *outVRRP `yaml:"vrrp,omitempty"`
	IPVS *outIPVS `yaml:"ipvs,omitempty"`
	Sync *outSync `yaml:"sync,omitempty"`
}

type outNode struct {
	Name string `yaml:"name,omitempty"`
}

type outVRRP struct {
	Instances  []*outInstance  `yaml:"instances,omitempty"`
	SyncGroups []*outSyncGroup `yaml:"sync_groups,omitempty"`
	Scripts    []*outScript    `yaml:"scripts,omitempty"`
}

type outInstance struct {
	Name             string     `yaml:"name"`
	Interface        string     `yaml:"interface"`
	VRID             int        `yaml:"vrid"`
	Priority         int        `yaml:"priority"`
	Version          int        `yaml:"version"`
	AdvertInterval   dur        `yaml:"advert_interval"`
	Preempt          *bool      `yaml:"preempt,omitempty"`
	PreemptDelay     dur        `yaml:"preempt_delay,omitempty"`
	Accept           *bool      `yaml:"accept,omitempty"`
	SourceAddress    string     `yaml:"source_address,omitempty"`
	UnicastPeers     []string   `yaml:"unicast_peers,omitempty"`
	Authentication   *outAuth   `yaml:"authentication,omitempty"`
	VirtualAddresses []any      `yaml:"virtual_addresses"`
	GARP             *outGARP   `yaml:"garp,omitempty"`
	Track            *outTrack  `yaml:"track,omitempty"`
	Notify           *outNotify `yaml:"notify,omitempty"`

	src Pos
}

type outAuth struct {
	Type     string `yaml:"type"`
	Password string `yaml:"password"`
}

type outVIP struct {
	Address   string `yaml:"address"`
	Interface string `yaml:"interface,omitempty"`
	Label     string `yaml:"label,omitempty"`
}

type outGARP struct {
	Repeat      *int `yaml:"repeat,omitempty"`
	Interval    *dur `yaml:"interval,omitempty"`
	MasterDelay *dur `yaml:"master_delay,omitempty"`
	Refresh     *dur `yaml:"refresh,omitempty"`
}

type outTrack struct {
	Interfaces []outRef `yaml:"interfaces,omitempty"`
	Scripts    []outRef `yaml:"scripts,omitempty"`
}

type outRef struct {
	Name   string `yaml:"name"`
	Weight int    `yaml:"weight"`
}

type outNotify struct {
	Master []string `yaml:"master,omitempty"`
	Backup []string `yaml:"backup,omitempty"`
	Fault  []string `yaml:"fault,omitempty"`
	Stop   []string `yaml:"stop,omitempty"`
	Any    []string `yaml:"any,omitempty"`
}

type outSyncGroup struct {
	Name      string   `yaml:"name"`
	Instances []string `yaml:"instances"`

	src Pos
}

type outScript struct {
	Name     string   `yaml:"name"`
	Command  []string `yaml:"command"`
	Interval dur      `yaml:"interval"`
	Timeout  dur      `yaml:"timeout"`
	Rise     int      `yaml:"rise"`
	Fall     int      `yaml:"fall"`
	User     string   `yaml:"user,omitempty"`

	src Pos
}

type outIPVS struct {
	Timeouts        *outTimeouts  `yaml:"timeouts,omitempty"`
	VirtualServices []*outService `yaml:"virtual_services,omitempty"`
}

type outTimeouts struct {
	TCP    dur `yaml:"tcp,omitempty"`
	TCPFin dur `yaml:"tcp_fin,omitempty"`
	UDP    dur `yaml:"udp,omitempty"`
}

type outService struct {
	Name           string          `yaml:"name"`
	Address        string          `yaml:"address,omitempty"`
	FWMark         uint32          `yaml:"fwmark,omitempty"`
	Family         string          `yaml:"family,omitempty"`
	Protocol       string          `yaml:"protocol,omitempty"`
	Scheduler      string          `yaml:"scheduler"`
	SchedulerFlags []string        `yaml:"scheduler_flags,omitempty"`
	Persistence    *outPersistence `yaml:"persistence,omitempty"`
	OnePacket      bool            `yaml:"one_packet,omitempty"`
	Forwarding     string          `yaml:"forwarding"`
	Quorum         *int            `yaml:"quorum,omitempty"`
	OnFailure      string          `yaml:"on_failure,omitempty"`
	SorryServer    *outSorry       `yaml:"sorry_server,omitempty"`
	Check          *outCheck       `yaml:"check,omitempty"`
	RealServers    []*outReal      `yaml:"real_servers"`

	src Pos
}

type outPersistence struct {
	Timeout dur    `yaml:"timeout"`
	Netmask string `yaml:"netmask,omitempty"`
}

type outSorry struct {
	Address    string `yaml:"address"`
	Forwarding string `yaml:"forwarding,omitempty"`
}

type outReal struct {
	Address        string    `yaml:"address"`
	Weight         int       `yaml:"weight"`
	Forwarding     string    `yaml:"forwarding,omitempty"`
	UpperThreshold int       `yaml:"upper_threshold,omitempty"`
	LowerThreshold int       `yaml:"lower_threshold,omitempty"`
	Check          *outCheck `yaml:"check,omitempty"`
}

type outCheck struct {
	Type          string   `yaml:"type"`
	Interval      dur      `yaml:"interval,omitempty"`
	Timeout       dur      `yaml:"timeout,omitempty"`
	Rise          int      `yaml:"rise,omitempty"`
	Fall          int      `yaml:"fall,omitempty"`
	Port          int      `yaml:"port,omitempty"`
	Path          string   `yaml:"path,omitempty"`
	Host          string   `yaml:"host,omitempty"`
	ExpectStatus  []int    `yaml:"expect_status,omitempty"`
	BodyRegex     string   `yaml:"body_regex,omitempty"`
	TLSSkipVerify bool     `yaml:"tls_skip_verify,omitempty"`
	Send          string   `yaml:"send,omitempty"`
	Expect        string   `yaml:"expect,omitempty"`
	Query         string   `yaml:"query,omitempty"`
	Record        string   `yaml:"record,omitempty"`
	Command       []string `yaml:"command,omitempty"`
	DynamicWeight bool     `yaml:"dynamic_weight,omitempty"`
}

type outSync struct {
	Interface string `yaml:"interface"`
	SyncID    int    `yaml:"sync_id"`
	Follow    string `yaml:"follow,omitempty"`
	MaxLen    int    `yaml:"max_len,omitempty"`
	Group     string `yaml:"group,omitempty"`
	Port      int    `yaml:"port,omitempty"`
	TTL       int    `yaml:"ttl,omitempty"`
}

// dur is a duration written the way CONFIG.md writes them: whole seconds
// as "90s" rather than "1m30s", fractions in milliseconds.
type dur time.Duration

func (d dur) String() string {
	td := time.Duration(d)
	switch {
	case td%time.Second == 0:
		return strconv.FormatInt(int64(td/time.Second), 10) + "s"
	case td%time.Millisecond == 0:
		return strconv.FormatInt(int64(td/time.Millisecond), 10) + "ms"
	default:
		return td.String()
	}
}

// MarshalYAML writes the duration as a string.
func (d dur) MarshalYAML() (any, error) { return d.String(), nil }

func durp(d time.Duration) *dur { v := dur(d); return &v }

// render writes the configuration as YAML with a header naming the source,
// a comment over every instance, script, group and service saying where in
// keepalived.conf it came from, and short lists and mappings in flow style.
func render(cfg *outConfig, source string) ([]byte, error) {
	var root yaml.Node
	if err := root.Encode(cfg); err != nil {
		return nil, fmt.Errorf("encode YAML: %w", err)
	}
	root.HeadComment = "Converted from " + commentText(source) + " by directorctl import-keepalived.\n" +
		"Review the options listed as not carried over before use."
	comments := map[string][]string{}
	if cfg.VRRP != nil {
		for _, in := range cfg.VRRP.Instances {
			comments["vrrp.instances"] = append(comments["vrrp.instances"], fmt.Sprintf("vrrp_instance %s (%s)", in.Name, in.src))
		}
		for _, g := range cfg.VRRP.SyncGroups {
			comments["vrrp.sync_groups"] = append(comments["vrrp.sync_groups"], fmt.Sprintf("vrrp_sync_group %s (%s)", g.Name, g.src))
		}
		for _, s := range cfg.VRRP.Scripts {
			comments["vrrp.scripts"] = append(comments["vrrp.scripts"], fmt.Sprintf("vrrp_script %s (%s)", s.Name, s.src))
		}
	}
	if cfg.IPVS != nil {
		for _, vs := range cfg.IPVS.VirtualServices {
			comments["ipvs.virtual_services"] = append(comments["ipvs.virtual_services"], fmt.Sprintf("virtual_server (%s)", vs.src))
		}
	}
	decorate(&root, comments, "", false)
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(&root); err != nil {
		return nil, fmt.Errorf("encode YAML: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("encode YAML: %w", err)
	}
	return buf.Bytes(), nil
}

// commentText makes s safe as one comment line: the YAML emitter panics
// on invalid UTF-8, and a newline would end the comment.
func commentText(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	return strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, s)
}

// decorate puts the source comments on list items and turns lists of
// scalars, and mappings of scalars inside lists, into flow style.
func decorate(n *yaml.Node, comments map[string][]string, path string, inSeq bool) {
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			decorate(c, comments, path, false)
		}
	case yaml.MappingNode:
		scalars := true
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if v.Kind != yaml.ScalarNode {
				scalars = false
			}
			p := k.Value
			if path != "" {
				p = path + "." + k.Value
			}
			if c, ok := comments[p]; ok && v.Kind == yaml.SequenceNode {
				for j, item := range v.Content {
					if j < len(c) {
						item.HeadComment = commentText(c[j])
					}
				}
			}
			decorate(v, comments, p, false)
		}
		if inSeq && scalars {
			n.Style = yaml.FlowStyle
		}
	case yaml.SequenceNode:
		scalars := true
		for _, item := range n.Content {
			if item.Kind != yaml.ScalarNode {
				scalars = false
			}
			decorate(item, comments, path+"[]", true)
		}
		if scalars {
			n.Style = yaml.FlowStyle
		}
	}
}
