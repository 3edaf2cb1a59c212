package vrrp

import (
	"fmt"
	"net/netip"
	"time"
)

// State is a virtual router's state (RFC 5798 6.4, plus FAULT).
type State uint8

// States. Fault is not in the RFC: a router whose tracked objects say it
// cannot serve leaves the election (keepalived's FAULT).
const (
	StateInit State = iota
	StateBackup
	StateMaster
	StateFault
)

func (s State) String() string {
	switch s {
	case StateInit:
		return "INIT"
	case StateBackup:
		return "BACKUP"
	case StateMaster:
		return "MASTER"
	case StateFault:
		return "FAULT"
	}
	return fmt.Sprintf("State(%d)", uint8(s))
}

// MarshalText makes logs and JSON show the state's name.
func (s State) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// MachineConfig is the fixed part of a virtual router's parameters
// (RFC 5798 6.1).
type MachineConfig struct {
	Version int // 2 or 3
	// Priority is the configured priority, 1..255; 255 is the address
	// owner. Tracking changes the effective priority, not this one.
	Priority uint8
	// Interval is Advertisement_Interval.
	Interval time.Duration
	Preempt  bool
	// PreemptDelay holds a preempting backup back this long after it
	// first hears a lower-priority master (keepalived preempt_delay).
	PreemptDelay time.Duration
	Accept       bool
	// Primary is this router's primary address, the tie-breaker when
	// priorities are equal (RFC 5798 6.4.3).
	Primary netip.Addr
}

// EventKind names an input to the Machine.
type EventKind uint8

// Event kinds.
const (
	EvStartup EventKind = iota
	EvShutdown
	// EvTimeout: the deadline returned by Deadline has passed.
	EvTimeout
	// EvAdvert: a valid advertisement for this router was received.
	EvAdvert
	// EvPriority: tracking changed the effective priority.
	EvPriority
	// EvFault / EvRecover: tracking (or the sync group) says the router
	// cannot / can serve again.
	EvFault
	EvRecover
	// EvGroupMaster / EvGroupBackup: another member of the sync group
	// changed state; this one follows.
	EvGroupMaster
	EvGroupBackup
	// EvHandover: a master hands over on purpose (a drill): it sends
	// priority 0, as at shutdown, but stays in Backup, where its
	// Master_Down_Timer takes mastership back if no peer does.
	EvHandover
)

// Event is one input. It is a plain value so the receive path does not
// allocate.
type Event struct {
	Kind EventKind
	// Advert fields.
	Priority uint8
	Interval time.Duration
	Src      netip.Addr
	// Reason explains EvFault, EvRecover and group events.
	Reason string
}

// Actions is what the caller must do after an event.
type Actions struct {
	// Send: transmit one advertisement with SendPriority. Periodic: it is
	// a master's advert because its Adver_Timer fired, not one sent out
	// of turn (becoming master, answering an advert, a new address list).
	Send         bool
	SendPriority uint8
	Periodic     bool
	// Transition: the state changed From -> To because of Reason. The
	// caller binds the virtual addresses on entering MASTER and releases
	// them on leaving it.
	Transition bool
	From, To   State
	Reason     string
	// Announce: re-announce the virtual addresses now (a master heard a
	// lower-priority master: split brain healing).
	Announce bool
}

// Machine is the RFC 5798 section 6.4 state machine of one virtual router
// (RFC 3768 timing for version 2). It is pure: it never reads a clock or
// touches a socket; the caller passes the time with every event and arms a
// timer for Deadline.
type Machine struct {
	cfg      MachineConfig
	state    State
	priority uint8 // effective priority
	faulted  bool

	masterAdverInterval time.Duration
	masterDownAt        time.Time
	adverAt             time.Time
	// preemptAt is when a preempting backup may stop accepting a
	// lower-priority master (zero: no such master seen yet).
	preemptAt time.Time
	master    netip.Addr
	// leaving is the master that sent priority 0 while we are backup: the
	// timer then runs Skew_Time only, and the takeover says so.
	leaving netip.Addr
}

// NewMachine returns a machine in Initialize.
func NewMachine(cfg MachineConfig) *Machine {
	return &Machine{cfg: cfg, priority: cfg.Priority, masterAdverInterval: cfg.Interval}
}

// State returns the current state.
func (m *Machine) State() State { return m.state }

// Priority returns the effective priority.
func (m *Machine) Priority() uint8 { return m.priority }

// Config returns the machine's configuration.
func (m *Machine) Config() MachineConfig { return m.cfg }

