package vrrp

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/directord/directord/internal/command"
	"github.com/directord/directord/internal/config"
	"github.com/directord/directord/vip"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// VIPs binds and releases the virtual addresses of instances; vip.Manager
// implements it.
type VIPs interface {
	Acquire(owner string, addrs []vip.Address, ann vip.Announce) error
	Release(owner string) error
	Announce(owner string)
}

// Transition is a state change of an instance, for logs, events and the
// control socket.
type Transition struct {
	Instance string
	From, To State
	Reason   string
	Priority uint8
	At       time.Time
}

// EngineOptions are the engine's collaborators.
type EngineOptions struct {
	Log  *slog.Logger
	VIPs VIPs
	// OnTransition, if set, is called from the engine's loop for every
	// transition; it must not block.
	OnTransition func(Transition)
	// NotifyTimeout bounds notify hooks. Default 30s.
	NotifyTimeout time.Duration
}

// InstanceStats are one instance's counters and state.
type InstanceStats struct {
	Name          string
	State         State
	Priority      uint8
	Master        netip.Addr
	AdvertsSent   uint64
	AdvertsRecv   uint64
	Transitions   uint64
	FaultReason   string
	LastReason    string
	LastChangedAt time.Time
	// MaxTimerLateness is the longest an expired timer of this instance
	// (Master_Down_Timer as backup, Adver_Timer as master) has waited for
	// the engine since start: how far scheduling delays came to eating the
	// margin between Master_Down_Interval and a spurious takeover.
	MaxTimerLateness time.Duration
	// A drill holds the instance at priority 1; the peer's first advert
	// after the handover came at DrillPeerAdvertAt from DrillPeer.
	DrillHold         bool
	DrillPeerAdvertAt time.Time
	DrillPeer         netip.Addr
}

// Scheduling says how the VRRP timing thread runs.
type Scheduling struct {
	// RealtimePriority is the SCHED_FIFO priority in effect; 0 if the
	// thread runs under the normal scheduler.
	RealtimePriority int
	// MemoryLocked reports whether mlockall succeeded.
	MemoryLocked bool
	// KernelTimedAdverts reports whether masters' adverts are queued in
	// the kernel ahead of time (timer.go).
	KernelTimedAdverts bool
	// Problems lists what was asked for and refused, for status output.
	Problems []string
}

// Engine runs the VRRP instances of one node: one goroutine owns every
// state machine, fed by the sockets, the timers, link changes, tracked
// scripts and services.
type Engine struct {
	opts  EngineOptions
	log   *slog.Logger
	insts []*instance
	// byRouter finds the instance an advert is for.
	byRouter map[routerKey]*instance
	groups   map[string][]*instance
	scripts  *Scripts
	vipAddrs map[netip.Addr]bool

	trans [2]*transport // IPv4, IPv6
	svc   chan serviceState
	// calls carries work that must run on the loop: reloads (update.go)
	// and drills (drill.go).
	calls chan call
	// wakeFD is an eventfd in the loop's poll set: whatever sends the loop
	// work on a channel writes it so the loop looks.
	wakeFD int
	pfds   [3]unix.PollFd // IPv4 socket, IPv6 socket, wakeFD
	rxBuf  [4096]byte

	drops [maxDropReasons]atomic.Uint64
	// rxAdvert is reused for every received advert: the receive path runs
	// every interval for as long as the node does, and must not allocate.
	rxAdvert Advert

	// mu guards stats and sched. The loop only ever TryLocks it: a reader
	// of Stats preempted while holding it must not stall a real-time loop.
	mu    sync.Mutex
	stats []InstanceStats
	// statInsts are the instances stats describes, index for index (a
	// reload replaces the loop's list).
	statInsts []*instance
	sched     Scheduling
	dirty     bool // stats not yet published

	wg sync.WaitGroup // notify hooks

	rtPrio  int
	lockMem bool

	// timer queues masters' adverts in the kernel; nil where it cannot
	// (and where noTimer, set before the loop starts, says not to).
	timer   *advertTimer
	noTimer bool
}

// maxDropReasons bounds the DropReason values counted.
const maxDropReasons = 32

type routerKey struct {
	v6      bool
	ifindex int
	vrid    uint8
}

type serviceState struct {
	name string
	up   bool
}

