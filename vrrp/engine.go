package vrrp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
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
	rx    chan received
	svc   chan serviceState
	rxBuf sync.Pool

	drops [maxDropReasons]atomic.Uint64
	// rxAdvert is reused for every received advert: the receive path runs
	// every interval for as long as the node does, and must not allocate.
	rxAdvert Advert
	// inflight counts datagrams a reader has taken off a socket but not
	// yet handed to the loop: drain must wait for those too.
	inflight atomic.Int32

	mu    sync.Mutex
	stats []InstanceStats

	wg sync.WaitGroup // notify hooks
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

	linkUp    map[string]bool
	scriptUp  map[string]bool
	serviceUp map[string]bool

	ownFault   string // why tracking faults this instance; "" = healthy
	faulted    bool   // what the machine was last told
	vipsHeld   bool
	peers      []netip.Addr
	sent, recv atomic.Uint64
	changes    uint64
	lastReason string
	lastAt     time.Time
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
		rx:       make(chan received, 256),
		svc:      make(chan serviceState, 64),
	}
	e.rxBuf.New = func() any { b := make([]byte, 4096); return &b }

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
		in := &instance{
			cfg:       c,
			name:      c.Name,
			v6:        c.IPv6(),
			group:     groupOf[c.Name],
			mode:      ChecksumRFC,
			peers:     c.UnicastPeers,
			linkUp:    map[string]bool{},
			scriptUp:  map[string]bool{},
			serviceUp: map[string]bool{},
			garp:      vip.Announce{Repeat: c.GARP.Repeat, Interval: c.GARP.Interval, MasterDelay: c.GARP.MasterDelay, Refresh: c.GARP.Refresh},
			sendBuf:   make([]byte, 0, 4096),
		}
		if c.ChecksumCompat == "v2" {
			in.mode = ChecksumV2
		}
		var addrs []netip.Addr
		for _, va := range c.VirtualAddresses {
			ifname := va.Interface
			if ifname == "" {
				ifname = c.Interface
			}
			in.vips = append(in.vips, vip.Address{Prefix: va.Address, Interface: ifname, Label: va.Label})
			addrs = append(addrs, va.Address.Addr())
			e.vipAddrs[va.Address.Addr()] = true
		}
		in.advert = Advert{Version: c.Version, VRID: uint8(c.VRID), Interval: c.AdvertInterval, Addresses: addrs}
		in.expect = Expect{Version: c.Version, Interval: c.AdvertInterval, Addresses: addrs}
		if a := c.Authentication; a != nil && c.Version == 2 {
			in.advert.AuthType, in.advert.AuthData = 1, PassAuth(a.Password)
			in.expect.AuthType, in.expect.AuthData = in.advert.AuthType, in.advert.AuthData
		}
		e.insts = append(e.insts, in)
		if in.group != "" {
			e.groups[in.group] = append(e.groups[in.group], in)
		}
	}
	e.stats = make([]InstanceStats, len(e.insts))
	return e, nil
}

// SetService reports the health of a tracked virtual service (from the
// IPVS quorum). Safe from any goroutine.
func (e *Engine) SetService(name string, up bool) {
	e.svc <- serviceState{name, up}
}

// Stats returns a snapshot of every instance.
func (e *Engine) Stats() []InstanceStats {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.stats)
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
func (e *Engine) Run(ctx context.Context) error {
	if len(e.insts) == 0 {
		<-ctx.Done()
		return nil
	}
	for _, in := range e.insts {
		fam := 0
		if in.v6 {
			fam = 1
		}
		if e.trans[fam] == nil {
			t, err := listenTransport(in.v6)
			if err != nil {
				return err
			}
			e.trans[fam] = t
			go e.read(t)
		}
	}
	defer func() {
		for _, t := range e.trans {
			if t != nil {
				t.close()
			}
		}
	}()

	loopCtx, stopLoop := context.WithCancel(context.Background())
	defer stopLoop()
	links := e.watchLinks(loopCtx)
	scripts := e.scripts.Start(loopCtx)

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
	e.publish()

	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		e.arm(timer)
		select {
		case <-ctx.Done():
			e.shutdown()
			stopLoop()
			if scripts != nil {
				for range scripts { // wait for running scripts to finish
				}
			}
			e.waitHooks(5 * time.Second)
			return nil
		case r := <-e.rx:
			e.handle(r)
		case <-timer.C:
			e.timeouts()
		case u := <-links:
			e.handleLink(u)
		case s, ok := <-scripts:
			if !ok {
				// Closed (no scripts configured): a nil channel is never
				// ready, so the loop does not spin on it.
				scripts = nil
				continue
			}
			e.handleScript(s)
		case s := <-e.svc:
			e.handleService(s)
		case <-tick.C:
			e.periodic()
		}
		e.publish()
	}
}

