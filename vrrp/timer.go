package vrrp

import (
	"bytes"
	"net/netip"
	"slices"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The advert timer: a master's adverts leave at their time even when the
// engine's thread cannot run then.
//
// The timing thread is real-time, but it is still a Go thread: between two
// system calls it can wait for the runtime (a garbage collection stopping
// the world, a processor to run on), and on a saturated host the runtime's
// other threads run under the normal scheduler, so such a wait can last
// tens of milliseconds: longer than a backup at 10 ms adverts waits before
// it declares the master dead (measured: a real-time goroutine polling
// every 10 ms next to 24 busy processes and an allocating goroutine woke a
// median 11 ms and at worst 294 ms late).
//
// So a master does not send its periodic adverts itself: it keeps the ones
// due within the next advertAhead (at least the next one) queued in the
// kernel, each as an io_uring timeout at its time linked to the sendmsg of
// the advert. When the timeout expires the kernel sends the advert from
// the engine's thread (a real-time thread, woken for this), whether that
// thread was waiting in ppoll, in the runtime or anywhere else. The loop
// tops the queue up at every advert deadline, so while it keeps up, one
// advert joins the queue per interval.
//
// What is queued is cancelled before anything else goes out for the
// instance (a priority-0 advert, an advert with another priority or address
// list) and when it leaves MASTER: a queued advert never follows the
// master's later decisions onto the wire. A killed directord's ring closes
// with the process and its queue with it: the adverts stop with the
// process, as before. A stopped (SIGSTOP) one sends nothing either: the
// kernel runs the send on the stopped thread. A loop that hangs keeps its
// master's adverts going for at most advertAhead.
//
// Where io_uring cannot do this (kernels before 5.16, io_uring disabled or
// filtered) the loop sends every advert itself, as it says at start.

// advertAhead is how far ahead a master's adverts are queued in the kernel:
// a stall of the engine's thread up to this long leaves no gap on the wire.
const advertAhead = 100 * time.Millisecond

// timerSlots bounds the adverts queued at once across all instances (one
// per destination and interval); past it an instance queues fewer ahead.
const timerSlots = 1024

// timerSlot is one queued advert: the kernel reads the message header, the
// destination, the control message and the packet when it sends, so they
// stay untouched until the send's completion is reaped.
type timerSlot struct {
	owner *instance
	busy  bool
	armed bool // the timeout's completion is not reaped yet
	ts    kernelTimespec
	msg   unix.Msghdr
	iov   unix.Iovec
	name  unix.RawSockaddrInet6
	oob   [8]uint64
	buf   []byte
}

// Completion user data: the slot index, and whether it is the timeout's.
const (
	udTimeout = 1 << 32
	udRemove  = 1 << 33
)

// advertTimer queues timed adverts on a ring (the loop's).
type advertTimer struct {
	r     *ring
	slots []timerSlot
	free  []int32
}

func newAdvertTimer() (*advertTimer, error) {
	r, err := newRing(256, 4*timerSlots)
	if err != nil {
		return nil, err
	}
	a := &advertTimer{r: r, slots: make([]timerSlot, timerSlots), free: make([]int32, 0, timerSlots)}
	for i := timerSlots - 1; i >= 0; i-- {
		a.free = append(a.free, int32(i))
	}
	return a, nil
}

func (a *advertTimer) close() { a.r.close() }

// queued is an instance's state in the advert timer.
type queued struct {
	// until is the time of the last advert queued; zero when none is.
	until time.Time
	// pkts are the adverts queued, one per destination, and the interface
	// and source they leave with: what is queued is cancelled when the
	// next advert differs.
	pkts    [][]byte
	dsts    []netip.Addr
	ifindex int
	src     netip.Addr
	// slots are the instance's slots in use.
	slots []int32
}

// monoNow is CLOCK_MONOTONIC, the clock of the ring's absolute timeouts.
func monoNow() time.Duration {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return time.Duration(ts.Nano())
}

// sendTimed is send for a master's advert (its current priority) when the
// advert timer runs: it sends now only what is due and not queued, and
// queues the adverts of the next advertAhead. It reports false when the
// caller must send the advert itself.
func (e *Engine) sendTimed(in *instance, t *transport, dsts []netip.Addr, now time.Time) bool {
	a := e.timer
	q := &in.q
	// Same adverts as queued? Otherwise what is queued goes first.
	same := q.ifindex == in.ifi.Index && q.src == in.src && slices.Equal(q.dsts, dsts) && len(q.pkts) == len(dsts)
	for i, dst := range dsts {
		b, err := in.advert.AppendMarshal(in.sendBuf[:0], in.src, in.sumDst(dst), in.mode)
		if err != nil {
			return false
		}
		in.sendBuf = b
		if same && !bytes.Equal(q.pkts[i], b) {
			same = false
		}
	}
	if !same {
		e.cancelTimed(in)
		q.ifindex, q.src = in.ifi.Index, in.src
		q.dsts = append(q.dsts[:0], dsts...)
		q.pkts = q.pkts[:0]
		for _, dst := range dsts {
			b, err := in.advert.AppendMarshal(nil, in.src, in.sumDst(dst), in.mode)
			if err != nil {
				return false
			}
			q.pkts = append(q.pkts, b)
		}
	}
	interval := in.cfg.AdvertInterval
	if q.until.IsZero() || !q.until.Add(interval).After(now) {
		// Nothing queued is still to come before the next one is due:
		// this one goes now, and the queue starts from it.
		e.sendNow(in, t, dsts)
		q.until = now
	}
	ahead := max(advertAhead, interval)
	mono := monoNow()
	for !q.until.Add(interval).After(now.Add(ahead)) {
		at := q.until.Add(interval)
		if len(a.free) < len(dsts) {
			break
		}
		deadline := mono + at.Sub(now)
		for i, dst := range dsts {
			e.queueAdvert(in, t, q.pkts[i], dst, deadline)
		}
		q.until = at
	}
	if err := a.r.submit(0); err != nil {
		// The entries stay in the ring and go with the next submission.
		e.log.Warn("cannot hand queued VRRP adverts to the kernel now; they go with the next submission", "instance", in.name, "error", err)
	}
	return true
}

// queueAdvert queues one advert in a free slot: a timeout at deadline
// (CLOCK_MONOTONIC) linked to its sendmsg.
func (e *Engine) queueAdvert(in *instance, t *transport, pkt []byte, dst netip.Addr, deadline time.Duration) {
	a := e.timer
	i := a.free[len(a.free)-1]
	a.free = a.free[:len(a.free)-1]
	s := &a.slots[i]
	s.owner, s.busy, s.armed = in, true, true
	s.buf = append(s.buf[:0], pkt...)
	t.header(&s.msg, &s.iov, &s.name, &s.oob, s.buf, in.ifi.Index, in.src, dst)
	s.ts = kernelTimespec{Sec: int64(deadline / time.Second), Nsec: int64(deadline % time.Second)}
	in.q.slots = append(in.q.slots, i)

	tm := a.r.next()
	*tm = sqe{Opcode: opTimeout, Flags: sqeIOLink, Addr: uint64(uintptr(unsafe.Pointer(&s.ts))), Len: 1,
		OpFlags: timeoutAbs | timeoutETimeSuccess, UserData: udTimeout | uint64(i)}
	sm := a.r.next()
	*sm = sqe{Opcode: opSendmsg, Fd: int32(t.fd), Addr: uint64(uintptr(unsafe.Pointer(&s.msg))), OpFlags: unix.MSG_DONTWAIT, UserData: uint64(i)}
}

// cancelTimed removes the instance's queued adverts. When it returns none
// of them can still go out: the removal runs as it is submitted, and an
// advert whose timeout expired meanwhile was sent by the kernel before
// this thread returned from the submission.
func (e *Engine) cancelTimed(in *instance) {
	a := e.timer
	if a == nil {
		return
	}
	in.q.until = time.Time{}
	n := 0
	for _, i := range in.q.slots {
		n += a.remove(i)
	}
	if n == 0 {
		return
	}
	if err := a.r.submit(0); err != nil {
		e.log.Error("cannot cancel queued VRRP adverts", "instance", in.name, "error", err)
	}
}

// remove queues the removal of slot i's timeout if it has not expired
// yet, and reports how many entries it queued (0 or 1).
func (a *advertTimer) remove(i int32) int {
	if !a.slots[i].armed {
		return 0
	}
	sq := a.r.next()
	*sq = sqe{Opcode: opTimeoutRemove, Addr: udTimeout | uint64(i), UserData: udRemove | uint64(i)}
	return 1
}

// reapTimed takes the completions of queued adverts: a send counts as sent
// or is reported; its slot is free again.
func (e *Engine) reapTimed() {
	a := e.timer
	if a == nil {
		return
	}
	a.r.reap(func(c cqe) {
		i := int32(c.UserData & 0xffffffff)
		if int(i) >= len(a.slots) {
			return
		}
		s := &a.slots[i]
		switch {
		case c.UserData&udRemove != 0:
		case c.UserData&udTimeout != 0:
			s.armed = false
		case s.busy:
			in := s.owner
			switch {
			case c.Res >= 0:
				in.sent.Add(1)
			case c.Res != -int32(unix.ECANCELED):
				e.log.Warn("cannot send VRRP advert", "instance", in.name, "interface", in.cfg.Interface, "error", unix.Errno(-c.Res))
			}
			s.busy, s.armed, s.owner = false, false, nil
			if k := slices.Index(in.q.slots, i); k >= 0 {
				in.q.slots = slices.Delete(in.q.slots, k, k+1)
			}
			a.free = append(a.free, i)
		}
	})
}

// startTimer sets the advert timer up on the loop's thread, or says why
// the loop sends every advert itself.
func (e *Engine) startTimer() {
	if e.noTimer {
		return
	}
	a, err := newAdvertTimer()
	if err != nil {
		e.log.Info("VRRP adverts are sent by the timing thread itself: the kernel cannot queue them ahead ("+err.Error()+"); a stall of that thread delays them", "error", err)
		return
	}
	e.timer = a
	e.mu.Lock()
	e.sched.KernelTimedAdverts = true
	e.mu.Unlock()
	e.log.Info("VRRP adverts are timed by the kernel (io_uring): a stalled timing thread does not delay a master's adverts", "ahead", advertAhead)
}

// stopTimer cancels whatever is still queued, waits (briefly) until the
// kernel has let go of every slot, and closes the ring.
func (e *Engine) stopTimer() {
	a := e.timer
	if a == nil {
		return
	}
	// Every queued advert, also those of instances a reload removed.
	for i := range a.slots {
		if a.slots[i].busy {
			a.remove(int32(i))
		}
	}
	_ = a.r.submit(0)
	deadline := time.Now().Add(time.Second)
	for e.reapTimed(); len(a.free) < len(a.slots) && time.Now().Before(deadline); e.reapTimed() {
		time.Sleep(time.Millisecond)
	}
	a.close()
	e.timer = nil
}