// instance is one configured virtual router and its runtime state. Only
// the engine's loop touches it.
type instance struct {
	cfg     config.Instance
	name    string
	v6      bool
	ifi     *net.Interface
	src     netip.Addr
	m       *Machine
	expect  Expect
	mode    ChecksumMode
	advert  Advert
	vips    []vip.Address
	garp    vip.Announce
	group   string
	sendBuf []byte
	q       queued // adverts queued in the advert timer

	linkUp    map[string]bool
	scriptUp  map[string]bool
	serviceUp map[string]bool

	ownFault string // why tracking faults this instance; "" = healthy
	faulted  bool   // what the machine was last told
	vipsHeld bool
	peers    []netip.Addr
	// oldUnicastSum: a unicast peer sums its VRRPv3 adverts with
	// 224.0.0.18 in the pseudo-header (keepalived 1.3.6 and older), so
	// this instance accepts that and sums its own the same way, as
	// keepalived does when it meets one.
	oldUnicastSum bool
	sent, recv    atomic.Uint64
	// late is the largest timer lateness seen, in nanoseconds.
	late       atomic.Int64
	lateLogged int64 // the maximum last logged
	changes    uint64
	lastReason string
	lastAt     time.Time

	// A drill (drill.go) holds the instance at priority 1 until taken
	// back, and records the peer's first advert after the handover.
	drillHold   bool
	drillPeerAt time.Time
	drillPeer   netip.Addr
}

// NewEngine prepares the instances of cfg. It fails on what the file
// cannot tell: an unknown script user.
func NewEngine(cfg *config.Config, opts EngineOptions) (*Engine, error) {
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.NotifyTimeout <= 0 {
		opts.NotifyTimeout = 30 * time.Second
	}
	e := &Engine{
		opts:     opts,
		log:      opts.Log,
		byRouter: map[routerKey]*instance{},
		groups:   map[string][]*instance{},
		vipAddrs: map[netip.Addr]bool{},
		svc:      make(chan serviceState, 64),
		calls:    make(chan call, 1),
		wakeFD:   -1,
		rtPrio:   cfg.Node.VRRPRTPriority,
		lockMem:  cfg.Node.LockMemory,
	}

	var specs []ScriptSpec
	for i, s := range cfg.VRRP.Scripts {
		user := s.User
		if user == "" {
			u, err := command.DefaultUser()
			if err != nil {
				return nil, cfg.ErrorAt(fmt.Sprintf("vrrp.scripts[%d].user", i), err.Error())
			}
			user = u
		} else if _, _, err := command.LookupUser(user); err != nil {
			return nil, cfg.ErrorAt(fmt.Sprintf("vrrp.scripts[%d].user", i), err.Error())
		}
		specs = append(specs, ScriptSpec{Name: s.Name, Command: s.Command, Interval: s.Interval, Timeout: s.Timeout, Rise: s.Rise, Fall: s.Fall, User: user})
	}
	e.scripts = NewScripts(specs, opts.Log)

	groupOf := map[string]string{}
	for _, g := range cfg.VRRP.SyncGroups {
		for _, n := range g.Instances {
			groupOf[n] = g.Name
		}
	}
	for _, c := range cfg.VRRP.Instances {
		in := e.newInstance(c, groupOf[c.Name])
		e.insts = append(e.insts, in)
		if in.group != "" {
			e.groups[in.group] = append(e.groups[in.group], in)
		}
	}
	e.stats = make([]InstanceStats, len(e.insts))
	return e, nil
}

// newInstance builds an instance of c, not yet resolved or started.
func (e *Engine) newInstance(c config.Instance, group string) *instance {
	in := &instance{
		cfg:       c,
		name:      c.Name,
		v6:        c.IPv6(),
		group:     group,
		mode:      ChecksumRFC,
		peers:     c.UnicastPeers,
		linkUp:    map[string]bool{},
		scriptUp:  map[string]bool{},
		serviceUp: map[string]bool{},
		sendBuf:   make([]byte, 0, 4096),
	}
	if c.ChecksumCompat == "v2" {
		in.mode = ChecksumV2
	}
	in.advert = Advert{Version: c.Version, VRID: uint8(c.VRID), Interval: c.AdvertInterval}
	in.expect = Expect{Version: c.Version, Interval: c.AdvertInterval}
	if a := c.Authentication; a != nil && c.Version == 2 {
		in.advert.AuthType, in.advert.AuthData = 1, PassAuth(a.Password)
		in.expect.AuthType, in.expect.AuthData = in.advert.AuthType, in.advert.AuthData
	}
	in.setAddresses(c)
	for _, va := range c.VirtualAddresses {
		e.vipAddrs[va.Address.Addr()] = true
	}
	return in
}

// oldSumPossible says whether an advert that failed its checksum may carry
// old keepalived's unicast one: VRRPv3 over IPv4, to this instance's
// unicast peers, summed per the RFC here.
func (in *instance) oldSumPossible(b []byte, dst netip.Addr) bool {
	return !in.v6 && in.mode == ChecksumRFC && len(in.peers) > 0 && len(b) > 0 && b[0]>>4 == 3 && dst.Unmap() != groupV4
}

// sumDst is the destination address the checksum of an advert to dst
// covers (oldUnicastSum is only ever set on an IPv4 instance).
func (in *instance) sumDst(dst netip.Addr) netip.Addr {
	if in.oldUnicastSum {
		return groupV4
	}
	return dst
}