// Master returns the source of the last accepted advertisement (the master
// as seen from a backup); invalid if none.
func (m *Machine) Master() netip.Addr { return m.master }

// MasterAdverInterval returns the interval learned from the master (v3) or
// the configured one (v2).
func (m *Machine) MasterAdverInterval() time.Duration { return m.masterAdverInterval }

// Deadline returns when the machine next needs EvTimeout: the
// Master_Down_Timer in BACKUP, the Adver_Timer in MASTER, zero otherwise.
func (m *Machine) Deadline() time.Time {
	switch m.state {
	case StateBackup:
		return m.masterDownAt
	case StateMaster:
		return m.adverAt
	}
	return time.Time{}
}

func (m *Machine) owner() bool { return m.cfg.Priority == 255 && m.priority == 255 }

// SkewTime is RFC 5798 6.1: ((256 - Priority) * Master_Adver_Interval) / 256;
// RFC 3768 6.1 for version 2: (256 - Priority) / 256 seconds.
func (m *Machine) SkewTime() time.Duration {
	if m.cfg.Version == 2 {
		return time.Duration(256-int(m.priority)) * time.Second / 256
	}
	return time.Duration(256-int(m.priority)) * m.masterAdverInterval / 256
}

// MasterDownInterval is 3 * Master_Adver_Interval + Skew_Time (RFC 5798
// 6.1; RFC 3768 uses Advertisement_Interval, which a v2 master must match).
func (m *Machine) MasterDownInterval() time.Duration {
	return 3*m.masterAdverInterval + m.SkewTime()
}

// Handle applies one event at time now.
func (m *Machine) Handle(now time.Time, ev Event) Actions {
	switch ev.Kind {
	case EvStartup:
		if m.state == StateInit {
			return m.startup(now, "startup")
		}
	case EvShutdown:
		return m.shutdown()
	case EvHandover:
		if m.state == StateMaster {
			a := m.to(StateBackup, ev.Reason)
			a.Send, a.SendPriority = true, 0
			m.masterAdverInterval = m.cfg.Interval
			m.masterDownAt = now.Add(m.MasterDownInterval())
			m.master = netip.Addr{}
			return a
		}
	case EvTimeout:
		return m.timeout(now)
	case EvAdvert:
		switch m.state {
		case StateBackup:
			return m.backupAdvert(now, ev)
		case StateMaster:
			return m.masterAdvert(now, ev)
		}
	case EvPriority:
		m.priority = ev.Priority
	case EvFault:
		m.faulted = true
		switch m.state {
		case StateMaster:
			a := m.to(StateFault, ev.Reason)
			a.Send, a.SendPriority = true, 0
			return a
		case StateBackup:
			return m.to(StateFault, ev.Reason)
		}
	case EvRecover:
		m.faulted = false
		if m.state == StateFault {
			return m.startup(now, ev.Reason)
		}
	case EvGroupMaster:
		if m.state == StateBackup {
			return m.becomeMaster(now, ev.Reason)
		}
	case EvGroupBackup:
		if m.state == StateMaster {
			a := m.becomeBackup(now, ev.Reason)
			// The peer's member of the group takes over in Skew_Time.
			a.Send, a.SendPriority = true, 0
			return a
		}
	}
	return Actions{}
}

func (m *Machine) to(s State, reason string) Actions {
	a := Actions{Transition: true, From: m.state, To: s, Reason: reason}
	m.state = s
	m.preemptAt = time.Time{}
	m.leaving = netip.Addr{}
	return a
}

// startup is RFC 5798 6.4.1: the owner becomes master at once, every other
// router waits Master_Down_Interval in backup.
func (m *Machine) startup(now time.Time, reason string) Actions {
	if m.faulted {
		return m.to(StateFault, reason)
	}
	if m.owner() {
		return m.becomeMaster(now, reason+": address owner (priority 255)")
	}
	m.masterAdverInterval = m.cfg.Interval
	m.masterDownAt = now.Add(m.MasterDownInterval())
	m.master = netip.Addr{}
	return m.to(StateBackup, reason)
}

func (m *Machine) becomeMaster(now time.Time, reason string) Actions {
	a := m.to(StateMaster, reason)
	a.Send, a.SendPriority = true, m.priority
	m.adverAt = now.Add(m.cfg.Interval)
	m.master = m.cfg.Primary
	return a
}

func (m *Machine) becomeBackup(now time.Time, reason string) Actions {
	m.masterDownAt = now.Add(m.MasterDownInterval())
	m.adverAt = time.Time{}
	return m.to(StateBackup, reason)
}

