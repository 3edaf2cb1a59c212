// Package control is directord's control socket: a unix socket, mode 0600
// and root only, that serves JSON to directorctl. Each connection carries
// one request line and its response; `events` keeps the connection and
// streams one event per line until the client goes.
package control

import (
	"encoding/json"
	"time"
)

// Commands a request may carry.
const (
	CmdStatus = "status"
	CmdIPVS   = "ipvs"
	CmdConns  = "conns"
	CmdHealth = "health"
	CmdEvents = "events"
	CmdReload = "reload"
	CmdDrill  = "drill"
)

// Request is what a client sends: one JSON object on one line.
type Request struct {
	Command  string `json:"command"`
	Instance string `json:"instance,omitempty"`
	// Return: after the drill's handover, take mastership back.
	Return bool `json:"return,omitempty"`
}

// DrillReport is the answer to drill: the timeline of a handover as this
// node saw it, from the moment it handed over.
type DrillReport struct {
	Node           string `json:"node"`
	Instance       string `json:"instance"`
	AdvertInterval string `json:"advert_interval"`
	// Started is when the drill began on this node; the steps' AtMS
	// count from it, so the timeline lines up with logs and captures
	// taken elsewhere.
	Started time.Time   `json:"started"`
	Steps   []DrillStep `json:"steps"`
	// Milliseconds from the handover to the peer's first advert as
	// master, to the VIP answering ARP from the peer, and to this node
	// being MASTER again (--return); -1 when it did not happen.
	PeerAdvertMS float64 `json:"peer_advert_ms"`
	VIPAnswerMS  float64 `json:"vip_answer_ms"`
	TakeBackMS   float64 `json:"take_back_ms"`
}

// DrillStep is one event of the timeline.
type DrillStep struct {
	AtMS float64 `json:"at_ms"`
	What string  `json:"what"`
}

// Response is the answer: one JSON object on one line. Errors lists every
// error of a rejected reload, one per configuration problem.
type Response struct {
	OK     bool            `json:"ok"`
	Error  string          `json:"error,omitempty"`
	Errors []string        `json:"errors,omitempty"`
	Data   json.RawMessage `json:"data,omitempty"`
}

// Status is the answer to status.
type Status struct {
	Node      string           `json:"node"`
	Config    string           `json:"config"`
	Instances []InstanceStatus `json:"instances"`
}

// InstanceStatus is one VRRP instance.
type InstanceStatus struct {
	Name          string       `json:"name"`
	Interface     string       `json:"interface"`
	VRID          int          `json:"vrid"`
	State         string       `json:"state"`
	Priority      int          `json:"priority"`      // effective
	BasePriority  int          `json:"base_priority"` // configured
	PriorityWhy   string       `json:"priority_why"`  // why effective differs, or fault reason
	Master        string       `json:"master,omitempty"`
	VIPs          []string     `json:"vips"`
	AdvertsSent   uint64       `json:"adverts_sent"`
	AdvertsRecv   uint64       `json:"adverts_received"`
	Transitions   []Transition `json:"transitions"` // the last ones, oldest first
	TransitionsN  uint64       `json:"transitions_total"`
	LastChangedAt time.Time    `json:"last_changed_at,omitzero"`
	// MaxTimerLatenessMS is the largest delay between a VRRP timer's
	// deadline and the timing thread acting on it.
	MaxTimerLatenessMS float64 `json:"max_timer_lateness_ms"`
}

// Transition is a VRRP state change.
type Transition struct {
	At       time.Time `json:"at"`
	Instance string    `json:"instance"`
	From     string    `json:"from"`
	To       string    `json:"to"`
	Priority int       `json:"priority"`
	Reason   string    `json:"reason"`
}

// IPVSTable is the answer to ipvs: the kernel's table with each real
// server's health.
type IPVSTable struct {
	Services []IPVSService `json:"services"`
}

// IPVSService is one virtual service.
type IPVSService struct {
	Name        string     `json:"name,omitempty"` // "" for a service directord does not own
	Key         string     `json:"key"`            // "TCP  192.0.2.50:80", "FWM  7", as ipvsadm
	Scheduler   string     `json:"scheduler"`
	Flags       []string   `json:"flags,omitempty"`
	Persistence int        `json:"persistence_s,omitempty"`
	Netmask     string     `json:"netmask,omitempty"`
	Stats       Stats      `json:"stats"`
	Reals       []IPVSReal `json:"reals"`
}

// IPVSReal is one destination.
type IPVSReal struct {
	Address       string `json:"address"`
	Forward       string `json:"forward"` // Masq, Route, Tunnel as ipvsadm
	Weight        int    `json:"weight"`
	ActiveConns   uint32 `json:"active_conns"`
	InactiveConns uint32 `json:"inactive_conns"`
	Health        string `json:"health"` // up, down, unknown, unchecked, sorry
	Reason        string `json:"reason,omitempty"`
	Stats         Stats  `json:"stats"`
}

// Stats are the kernel's counters and rates.
type Stats struct {
	Conns    uint64 `json:"conns"`
	InPkts   uint64 `json:"in_pkts"`
	OutPkts  uint64 `json:"out_pkts"`
	InBytes  uint64 `json:"in_bytes"`
	OutBytes uint64 `json:"out_bytes"`
	CPS      uint64 `json:"cps"`
	InPPS    uint64 `json:"in_pps"`
	OutPPS   uint64 `json:"out_pps"`
	InBPS    uint64 `json:"in_bps"`
	OutBPS   uint64 `json:"out_bps"`
}

// Conn is one IPVS connection, as ipvsadm -Lnc lists it.
type Conn struct {
	Protocol    string `json:"protocol"`
	Client      string `json:"client"`
	Virtual     string `json:"virtual"`
	Destination string `json:"destination"`
	State       string `json:"state"`
	ExpiresS    int    `json:"expires_s"`
}

// HealthReport is the answer to health.
type HealthReport struct {
	Checks []Check `json:"checks"`
}

// Check is one health check.
type Check struct {
	Service   string    `json:"service"`
	Real      string    `json:"real"`
	Type      string    `json:"type"`
	Target    string    `json:"target"`
	State     string    `json:"state"` // up, down, unknown
	Reason    string    `json:"reason,omitempty"`
	LatencyMS float64   `json:"latency_ms"`
	Since     time.Time `json:"since,omitzero"` // last transition
}

// Event is one line of the events stream.
type Event struct {
	At   time.Time `json:"at"`
	Kind string    `json:"kind"` // vrrp, health, reload
	// vrrp
	Instance string `json:"instance,omitempty"`
	From     string `json:"from,omitempty"`
	To       string `json:"to,omitempty"`
	Priority int    `json:"priority,omitempty"`
	// health
	Check string `json:"check,omitempty"`
	Up    *bool  `json:"up,omitempty"`
	// every kind
	Reason string `json:"reason,omitempty"`
}