// setAddresses takes c's virtual addresses and announcement schedule: the
// settings a reload changes in place.
func (in *instance) setAddresses(c config.Instance) {
	in.vips = in.vips[:0]
	var addrs []netip.Addr
	for _, va := range c.VirtualAddresses {
		ifname := va.Interface
		if ifname == "" {
			ifname = c.Interface
		}
		in.vips = append(in.vips, vip.Address{Prefix: va.Address, Interface: ifname, Label: va.Label})
		addrs = append(addrs, va.Address.Addr())
	}
	in.advert.Addresses, in.expect.Addresses = addrs, addrs
	in.garp = vip.Announce{Repeat: c.GARP.Repeat, Interval: c.GARP.Interval, MasterDelay: c.GARP.MasterDelay, Refresh: c.GARP.Refresh}
}

// SetService reports the health of a tracked virtual service (from the
// IPVS quorum). Safe from any goroutine.
func (e *Engine) SetService(name string, up bool) {
	e.svc <- serviceState{name, up}
	e.wake()
}

// Stats returns a snapshot of every instance. The counters and the timer
// lateness are read as they are now; the rest as the loop last published it.
func (e *Engine) Stats() []InstanceStats {
	e.mu.Lock()
	out := slices.Clone(e.stats)
	insts := e.statInsts
	e.mu.Unlock()
	for i, in := range insts {
		out[i].AdvertsSent, out[i].AdvertsRecv = in.sent.Load(), in.recv.Load()
		out[i].MaxTimerLateness = time.Duration(in.late.Load())
	}
	return out
}

// Scheduling reports how the VRRP timing thread runs (once Run started it).
func (e *Engine) Scheduling() Scheduling {
	e.mu.Lock()
	defer e.mu.Unlock()
	s := e.sched
	s.Problems = slices.Clone(s.Problems)
	return s
}

// wakeOne is the eventfd increment; read-only, shared by every writer.
var wakeOne = [8]byte{1}

// wake makes the loop look at its channels. Safe from any goroutine.
func (e *Engine) wake() {
	if e.wakeFD >= 0 {
		_, _ = unix.Write(e.wakeFD, wakeOne[:])
	}
}

// ensureTransport opens the socket of a family the first time an instance
// needs it.
func (e *Engine) ensureTransport(v6 bool) error {
	fam := 0
	if v6 {
		fam = 1
	}
	if e.trans[fam] != nil {
		return nil
	}
	t, err := listenTransport(v6)
	if err != nil {
		return err
	}
	e.trans[fam] = t
	e.pfds[fam].Fd = int32(t.fd)
	return nil
}

// Drops returns how many received adverts were discarded, by reason.
func (e *Engine) Drops() map[DropReason]uint64 {
	out := map[DropReason]uint64{}
	for _, r := range AllDropReasons() {
		if int(r) < maxDropReasons {
			out[r] = e.drops[r].Load()
		}
	}
	return out
}

// Run runs the instances until ctx is done, then shuts them down the RFC
// way: a master sends priority 0, then releases its addresses.
//
// Everything VRRP timing depends on runs in one goroutine locked to its own
// OS thread, real-time (SCHED_FIFO at node.vrrp_rt_priority) where the
// system permits: it waits in ppoll on the VRRP sockets with the earliest
// timer as timeout, reads the adverts itself and sends its own. A loaded
// machine therefore delays neither the reception of the master's adverts
// nor a master's next advert, and the Go scheduler, the network poller and
// the garbage collector stay off that path (it does not allocate).
func (e *Engine) Run(ctx context.Context) error {
	wfd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		return fmt.Errorf("VRRP engine: eventfd: %w", err)
	}
	e.wakeFD = wfd
	for i := range e.pfds {
		e.pfds[i] = unix.PollFd{Fd: -1, Events: unix.POLLIN}
	}
	e.pfds[2].Fd = int32(wfd)
	defer func() {
		for _, t := range e.trans {
			if t != nil {
				t.close()
			}
		}
		e.wakeFD = -1
		unix.Close(wfd)
	}()
	for _, in := range e.insts {
		if err := e.ensureTransport(in.v6); err != nil {
			return err
		}
	}
	e.lockMemory()

	done := make(chan error, 1)
	go func() {
		// Never unlocked: the thread may be real-time, and it ends with
		// this goroutine instead of going back to the runtime's pool.
		runtime.LockOSThread()
		e.realtime()
		done <- e.loop(ctx)
	}()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		e.wake()
		return <-done
	}
}

