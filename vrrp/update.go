package vrrp

import (
	"fmt"
	"net/netip"
	"reflect"
	"time"

	"github.com/directord/directord/internal/config"
)

// A reload's vrrp section is applied as a difference, on the engine's loop:
//
//   - An instance whose settings did not change keeps its machine, its
//     state and its timers: no transition, no extra advert.
//   - An instance whose virtual addresses, priority, tracking, notify hooks
//     or announcement schedule changed is updated in place: a master binds
//     and announces the added addresses, releases the removed ones and
//     sends an advert with the new list at once; a new priority goes to the
//     machine as a priority event, as tracking does (a master lowered below
//     a preempting backup hands over; nobody re-elects otherwise).
//   - An instance whose protocol settings changed (interface, vrid,
//     version, advert interval, preempt, accept, source address, unicast
//     peers, authentication, checksum) is stopped as at shutdown (a master
//     sends priority 0 and releases its addresses) and started anew.
//   - A removed instance is stopped that way; an added one starts.
//
// Tracked scripts and sync groups are read at start: a reload that changes
// them is refused, and so is the node's scheduling (applied at start).

// updateTimeout bounds how long a request waits for the loop to take it.
const updateTimeout = 30 * time.Second

// CheckUpdate reports whether cfg's vrrp section can be applied to the
// running engine by Update, without changing anything.
func (e *Engine) CheckUpdate(old, cfg *config.Config) error {
	var errs config.Errors
	if !reflect.DeepEqual(old.VRRP.Scripts, cfg.VRRP.Scripts) {
		errs = append(errs, cfg.ErrorAt("vrrp.scripts", "tracked scripts changed: this build applies a change to vrrp.scripts only at a restart"))
	}
	if !reflect.DeepEqual(old.VRRP.SyncGroups, cfg.VRRP.SyncGroups) {
		errs = append(errs, cfg.ErrorAt("vrrp.sync_groups", "sync groups changed: this build applies a change to vrrp.sync_groups only at a restart"))
	}
	if len(errs) > 0 {
		return errs
	}
	return nil
}

// Update applies cfg's vrrp section to the running engine as a difference
// (see above) and returns once the loop has. Call CheckUpdate first.
func (e *Engine) Update(cfg *config.Config) error {
	return e.onLoop(func() error { return e.applyUpdate(cfg) })
}

// inPlace reports whether a and b differ only in what an instance can
// change without restarting: addresses, priority, tracking, notify hooks,
// announcement schedule.
func inPlace(a, b config.Instance) bool {
	a.VirtualAddresses, b.VirtualAddresses = nil, nil
	a.Priority, b.Priority = 0, 0
	a.Track, b.Track = config.Track{}, config.Track{}
	a.Notify, b.Notify = config.Notify{}, config.Notify{}
	a.GARP, b.GARP = config.GARP{}, config.GARP{}
	return reflect.DeepEqual(a, b)
}

// applyUpdate runs on the loop.
func (e *Engine) applyUpdate(cfg *config.Config) error {
	now := time.Now()
	old := map[string]*instance{}
	for _, in := range e.insts {
		old[in.name] = in
	}
	groupOf := map[string]string{}
	for _, g := range cfg.VRRP.SyncGroups {
		for _, n := range g.Instances {
			groupOf[n] = g.Name
		}
	}
	// Every family the new set needs must have its socket before
	// anything changes.
	for _, c := range cfg.VRRP.Instances {
		if err := e.ensureTransport(c.IPv6()); err != nil {
			return fmt.Errorf("VRRP: %w", err)
		}
	}

	var insts, started []*instance
	var updated, kept, restarted int
	keep := map[*instance]bool{}
	for _, c := range cfg.VRRP.Instances {
		o, ok := old[c.Name]
		switch {
		case ok && reflect.DeepEqual(o.cfg, c):
			keep[o] = true
			insts = append(insts, o)
			kept++
		case ok && inPlace(o.cfg, c):
			keep[o] = true
			e.updateInPlace(o, c, now)
			insts = append(insts, o)
			updated++
		default:
			if ok {
				restarted++
			}
			in := e.newInstance(c, groupOf[c.Name])
			insts = append(insts, in)
			started = append(started, in)
		}
	}
	removed := 0
	for _, o := range e.insts {
		if keep[o] {
			continue
		}
		if !containsName(cfg, o.name) {
			removed++
		}
		e.stopInstance(o, now)
	}

	e.insts = insts
	e.groups = map[string][]*instance{}
	e.vipAddrs = map[netip.Addr]bool{}
	for _, in := range e.insts {
		if in.group != "" {
			e.groups[in.group] = append(e.groups[in.group], in)
		}
		for _, a := range in.advert.Addresses {
			e.vipAddrs[a] = true
		}
	}
	e.mu.Lock()
	e.stats = make([]InstanceStats, len(e.insts))
	e.statInsts = nil
	e.mu.Unlock()
	e.dirty = true

	for _, in := range started {
		e.resolve(in)
		e.refreshTracking(in, now, false)
	}
	e.refreshGroups(now)
	for _, in := range started {
		if in.m != nil {
			e.apply(in, now, in.m.Handle(now, Event{Kind: EvStartup}))
		}
	}
	e.log.Info("VRRP configuration applied", "unchanged", kept, "updated", updated,
		"restarted", restarted, "added", len(started)-restarted, "removed", removed)
	return nil
}

func containsName(cfg *config.Config, name string) bool {
	for _, c := range cfg.VRRP.Instances {
		if c.Name == name {
			return true
		}
	}
	return false
}

// updateInPlace applies new addresses, priority, tracking, hooks and
// schedule to a running instance.
func (e *Engine) updateInPlace(in *instance, c config.Instance, now time.Time) {
	addrsChanged := !reflect.DeepEqual(in.cfg.VirtualAddresses, c.VirtualAddresses) || in.cfg.GARP != c.GARP
	in.cfg = c
	in.setAddresses(c)
	if addrsChanged && in.vipsHeld && e.opts.VIPs != nil {
		// The manager binds and announces only what was added and
		// releases what was removed.
		if err := e.opts.VIPs.Acquire(in.name, in.vips, in.garp); err != nil {
			e.log.Error("cannot bind the reloaded virtual addresses; retrying", "instance", in.name, "error", err)
			in.vipsHeld = false // periodic retries the whole set
		}
	}
	if in.m != nil && in.m.State() == StateMaster && addrsChanged {
		// Peers learn the new address list at once.
		e.send(in, in.m.Priority(), false)
	}
	e.refreshTracking(in, now, false)
	e.log.Info("VRRP instance updated in place", "instance", in.name)
}

// stopInstance stops an instance as at shutdown: a master sends priority 0
// and releases its addresses, and the stop hooks run.
func (e *Engine) stopInstance(in *instance, now time.Time) {
	if in.m != nil {
		e.apply(in, now, in.m.Handle(now, Event{Kind: EvShutdown, Reason: "configuration changed"}))
	} else if in.vipsHeld && e.opts.VIPs != nil {
		_ = e.opts.VIPs.Release(in.name)
	}
	if in.ifi != nil {
		k := routerKey{in.v6, in.ifi.Index, uint8(in.cfg.VRID)}
		if e.byRouter[k] == in {
			delete(e.byRouter, k)
		}
	}
}