// shutdown: a master sends priority 0 so a backup takes over after
// Skew_Time instead of Master_Down_Interval (RFC 5798 6.4.3).
func (m *Machine) shutdown() Actions {
	switch m.state {
	case StateMaster:
		a := m.to(StateInit, "shutdown")
		a.Send, a.SendPriority = true, 0
		return a
	case StateBackup, StateFault:
		return m.to(StateInit, "shutdown")
	}
	return Actions{}
}

func (m *Machine) timeout(now time.Time) Actions {
	switch m.state {
	case StateBackup:
		if now.Before(m.masterDownAt) {
			return Actions{}
		}
		if m.leaving.IsValid() {
			return m.becomeMaster(now, fmt.Sprintf("master %s left (priority 0); took over after Skew_Time %s", m.leaving, m.SkewTime()))
		}
		return m.becomeMaster(now, fmt.Sprintf("no advert for %s (master down)", m.MasterDownInterval()))
	case StateMaster:
		if now.Before(m.adverAt) {
			return Actions{}
		}
		m.adverAt = now.Add(m.cfg.Interval)
		return Actions{Send: true, SendPriority: m.priority, Periodic: true}
	}
	return Actions{}
}

// backupAdvert is RFC 5798 6.4.2 "If an ADVERTISEMENT is received".
func (m *Machine) backupAdvert(now time.Time, ev Event) Actions {
	if ev.Priority == 0 {
		if m.master.IsValid() && ev.Src != m.master {
			// Not the master we follow: a second master of a healed
			// split brain stepping down. Ours is alive.
			return Actions{}
		}
		// The master is leaving: take over after Skew_Time only.
		m.masterDownAt = now.Add(m.SkewTime())
		m.leaving = ev.Src
		return Actions{}
	}
	m.leaving = netip.Addr{}
	lower := ev.Priority < m.priority
	if m.cfg.Preempt && lower && !m.holdPreempt(now) {
		// Discard: Master_Down_Timer runs out and we preempt.
		return Actions{}
	}
	if !lower {
		m.preemptAt = time.Time{}
	}
	if m.cfg.Version == 3 && ev.Interval > 0 {
		m.masterAdverInterval = ev.Interval
	}
	m.masterDownAt = now.Add(m.MasterDownInterval())
	m.master = ev.Src
	return Actions{}
}

// holdPreempt reports whether preempt_delay still holds back a backup that
// hears a lower-priority master. The owner never waits.
func (m *Machine) holdPreempt(now time.Time) bool {
	if m.cfg.PreemptDelay <= 0 || m.owner() {
		return false
	}
	if m.preemptAt.IsZero() {
		m.preemptAt = now.Add(m.cfg.PreemptDelay)
	}
	return now.Before(m.preemptAt)
}

// masterAdvert is RFC 5798 6.4.3 "If an ADVERTISEMENT is received".
func (m *Machine) masterAdvert(now time.Time, ev Event) Actions {
	if ev.Priority == 0 {
		// Another master is leaving (a split brain healing: it heard us
		// and stepped down): assert ourselves at once, and re-announce
		// the addresses, which hosts may have learnt from it meanwhile.
		m.adverAt = now.Add(m.cfg.Interval)
		return Actions{Send: true, SendPriority: m.priority, Announce: true}
	}
	if ev.Priority > m.priority || (ev.Priority == m.priority && ev.Src.Compare(m.cfg.Primary) > 0) {
		if m.cfg.Version == 3 && ev.Interval > 0 {
			m.masterAdverInterval = ev.Interval
		}
		m.master = ev.Src
		reason := fmt.Sprintf("advert from %s with priority %d (ours %d)", ev.Src, ev.Priority, m.priority)
		if ev.Priority == m.priority {
			reason = fmt.Sprintf("advert from %s with equal priority %d and a higher address", ev.Src, ev.Priority)
		}
		// Stepping down, say so with priority 0: the other master may
		// have missed our adverts (a partition) and hosts may have
		// learnt the addresses from us; it re-announces them on this.
		a := m.becomeBackup(now, reason)
		a.Send, a.SendPriority = true, 0
		return a
	}
	// Another master with a lower priority: two masters (a partition
	// healed, a peer that missed our adverts). The RFC discards the advert
	// and lets our next advert win; we answer at once and re-announce the
	// addresses, so the other side steps down and the switches re-learn
	// within milliseconds instead of an advert interval.
	m.adverAt = now.Add(m.cfg.Interval)
	return Actions{Send: true, SendPriority: m.priority, Announce: true}
}