// loop is the engine's timing loop; see Run.
func (e *Engine) loop(ctx context.Context) error {
	loopCtx, stopLoop := context.WithCancel(context.Background())
	defer stopLoop()
	links := e.watchLinks(loopCtx)
	scripts := e.forwardScripts(e.scripts.Start(loopCtx))
	e.startTimer()
	defer e.stopTimer()

	now := time.Now()
	for _, in := range e.insts {
		e.resolve(in)
		e.refreshTracking(in, now, false)
	}
	e.refreshGroups(now)
	for _, in := range e.insts {
		if in.m != nil {
			e.apply(in, now, in.m.Handle(now, Event{Kind: EvStartup}))
		}
	}
	e.dirty = true
	e.publish()

	nextTick := now.Add(time.Second)
	for {
		next := e.nextDeadline()
		if next.IsZero() || nextTick.Before(next) {
			next = nextTick
		}
		woke := e.poll(next)
		if ctx.Err() != nil {
			e.shutdown()
			stopLoop()
			if scripts != nil {
				for range scripts { // wait for running scripts to finish
				}
			}
			e.waitHooks(5 * time.Second)
			e.dirty = true
			e.publish()
			return nil
		}
		e.noteLateness(woke)
		e.reapTimed()
		// Every advert already queued is processed before any timer is
		// acted on: after a stall (the thread descheduled, SIGSTOP, a
		// paused VM) the expired Master_Down_Timer and the adverts that
		// arrived meanwhile are seen together, and the adverts must win.
		// Only timers expired by the time the sockets were drained fire,
		// so a stall between the draining and the timers cannot let an
		// advert that arrived in it go unseen.
		drained := time.Now()
		e.receive()
		e.events(links, &scripts)
		e.timeouts(drained)
		if now := time.Now(); !now.Before(nextTick) {
			e.periodic()
			e.dirty = true
			nextTick = now.Add(time.Second)
		}
		e.publish()
	}
}

// poll waits until next, a datagram or a wake-up, and returns when it woke.
func (e *Engine) poll(next time.Time) time.Time {
	ts := unix.NsecToTimespec(max(int64(time.Until(next)), 0))
	_, err := unix.Ppoll(e.pfds[:], &ts, nil)
	woke := time.Now()
	if err != nil && err != unix.EINTR {
		e.log.Error("VRRP engine: poll failed", "error", err)
		time.Sleep(10 * time.Millisecond)
	}
	if e.pfds[2].Revents != 0 {
		var b [8]byte
		_, _ = unix.Read(e.wakeFD, b[:])
	}
	return woke
}

// events handles what other goroutines sent the loop, without waiting.
func (e *Engine) events(links <-chan netlink.LinkUpdate, scripts *<-chan ScriptResult) {
	for {
		select {
		case u := <-links:
			e.handleLink(u)
		case s, ok := <-*scripts:
			if !ok {
				// Closed (scripts done): a nil channel is never ready.
				*scripts = nil
				continue
			}
			e.handleScript(s)
		case s := <-e.svc:
			e.handleService(s)
		case c := <-e.calls:
			c.reply <- c.fn()
		default:
			return
		}
		e.dirty = true
	}
}

// forwardScripts relays tracked-script results to the loop, waking it.
// The returned channel closes when in does.
func (e *Engine) forwardScripts(in <-chan ScriptResult) <-chan ScriptResult {
	out := make(chan ScriptResult, 64)
	go func() {
		defer close(out)
		for s := range in {
			out <- s
			e.wake()
		}
	}()
	return out
}

// nextDeadline is the earliest deadline of all machines (zero: none).
func (e *Engine) nextDeadline() time.Time {
	var next time.Time
	for _, in := range e.insts {
		if in.m == nil {
			continue
		}
		if d := in.m.Deadline(); !d.IsZero() && (next.IsZero() || d.Before(next)) {
			next = d
		}
	}
	return next
}

// noteLateness records, per instance, how long after its deadline the
// loop woke up for an expired timer.
func (e *Engine) noteLateness(woke time.Time) {
	for _, in := range e.insts {
		if in.m == nil {
			continue
		}
		d := in.m.Deadline()
		if d.IsZero() || woke.Before(d) {
			continue
		}
		if late := int64(woke.Sub(d)); late > in.late.Load() {
			in.late.Store(late)
			if late >= int64(time.Millisecond) && late >= 2*in.lateLogged {
				// Rare (each time the maximum doubles): a log line
				// allocates, the common path does not.
				in.lateLogged = late
				e.log.Info("VRRP timer late (new maximum)", "instance", in.name, "state", in.m.State(), "late", time.Duration(late), "interval", in.cfg.AdvertInterval)
			}
		}
	}
}

// maxReadsPerWake bounds the datagrams one wake-up reads, so that a flood
// cannot keep the loop from its timers for ever.
const maxReadsPerWake = 4096

// receive handles every datagram queued in the VRRP sockets.
func (e *Engine) receive() {
	for _, t := range e.trans {
		if t == nil {
			continue
		}
		for range maxReadsPerWake {
			r, err := t.read(e.rxBuf[:])
			if err != nil {
				if err != unix.EAGAIN && err != unix.EINTR {
					e.log.Error("VRRP socket read failed", "error", err)
				}
				break
			}
			e.handle(r)
		}
	}
}

