package vrrp

import (
	"errors"
	"fmt"
	"time"
)

// A drill hands an instance's mastership to the peer on purpose: the
// master lowers itself to priority 1, sends priority 0 and releases its
// addresses (as at shutdown) but stays in Backup, held there until
// TakeBack, so that preemption does not take mastership straight back. The
// peer's first advert after the handover is recorded in InstanceStats.

type call struct {
	fn    func() error
	reply chan error
}

// onLoop runs fn on the engine's loop and returns its error.
func (e *Engine) onLoop(fn func() error) error {
	c := call{fn: fn, reply: make(chan error, 1)}
	select {
	case e.calls <- c:
		e.wake()
	case <-time.After(updateTimeout):
		return errors.New("VRRP engine did not take the request (not running?)")
	}
	return <-c.reply
}

func (e *Engine) instance(name string) (*instance, error) {
	for _, in := range e.insts {
		if in.name == name {
			return in, nil
		}
	}
	return nil, fmt.Errorf("no VRRP instance %q", name)
}

// Handover starts a drill of instance name, which must be MASTER here.
func (e *Engine) Handover(name string) error {
	return e.onLoop(func() error {
		in, err := e.instance(name)
		if err != nil {
			return err
		}
		if in.m == nil || in.m.State() != StateMaster {
			state, seen := StateInit, ""
			if in.m != nil {
				state = in.m.State()
				if m := in.m.Master(); m.IsValid() {
					seen = fmt.Sprintf(" (master seen: %s)", m)
				}
			}
			return fmt.Errorf("%s is %s on this node, not MASTER: run the drill on the master%s", name, state, seen)
		}
		if in.cfg.Priority == 255 {
			return fmt.Errorf("%s is the address owner (priority 255): it cannot hand over", name)
		}
		now := time.Now()
		in.drillHold, in.drillPeerAt = true, time.Time{}
		e.log.Info("VRRP drill: handing over to the peer", "instance", name)
		e.apply(in, now, in.m.Handle(now, Event{Kind: EvPriority, Priority: 1}))
		e.apply(in, now, in.m.Handle(now, Event{Kind: EvHandover, Reason: "drill: handed over to the peer"}))
		e.dirty = true
		e.publish()
		return nil
	})
}

// TakeBack ends a drill's hold: the instance returns to its priority and,
// with preempt, takes mastership back.
func (e *Engine) TakeBack(name string) error {
	return e.onLoop(func() error {
		in, err := e.instance(name)
		if err != nil {
			return err
		}
		if !in.drillHold {
			return fmt.Errorf("no drill holds %s", name)
		}
		in.drillHold = false
		e.log.Info("VRRP drill: taking back", "instance", name)
		e.refreshTracking(in, time.Now(), true)
		e.dirty = true
		e.publish()
		return nil
	})
}
