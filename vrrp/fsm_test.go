package vrrp

import (
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

var (
	t0     = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	us     = netip.MustParseAddr("192.0.2.11")
	peerLo = netip.MustParseAddr("192.0.2.5")  // lower address than ours
	peerHi = netip.MustParseAddr("192.0.2.20") // higher address than ours
)

// step is one event at an offset from t0 and what must follow.
type step struct {
	at    time.Duration
	ev    Event
	want  Actions
	state State
	// deadline is the expected Deadline() offset from t0; -1 means none.
	deadline time.Duration
}

func advert(prio uint8, interval time.Duration, src netip.Addr) Event {
	return Event{Kind: EvAdvert, Priority: prio, Interval: interval, Src: src}
}

func cfg(prio uint8, mods ...func(*MachineConfig)) MachineConfig {
	c := MachineConfig{Version: 3, Priority: prio, Interval: time.Second, Preempt: true, Primary: us}
	for _, f := range mods {
		f(&c)
	}
	return c
}

// skew100 is Skew_Time for priority 100 at a 1s interval: 156/256 s.
const skew100 = 156 * time.Second / 256

func tr(from, to State) Actions { return Actions{Transition: true, From: from, To: to} }

func send(prio uint8) Actions { return Actions{Send: true, SendPriority: prio} }

// periodic is a master's advert on its Adver_Timer.
func periodic(prio uint8) Actions { return Actions{Send: true, SendPriority: prio, Periodic: true} }

func join(a, b Actions) Actions {
	a.Send, a.SendPriority, a.Announce = b.Send || a.Send, a.SendPriority|b.SendPriority, a.Announce || b.Announce
	return a
}

func TestMachineRFCScenarios(t *testing.T) {
	tests := []struct {
		name  string
		cfg   MachineConfig
		steps []step
	}{
		{"RFC 5798 6.4.1: a non-owner starts in Backup with Master_Down_Interval", cfg(100), []step{
			{0, Event{Kind: EvStartup}, tr(StateInit, StateBackup), StateBackup, 3*time.Second + skew100},
		}},
		{"RFC 5798 6.4.1: the owner (priority 255) goes straight to Master and advertises", cfg(255), []step{
			{0, Event{Kind: EvStartup}, join(tr(StateInit, StateMaster), send(255)), StateMaster, time.Second},
		}},
		{"RFC 5798 6.4.2: Master_Down_Timer fires, the backup becomes master and advertises", cfg(100), []step{
			{0, Event{Kind: EvStartup}, tr(StateInit, StateBackup), StateBackup, 3*time.Second + skew100},
			{3 * time.Second, Event{Kind: EvTimeout}, Actions{}, StateBackup, 3*time.Second + skew100}, // early: nothing
			{3*time.Second + skew100, Event{Kind: EvTimeout}, join(tr(StateBackup, StateMaster), send(100)), StateMaster, 4*time.Second + skew100},
		}},
		{"a drill: the master lowered to priority 1 hands over with priority 0 and waits in Backup", cfg(100), []step{
			{0, Event{Kind: EvStartup}, tr(StateInit, StateBackup), StateBackup, 3*time.Second + skew100},
			{3*time.Second + skew100, Event{Kind: EvTimeout}, join(tr(StateBackup, StateMaster), send(100)), StateMaster, 4*time.Second + skew100},
			{4 * time.Second, Event{Kind: EvPriority, Priority: 1}, Actions{}, StateMaster, 4*time.Second + skew100},
			{4 * time.Second, Event{Kind: EvHandover, Reason: "drill"}, join(tr(StateMaster, StateBackup), send(0)), StateBackup, 7*time.Second + 255*time.Second/256},
			// The peer's first advert as master resets the timer.
			{4*time.Second + skew100, advert(100, time.Second, peerHi), Actions{}, StateBackup, 7*time.Second + skew100 + 255*time.Second/256},
		}},
		{"a handover outside Master does nothing", cfg(100), []step{
			{0, Event{Kind: EvStartup}, tr(StateInit, StateBackup), StateBackup, 3*time.Second + skew100},
			{time.Second, Event{Kind: EvHandover}, Actions{}, StateBackup, 3*time.Second + skew100},
		}},
		{"RFC 5798 6.4.2: an advert from a higher priority resets Master_Down_Timer", cfg(100), []step{
			{0, Event{Kind: EvStartup}, tr(StateInit, StateBackup), StateBackup, 3*time.Second + skew100},
			{2 * time.Second, advert(150, time.Second, peerHi), Actions{}, StateBackup, 5*time.Second + skew100},
		}},
		{"RFC 5798 6.4.2: the backup learns Master_Adver_Interval from the master", cfg(100), []step{
			{0, Event{Kind: EvStartup}, tr(StateInit, StateBackup), StateBackup, 3*time.Second + skew100},
			{time.Second, advert(150, 2*time.Second, peerHi), Actions{}, StateBackup, time.Second + 6*time.Second + 2*skew100},
		}},
		{"RFC 5798 6.4.2: priority 0 from the master: take over after Skew_Time only", cfg(100), []step{
			{0, Event{Kind: EvStartup}, tr(StateInit, StateBackup), StateBackup, 3*time.Second + skew100},
			{time.Second, advert(150, time.Second, peerHi), Actions{}, StateBackup, 4*time.Second + skew100},
			{2 * time.Second, advert(0, time.Second, peerHi), Actions{}, StateBackup, 2*time.Second + skew100},
			{2*time.Second + skew100, Event{Kind: EvTimeout}, join(tr(StateBackup, StateMaster), send(100)), StateMaster, 3*time.Second + skew100},
		}},
		{"RFC 5798 6.4.2: with preempt a lower-priority advert is discarded and the backup takes over", cfg(150), []step{
			{0, Event{Kind: EvStartup}, tr(StateInit, StateBackup), StateBackup, 3*time.Second + 106*time.Second/256},
			{time.Second, advert(100, time.Second, peerLo), Actions{}, StateBackup, 3*time.Second + 106*time.Second/256},
			{3*time.Second + 106*time.Second/256, Event{Kind: EvTimeout}, join(tr(StateBackup, StateMaster), send(150)), StateMaster, 4*time.Second + 106*time.Second/256},
		}},
		{"RFC 5798 6.4.2: without preempt a lower-priority master is accepted", cfg(150, func(c *MachineConfig) { c.Preempt = false }), []step{
			{0, Event{Kind: EvStartup}, tr(StateInit, StateBackup), StateBackup, 3*time.Second + 106*time.Second/256},
			{time.Second, advert(100, time.Second, peerLo), Actions{}, StateBackup, 4*time.Second + 106*time.Second/256},
		}},
		{"keepalived preempt_delay: a lower-priority master is accepted for the delay, then preempted", cfg(150, func(c *MachineConfig) { c.PreemptDelay = 5 * time.Second }), []step{
			{0, Event{Kind: EvStartup}, tr(StateInit, StateBackup), StateBackup, 3*time.Second + 106*time.Second/256},
			{time.Second, advert(100, time.Second, peerLo), Actions{}, StateBackup, 4*time.Second + 106*time.Second/256},
			{5 * time.Second, advert(100, time.Second, peerLo), Actions{}, StateBackup, 8*time.Second + 106*time.Second/256},
			// The delay ran out at 6s: this advert is discarded and the timer keeps its old deadline.
			{6 * time.Second, advert(100, time.Second, peerLo), Actions{}, StateBackup, 8*time.Second + 106*time.Second/256},
			{8*time.Second + 106*time.Second/256, Event{Kind: EvTimeout}, join(tr(StateBackup, StateMaster), send(150)), StateMaster, 9*time.Second + 106*time.Second/256},
		}},
		{"RFC 5798 6.4.3: Adver_Timer fires, the master advertises again", cfg(255), []step{
			{0, Event{Kind: EvStartup}, join(tr(StateInit, StateMaster), send(255)), StateMaster, time.Second},
			{time.Second, Event{Kind: EvTimeout}, periodic(255), StateMaster, 2 * time.Second},
			// A late timer (the process was stalled) re-arms from now.
			{5 * time.Second, Event{Kind: EvTimeout}, periodic(255), StateMaster, 6 * time.Second},
		}},
		{"RFC 5798 6.4.3: a higher-priority advert sends the master to Backup, which says so with priority 0", cfg(100), []step{
			{0, Event{Kind: EvStartup}, tr(StateInit, StateBackup), StateBackup, 3*time.Second + skew100},
			{3*time.Second + skew100, Event{Kind: EvTimeout}, join(tr(StateBackup, StateMaster), send(100)), StateMaster, 4*time.Second + skew100},
			{4 * time.Second, advert(200, time.Second, peerLo), join(tr(StateMaster, StateBackup), send(0)), StateBackup, 7*time.Second + skew100},
		}},
		{"RFC 5798 6.4.3: equal priority, the higher primary address wins", cfg(100), []step{
			{0, Event{Kind: EvStartup}, tr(StateInit, StateBackup), StateBackup, 3*time.Second + skew100},
			{3*time.Second + skew100, Event{Kind: EvTimeout}, join(tr(StateBackup, StateMaster), send(100)), StateMaster, 4*time.Second + skew100},
			// Lower address with equal priority: we stay master and answer at once.
			{4 * time.Second, advert(100, time.Second, peerLo), Actions{Send: true, SendPriority: 100, Announce: true}, StateMaster, 5 * time.Second},
			{4500 * time.Millisecond, advert(100, time.Second, peerHi), join(tr(StateMaster, StateBackup), send(0)), StateBackup, 7500*time.Millisecond + skew100},
		}},
		{"RFC 5798 6.4.3: priority 0 from another router makes the master advertise and re-announce at once", cfg(255), []step{
			{0, Event{Kind: EvStartup}, join(tr(StateInit, StateMaster), send(255)), StateMaster, time.Second},
			{300 * time.Millisecond, advert(0, time.Second, peerLo), Actions{Send: true, SendPriority: 255, Announce: true}, StateMaster, 1300 * time.Millisecond},
		}},
		{"a backup ignores priority 0 from a router that is not the master it follows", cfg(100), []step{
			{0, Event{Kind: EvStartup}, tr(StateInit, StateBackup), StateBackup, 3*time.Second + skew100},
			{time.Second, advert(150, time.Second, peerHi), Actions{}, StateBackup, 4*time.Second + skew100},
			// A second master of a healed split brain steps down: the
			// one we follow is alive, so no Skew_Time takeover.
			{1500 * time.Millisecond, advert(0, time.Second, peerLo), Actions{}, StateBackup, 4*time.Second + skew100},
			// Our master leaving still counts.
			{2 * time.Second, advert(0, time.Second, peerHi), Actions{}, StateBackup, 2*time.Second + skew100},
		}},
		{"RFC 5798 6.4.3: shutdown of a master sends priority 0", cfg(255), []step{
			{0, Event{Kind: EvStartup}, join(tr(StateInit, StateMaster), send(255)), StateMaster, time.Second},
			{500 * time.Millisecond, Event{Kind: EvShutdown}, join(tr(StateMaster, StateInit), send(0)), StateInit, -1},
		}},
		{"RFC 5798 6.4.2: shutdown of a backup sends nothing", cfg(100), []step{
			{0, Event{Kind: EvStartup}, tr(StateInit, StateBackup), StateBackup, 3*time.Second + skew100},
			{time.Second, Event{Kind: EvShutdown}, tr(StateBackup, StateInit), StateInit, -1},
		}},
		{"split brain: a master hearing a lower-priority master answers at once and re-announces", cfg(200), []step{
			{0, Event{Kind: EvGroupMaster}, Actions{}, StateInit, -1}, // not in Backup: ignored
			{0, Event{Kind: EvStartup}, tr(StateInit, StateBackup), StateBackup, 3*time.Second + 56*time.Second/256},
			{3*time.Second + 56*time.Second/256, Event{Kind: EvTimeout}, join(tr(StateBackup, StateMaster), send(200)), StateMaster, 4*time.Second + 56*time.Second/256},
			{3500 * time.Millisecond, advert(100, time.Second, peerHi), Actions{Send: true, SendPriority: 200, Announce: true}, StateMaster, 4500 * time.Millisecond},
		}},
		{"FAULT: a master that faults sends priority 0, ignores adverts, and returns through Backup", cfg(100), []step{
			{0, Event{Kind: EvStartup}, tr(StateInit, StateBackup), StateBackup, 3*time.Second + skew100},
			{3*time.Second + skew100, Event{Kind: EvTimeout}, join(tr(StateBackup, StateMaster), send(100)), StateMaster, 4*time.Second + skew100},
			{4 * time.Second, Event{Kind: EvFault, Reason: "eth1 down"}, join(tr(StateMaster, StateFault), send(0)), StateFault, -1},
			{5 * time.Second, advert(50, time.Second, peerLo), Actions{}, StateFault, -1},
			{6 * time.Second, Event{Kind: EvTimeout}, Actions{}, StateFault, -1},
			{7 * time.Second, Event{Kind: EvRecover, Reason: "eth1 up"}, tr(StateFault, StateBackup), StateBackup, 10*time.Second + skew100},
		}},
		{"FAULT: the owner recovers straight to Master", cfg(255), []step{
			{0, Event{Kind: EvFault, Reason: "eth1 down"}, Actions{}, StateInit, -1},
			{0, Event{Kind: EvStartup}, tr(StateInit, StateFault), StateFault, -1},
			{time.Second, Event{Kind: EvRecover, Reason: "eth1 up"}, join(tr(StateFault, StateMaster), send(255)), StateMaster, 2 * time.Second},
		}},
		{"tracking: the effective priority is advertised and used for Skew_Time", cfg(100), []step{
			{0, Event{Kind: EvPriority, Priority: 80}, Actions{}, StateInit, -1},
			{0, Event{Kind: EvStartup}, tr(StateInit, StateBackup), StateBackup, 3*time.Second + 176*time.Second/256},
			{3*time.Second + 176*time.Second/256, Event{Kind: EvTimeout}, join(tr(StateBackup, StateMaster), send(80)), StateMaster, 4*time.Second + 176*time.Second/256},
		}},
		{"RFC 3768 6.1: version 2 Skew_Time is (256-Priority)/256 s and the interval is not learned", cfg(100, func(c *MachineConfig) { c.Version = 2; c.Interval = 2 * time.Second }), []step{
			{0, Event{Kind: EvStartup}, tr(StateInit, StateBackup), StateBackup, 6*time.Second + skew100},
			{time.Second, advert(150, 2*time.Second, peerHi), Actions{}, StateBackup, 7*time.Second + skew100},
		}},
		{"sync group: members follow another member to Master and back to Backup", cfg(100), []step{
			{0, Event{Kind: EvStartup}, tr(StateInit, StateBackup), StateBackup, 3*time.Second + skew100},
			{time.Second, Event{Kind: EvGroupMaster, Reason: "sync group G1: VI_2 became MASTER"}, join(tr(StateBackup, StateMaster), send(100)), StateMaster, 2 * time.Second},
			{3 * time.Second, Event{Kind: EvGroupBackup, Reason: "sync group G1: VI_2 became BACKUP"}, join(tr(StateMaster, StateBackup), send(0)), StateBackup, 6*time.Second + skew100},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := NewMachine(tt.cfg)
			for i, s := range tt.steps {
				got := m.Handle(t0.Add(s.at), s.ev)
				got.Reason = "" // reasons are for people; checked separately
				if diff := cmp.Diff(s.want, got); diff != "" {
					t.Fatalf("step %d (%v at %v): actions (-want +got):\n%s", i, s.ev.Kind, s.at, diff)
				}
				if m.State() != s.state {
					t.Fatalf("step %d: state %v, want %v", i, m.State(), s.state)
				}
				var dl time.Duration = -1
				if d := m.Deadline(); !d.IsZero() {
					dl = d.Sub(t0)
				}
				if dl != s.deadline {
					t.Fatalf("step %d: deadline %v, want %v", i, dl, s.deadline)
				}
			}
		})
	}
}

func TestMachineTransitionReasons(t *testing.T) {
	m := NewMachine(cfg(100))
	m.Handle(t0, Event{Kind: EvStartup})
	a := m.Handle(t0.Add(5*time.Second), Event{Kind: EvTimeout})
	if a.Reason != "no advert for 3.609375s (master down)" {
		t.Errorf("master-down reason %q", a.Reason)
	}
	a = m.Handle(t0.Add(6*time.Second), advert(200, time.Second, peerLo))
	if a.Reason != "advert from 192.0.2.5 with priority 200 (ours 100)" {
		t.Errorf("step-down reason %q", a.Reason)
	}
	a = m.Handle(t0.Add(7*time.Second), Event{Kind: EvFault, Reason: "interface eth0 down"})
	if a.Reason != "interface eth0 down" {
		t.Errorf("fault reason %q", a.Reason)
	}
	m.Handle(t0.Add(8*time.Second), Event{Kind: EvRecover})
	m.Handle(t0.Add(9*time.Second), advert(0, time.Second, peerLo))
	a = m.Handle(t0.Add(10*time.Second), Event{Kind: EvTimeout})
	if a.Reason != "master 192.0.2.5 left (priority 0); took over after Skew_Time 609.375ms" {
		t.Errorf("takeover after priority 0: reason %q", a.Reason)
	}
}

// The receive path in BACKUP must not allocate: adverts arrive every
// interval for as long as the node runs.
func TestMachineAdvertDoesNotAllocate(t *testing.T) {
	m := NewMachine(cfg(100))
	m.Handle(t0, Event{Kind: EvStartup})
	ev := advert(150, time.Second, peerHi)
	now := t0
	allocs := testing.AllocsPerRun(1000, func() {
		now = now.Add(time.Second)
		m.Handle(now, ev)
	})
	if allocs != 0 {
		t.Errorf("%v allocations per advert", allocs)
	}
}