// timeouts fires the machines whose deadline passed by now, the time the
// caller started reading every advert that arrived meanwhile (receive).
func (e *Engine) timeouts(now time.Time) {
	for _, in := range e.insts {
		if in.m == nil {
			continue
		}
		if d := in.m.Deadline(); !d.IsZero() && !now.Before(d) {
			e.apply(in, now, in.m.Handle(now, Event{Kind: EvTimeout}))
		}
	}
}

func (e *Engine) drop(r DropReason, p *received) {
	if int(r) < maxDropReasons {
		e.drops[r].Add(1)
	}
	if e.log.Enabled(context.Background(), slog.LevelDebug) {
		e.log.Debug("VRRP advert dropped", "reason", r.String(), "src", p.src, "ifindex", p.ifindex, "vrid", vridOf(p.data))
	}
}

func vridOf(b []byte) int {
	if len(b) < 2 {
		return -1
	}
	return int(b[1])
}

// handle validates one received datagram and feeds it to its instance.
func (e *Engine) handle(r received) {
	if len(r.data) < 2 {
		e.drop(DropTruncated, &r)
		return
	}
	in := e.byRouter[routerKey{r.src.Is6(), r.ifindex, r.data[1]}]
	if in == nil || in.m == nil {
		e.drop(DropUnknownVRID, &r)
		return
	}
	if r.src == in.src || e.vipAddrs[r.src] {
		e.drop(DropOwnAdvert, &r)
		return
	}
	if len(in.peers) > 0 && !slices.Contains(in.peers, r.src) {
		e.drop(DropNotPeer, &r)
		return
	}
	a := &e.rxAdvert
	reason := ParseInto(a, r.data, r.src, r.dst, in.mode)
	oldSum := false
	if reason == DropBadChecksum && in.oldSumPossible(r.data, r.dst) && ParseInto(a, r.data, r.src, groupV4, in.mode) == DropNone {
		reason, oldSum = DropNone, true
	}
	if reason != DropNone {
		e.drop(reason, &r)
		return
	}
	if reason := a.Check(r.ttl, in.expect); reason != DropNone {
		e.drop(reason, &r)
		return
	}
	if oldSum && !in.oldUnicastSum {
		in.oldUnicastSum = true
		e.log.Warn("VRRP peer sums its unicast adverts over 224.0.0.18, as keepalived 1.3.6 and older did: accepting them and sending ours the same way until restart",
			"instance", in.name, "peer", r.src)
	}
	in.recv.Add(1)
	if in.drillHold && in.drillPeerAt.IsZero() && a.Priority > 0 {
		in.drillPeerAt, in.drillPeer = r.at, r.src
		e.dirty = true
	}
	e.apply(in, r.at, in.m.Handle(r.at, Event{Kind: EvAdvert, Priority: a.Priority, Interval: a.Interval, Src: r.src}))
}

// apply carries out a machine's actions: the advert first, so that on a
// takeover the peers hear the new master before the addresses move, and on
// a shutdown the priority-0 advert leaves before the addresses go.
func (e *Engine) apply(in *instance, now time.Time, a Actions) {
	if a.Send {
		e.send(in, a.SendPriority, a.Periodic)
	}
	if a.Transition {
		e.dirty = true
		e.transition(in, now, a)
	}
	if a.Announce && e.opts.VIPs != nil {
		e.opts.VIPs.Announce(in.name)
	}
}

// send sends in's advert at prio; periodic says it is the one its
// Adver_Timer asked for.
func (e *Engine) send(in *instance, prio uint8, periodic bool) {
	if in.ifi == nil || !in.src.IsValid() {
		return
	}
	t := e.trans[0]
	dsts := groupsV4[:]
	if in.v6 {
		t, dsts = e.trans[1], groupsV6[:]
	}
	if len(in.peers) > 0 {
		dsts = in.peers
	}
	in.advert.Priority = prio
	// A master's adverts go through the advert timer (timer.go) where it
	// runs: one out of turn goes now, and the queue starts again from it.
	// Anything else cancels what the timer holds first.
	if e.timer != nil && in.m != nil && in.m.State() == StateMaster && prio == in.m.Priority() && prio != 0 {
		if !periodic {
			e.cancelTimed(in)
		}
		if e.sendTimed(in, t, dsts, time.Now()) {
			return
		}
	}
	e.cancelTimed(in)
	e.sendNow(in, t, dsts)
}