func (e *Engine) read(t *transport) {
	for {
		bp := e.rxBuf.Get().(*[]byte)
		r, err := t.read(*bp)
		r.buf = bp
		if err == nil {
			e.inflight.Add(1)
		}
		if err != nil {
			e.rxBuf.Put(bp)
			if errors.Is(err, net.ErrClosed) {
				return
			}
			e.log.Error("VRRP socket read failed", "error", err)
			time.Sleep(100 * time.Millisecond)
			continue
		}
		e.rx <- r
		e.inflight.Add(-1)
	}
}

// arm sets the timer to the earliest deadline of all machines.
func (e *Engine) arm(t *time.Timer) {
	var next time.Time
	for _, in := range e.insts {
		if in.m == nil {
			continue
		}
		if d := in.m.Deadline(); !d.IsZero() && (next.IsZero() || d.Before(next)) {
			next = d
		}
	}
	d := time.Hour
	if !next.IsZero() {
		d = max(time.Until(next), 0)
	}
	if !t.Stop() {
		select {
		case <-t.C:
		default:
		}
	}
	t.Reset(d)
}

// timeouts fires the machines whose deadline passed. A backup's master-down
// timer is only acted on after every advert that arrived meanwhile has been
// processed: after a stall the timer and the queued adverts become ready
// together, and the adverts must win.
func (e *Engine) timeouts() {
	e.drain()
	now := time.Now()
	for _, in := range e.insts {
		if in.m == nil {
			continue
		}
		if d := in.m.Deadline(); !d.IsZero() && !now.Before(d) {
			e.apply(in, now, in.m.Handle(now, Event{Kind: EvTimeout}))
		}
	}
}

// drainPatience bounds how long an expired timer waits for adverts that
// are known to be on their way (queued in a socket, or read and not yet
// handed over): long enough for a reader starved on a loaded machine, short
// next to Master_Down_Interval.
const drainPatience = 100 * time.Millisecond

// drain processes every received advert, including those still queued in
// the kernel or held by a reader that has not handed them over yet.
func (e *Engine) drain() {
	deadline := time.Now().Add(drainPatience)
	for {
		select {
		case r := <-e.rx:
			e.handle(r)
			continue
		default:
		}
		waiting := e.inflight.Load() > 0
		for _, t := range e.trans {
			if t != nil && t.pending() {
				waiting = true
			}
		}
		if !waiting || time.Now().After(deadline) {
			return
		}
		select {
		case r := <-e.rx:
			e.handle(r)
		case <-time.After(time.Millisecond):
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
	defer e.rxBuf.Put(r.buf)
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
	if reason := ParseInto(a, r.data, r.src, r.dst, in.mode); reason != DropNone {
		e.drop(reason, &r)
		return
	}
	if reason := a.Check(r.ttl, in.expect); reason != DropNone {
		e.drop(reason, &r)
		return
	}
	in.recv.Add(1)
	e.apply(in, r.at, in.m.Handle(r.at, Event{Kind: EvAdvert, Priority: a.Priority, Interval: a.Interval, Src: r.src}))
}

// apply carries out a machine's actions: the advert first, so that on a
// takeover the peers hear the new master before the addresses move, and on
// a shutdown the priority-0 advert leaves before the addresses go.
func (e *Engine) apply(in *instance, now time.Time, a Actions) {
	if a.Send {
		e.send(in, a.SendPriority)
	}
	if a.Transition {
		e.transition(in, now, a)
	}
	if a.Announce && e.opts.VIPs != nil {
		e.opts.VIPs.Announce(in.name)
	}
}

func (e *Engine) send(in *instance, prio uint8) {
	if in.ifi == nil || !in.src.IsValid() {
		return
	}
	t := e.trans[0]
	dsts := []netip.Addr{groupV4}
	if in.v6 {
		t, dsts = e.trans[1], []netip.Addr{groupV6}
	}
	if len(in.peers) > 0 {
		dsts = in.peers
	}
	in.advert.Priority = prio
	for _, dst := range dsts {
		b, err := in.advert.AppendMarshal(in.sendBuf[:0], in.src, dst, in.mode)
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

// publish refreshes the snapshot Stats returns.
func (e *Engine) publish() {
	e.mu.Lock()
	defer e.mu.Unlock()
	for i, in := range e.insts {
		s := InstanceStats{Name: in.name, FaultReason: in.ownFault, AdvertsSent: in.sent.Load(), AdvertsRecv: in.recv.Load(),
			Transitions: in.changes, LastReason: in.lastReason, LastChangedAt: in.lastAt}
		if in.m != nil {
			s.State, s.Priority, s.Master = in.m.State(), in.m.Priority(), in.m.Master()
		}
		e.stats[i] = s
	}
}