// sendNow sends in's advert (its current priority) to every destination.
func (e *Engine) sendNow(in *instance, t *transport, dsts []netip.Addr) {
	for _, dst := range dsts {
		b, err := in.advert.AppendMarshal(in.sendBuf[:0], in.src, in.sumDst(dst), in.mode)
		if err != nil {
			e.log.Error("cannot encode VRRP advert", "instance", in.name, "error", err)
			return
		}
		in.sendBuf = b
		if err := t.send(b, in.ifi.Index, in.src, dst); err != nil {
			e.log.Warn("cannot send VRRP advert", "instance", in.name, "interface", in.ifi.Name, "dst", dst, "error", err)
			continue
		}
		in.sent.Add(1)
	}
}

func (e *Engine) transition(in *instance, now time.Time, a Actions) {
	in.changes++
	in.lastReason, in.lastAt = a.Reason, now
	e.log.Info("VRRP transition", "instance", in.name, "vrid", in.cfg.VRID, "from", a.From, "to", a.To, "priority", in.m.Priority(), "reason", a.Reason)
	if a.From == StateMaster {
		e.cancelTimed(in)
	}
	if a.From == StateMaster && e.opts.VIPs != nil {
		in.vipsHeld = false
		if err := e.opts.VIPs.Release(in.name); err != nil {
			e.log.Error("cannot release virtual addresses", "instance", in.name, "error", err)
		}
	}
	if a.To == StateMaster {
		e.acquire(in)
	}
	e.notify(in, a.To)
	if e.opts.OnTransition != nil {
		e.opts.OnTransition(Transition{Instance: in.name, From: a.From, To: a.To, Reason: a.Reason, Priority: in.m.Priority(), At: now})
	}
	e.followGroup(in, now, a)
}

func (e *Engine) acquire(in *instance) {
	if e.opts.VIPs == nil || in.vipsHeld {
		return
	}
	if err := e.opts.VIPs.Acquire(in.name, in.vips, in.garp); err != nil {
		// Retried every second while master (periodic).
		e.log.Error("cannot bind virtual addresses", "instance", in.name, "error", err)
		return
	}
	in.vipsHeld = true
}

// followGroup moves the other members of a sync group with in.
func (e *Engine) followGroup(in *instance, now time.Time, a Actions) {
	if in.group == "" {
		return
	}
	var kind EventKind
	switch {
	case a.To == StateMaster:
		kind = EvGroupMaster
	case a.From == StateMaster && a.To == StateBackup:
		kind = EvGroupBackup
	default:
		return
	}
	reason := fmt.Sprintf("sync group %s: %s became %s", in.group, in.name, a.To)
	for _, o := range e.groups[in.group] {
		if o != in && o.m != nil {
			e.apply(o, now, o.m.Handle(now, Event{Kind: kind, Reason: reason}))
		}
	}
}

// notify runs the hooks for a new state with keepalived's arguments:
// INSTANCE <name> <STATE> <priority>. STATE is STOP when the instance stops.
func (e *Engine) notify(in *instance, to State) {
	n := in.cfg.Notify
	var list []string
	state := to.String()
	switch to {
	case StateMaster:
		list = n.Master
	case StateBackup:
		list = n.Backup
	case StateFault:
		list = n.Fault
	case StateInit:
		list, state = n.Stop, "STOP"
	}
	prio := strconv.Itoa(int(in.m.Priority()))
	for _, argv := range [][]string{list, n.Any} {
		if len(argv) == 0 {
			continue
		}
		full := append(slices.Clone(argv), "INSTANCE", in.name, state, prio)
		e.wg.Add(1)
		go func() {
			defer e.wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), e.opts.NotifyTimeout)
			defer cancel()
			res := command.Run(ctx, command.Spec{Argv: full, Timeout: e.opts.NotifyTimeout})
			if res.Err != nil || res.ExitCode != 0 {
				e.log.Warn("notify hook failed", "instance", in.name, "state", state, "argv", full, "exit", res.ExitCode, "error", res.Err, "output", string(res.Output))
			}
		}()
	}
}

func (e *Engine) waitHooks(d time.Duration) {
	done := make(chan struct{})
	go func() { e.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(d):
		e.log.Warn("notify hooks still running at stop", "waited", d)
	}
}

func (e *Engine) shutdown() {
	now := time.Now()
	for _, in := range e.insts {
		if in.m != nil {
			e.apply(in, now, in.m.Handle(now, Event{Kind: EvShutdown}))
		}
	}
}

// resolve finds the instance's interface and source address and creates
// its machine once the primary address is known.
func (e *Engine) resolve(in *instance) {
	ifi, err := net.InterfaceByName(in.cfg.Interface)
	if err != nil {
		return
	}
	if in.ifi != nil && in.ifi.Index != ifi.Index {
		delete(e.byRouter, routerKey{in.v6, in.ifi.Index, uint8(in.cfg.VRID)})
	}
	in.ifi = ifi
	t := e.trans[0]
	if in.v6 {
		t = e.trans[1]
	}
	if err := t.join(ifi); err != nil {
		e.log.Warn("cannot join VRRP group", "instance", in.name, "interface", ifi.Name, "error", err)
	}
	e.byRouter[routerKey{in.v6, ifi.Index, uint8(in.cfg.VRID)}] = in
	if in.cfg.SourceAddress.IsValid() {
		in.src = in.cfg.SourceAddress
	} else if !in.src.IsValid() {
		in.src = e.primaryAddress(ifi, in.v6)
	}
	if in.m == nil && in.src.IsValid() {
		in.m = NewMachine(MachineConfig{
			Version: in.cfg.Version, Priority: uint8(in.cfg.Priority), Interval: in.cfg.AdvertInterval,
			Preempt: in.cfg.Preempt, PreemptDelay: in.cfg.PreemptDelay, Accept: in.cfg.Accept, Primary: in.src,
		})
	}
}

// primaryAddress is the interface's first IPv4 address that is not a
// virtual address, or its IPv6 link-local address (RFC 5798 5.1.2.1).
func (e *Engine) primaryAddress(ifi *net.Interface, v6 bool) netip.Addr {
	addrs, err := ifi.Addrs()
	if err != nil {
		return netip.Addr{}
	}
	for _, a := range addrs {
		p, err := netip.ParsePrefix(a.String())
		if err != nil {
			continue
		}
		ip := p.Addr().Unmap()
		switch {
		case e.vipAddrs[ip]:
		case !v6 && ip.Is4():
			return ip
		case v6 && ip.Is6() && ip.IsLinkLocalUnicast():
			return ip.WithZone("")
		}
	}
	return netip.Addr{}
}

// refreshTracking recomputes the instance's effective priority and fault
// from its tracked objects and tells the machine what changed.
func (e *Engine) refreshTracking(in *instance, now time.Time, notifyGroup bool) {
	fault := ""
	switch {
	case in.ifi == nil:
		fault = fmt.Sprintf("interface %s does not exist", in.cfg.Interface)
	case !e.linkState(in, in.cfg.Interface):
		fault = fmt.Sprintf("interface %s is down", in.cfg.Interface)
	case !in.src.IsValid():
		fam := "IPv4"
		if in.v6 {
			fam = "IPv6 link-local"
		}
		fault = fmt.Sprintf("no %s address on %s to send adverts from", fam, in.cfg.Interface)
	}
	sum := 0
	check := func(kind, name string, weight int, up bool) {
		if up {
			return
		}
		if weight == 0 {
			if fault == "" {
				fault = fmt.Sprintf("tracked %s %s is down", kind, name)
			}
			return
		}
		sum += weight
	}
	for _, t := range in.cfg.Track.Interfaces {
		check("interface", t.Name, t.Weight, e.linkState(in, t.Name))
	}
	for _, t := range in.cfg.Track.Scripts {
		up, known := e.scripts.Status(t.Name)
		check("script", t.Name, t.Weight, up || !known)
	}
	for _, t := range in.cfg.Track.Services {
		up, known := in.serviceUp[t.Name]
		check("service", t.Name, t.Weight, up || !known)
	}
	in.ownFault = fault
	if in.m == nil {
		return
	}
	prio := in.cfg.Priority
	if in.drillHold {
		prio, sum = 1, 0
	}
	if prio < 255 {
		// The owner stays the owner; everyone else moves within 1..254.
		prio = min(max(prio+sum, 1), 254)
	}
	if uint8(prio) != in.m.Priority() {
		e.log.Info("VRRP priority changed by tracking", "instance", in.name, "from", in.m.Priority(), "to", prio)
		e.apply(in, now, in.m.Handle(now, Event{Kind: EvPriority, Priority: uint8(prio)}))
	}
	if notifyGroup {
		e.refreshGroups(now)
	}
}

func (e *Engine) linkState(in *instance, name string) bool {
	if up, ok := in.linkUp[name]; ok {
		return up
	}
	l, err := netlink.LinkByName(name)
	up := err == nil && linkUp(l.Attrs())
	in.linkUp[name] = up
	return up
}

func linkUp(a *netlink.LinkAttrs) bool {
	return a.Flags&net.FlagUp != 0 && a.RawFlags&unix.IFF_LOWER_UP != 0
}

// refreshGroups tells every machine whether it is faulted: by its own
// tracking, or because a member of its sync group is.
func (e *Engine) refreshGroups(now time.Time) {
	for _, in := range e.insts {
		reason := in.ownFault
		if reason == "" && in.group != "" {
			for _, o := range e.groups[in.group] {
				if o.ownFault != "" {
					reason = fmt.Sprintf("sync group %s: %s faulted (%s)", in.group, o.name, o.ownFault)
					break
				}
			}
		}
		if in.m == nil {
			continue
		}
		switch {
		case reason != "" && !in.faulted:
			in.faulted = true
			e.apply(in, now, in.m.Handle(now, Event{Kind: EvFault, Reason: reason}))
		case reason == "" && in.faulted:
			in.faulted = false
			e.apply(in, now, in.m.Handle(now, Event{Kind: EvRecover, Reason: "tracking healthy again"}))
		}
	}
}

func (e *Engine) handleLink(u netlink.LinkUpdate) {
	a := u.Attrs()
	up := u.Header.Type != unix.RTM_DELLINK && linkUp(a)
	now := time.Now()
	changed := false
	for _, in := range e.insts {
		prev, known := in.linkUp[a.Name]
		if in.cfg.Interface == a.Name || slices.ContainsFunc(in.cfg.Track.Interfaces, func(t config.TrackRef) bool { return t.Name == a.Name }) {
			in.linkUp[a.Name] = up
			if !known || prev != up {
				changed = true
				if in.cfg.Interface == a.Name {
					e.resolve(in)
				}
				e.refreshTracking(in, now, false)
			}
		}
	}
	if changed {
		e.refreshGroups(now)
	}
}

func (e *Engine) handleScript(s ScriptResult) {
	now := time.Now()
	e.log.Debug("tracked script changed", "script", s.Name, "up", s.Up, "reason", s.Reason)
	for _, in := range e.insts {
		e.refreshTracking(in, now, false)
	}
	e.refreshGroups(now)
}

func (e *Engine) handleService(s serviceState) {
	now := time.Now()
	for _, in := range e.insts {
		in.serviceUp[s.name] = s.up
		e.refreshTracking(in, now, false)
	}
	e.refreshGroups(now)
}

// periodic retries what can fail for reasons outside the file: an
// interface that appears later, a source address, binding the addresses of
// a master.
func (e *Engine) periodic() {
	now := time.Now()
	for _, in := range e.insts {
		if in.m == nil || in.ownFault != "" {
			hadMachine := in.m != nil
			e.resolve(in)
			e.refreshTracking(in, now, false)
			if !hadMachine && in.m != nil {
				e.refreshGroups(now)
				e.apply(in, now, in.m.Handle(now, Event{Kind: EvStartup}))
			}
		}
		if in.m != nil && in.m.State() == StateMaster && !in.vipsHeld {
			e.acquire(in)
		}
	}
	e.refreshGroups(now)
}

// watchLinks streams link changes, subscribing again whenever netlink
// drops the subscription.
func (e *Engine) watchLinks(ctx context.Context) <-chan netlink.LinkUpdate {
	out := make(chan netlink.LinkUpdate, 64)
	go func() {
		for ctx.Err() == nil {
			ch := make(chan netlink.LinkUpdate, 64)
			done := make(chan struct{})
			err := netlink.LinkSubscribeWithOptions(ch, done, netlink.LinkSubscribeOptions{
				ErrorCallback: func(err error) {
					if ctx.Err() == nil {
						e.log.Warn("link watch error", "error", err)
					}
				},
			})
			if err != nil {
				close(done)
				e.log.Error("cannot watch links; interface tracking falls back to polling", "error", err)
				select {
				case <-ctx.Done():
					return
				case <-time.After(time.Second):
				}
				continue
			}
		watch:
			for {
				select {
				case <-ctx.Done():
					close(done)
					return
				case u, ok := <-ch:
					if !ok {
						break watch
					}
					select {
					case out <- u:
						e.wake()
					case <-ctx.Done():
						close(done)
						return
					}
				}
			}
			close(done)
		}
	}()
	return out
}

// publish refreshes the snapshot Stats returns, when something in it
// changed. It never waits for the lock: if a reader holds it, the next
// iteration of the loop tries again.
func (e *Engine) publish() {
	if !e.dirty {
		// Only the loop writes e.stats, so it may read it unlocked.
		for i, in := range e.insts {
			if in.m != nil && (e.stats[i].State != in.m.State() || e.stats[i].Priority != in.m.Priority() || e.stats[i].Master != in.m.Master()) {
				e.dirty = true
				break
			}
		}
	}
	if !e.dirty || !e.mu.TryLock() {
		return
	}
	defer e.mu.Unlock()
	e.dirty = false
	e.statInsts = e.insts
	for i, in := range e.insts {
		s := InstanceStats{Name: in.name, FaultReason: in.ownFault, AdvertsSent: in.sent.Load(), AdvertsRecv: in.recv.Load(),
			Transitions: in.changes, LastReason: in.lastReason, LastChangedAt: in.lastAt,
			DrillHold: in.drillHold, DrillPeerAdvertAt: in.drillPeerAt, DrillPeer: in.drillPeer}
		if in.m != nil {
			s.State, s.Priority, s.Master = in.m.State(), in.m.Priority(), in.m.Master()
		}
		e.stats[i] = s
	}
}
