package vip

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Address is one virtual address to hold.
type Address struct {
	// Prefix is the address and the prefix length it is bound with
	// (normally /32 or /128).
	Prefix    netip.Prefix
	Interface string
	// Label is the IPv4 address label ("eth0:vip"); empty for none.
	Label string
}

func (a Address) String() string { return a.Prefix.String() + " on " + a.Interface }

// Announce is the announcement schedule of an owner's addresses (the garp
// block of a VRRP instance).
type Announce struct {
	// Repeat announcements, Interval apart, on taking the addresses.
	Repeat   int
	Interval time.Duration
	// MasterDelay, if set, sends a second burst that long after the first,
	// for switches and hosts that missed the first one.
	MasterDelay time.Duration
	// Refresh, if set, re-announces this often while the addresses are held.
	Refresh time.Duration
}

// EventKind names what happened to an address.
type EventKind string

// Event kinds.
const (
	EventBound        EventKind = "bound"
	EventReleased     EventKind = "released"
	EventReadded      EventKind = "readded"       // removed by someone else while held, bound again
	EventConflict     EventKind = "conflict"      // another host answers for a VIP we hold
	EventReclaimed    EventKind = "reclaimed"     // another host claimed a VIP we hold and let go; announced again
	EventStaleRemoved EventKind = "stale-removed" // left bound by an earlier run, removed at start
	EventError        EventKind = "error"
)

// Event reports a change or a problem with one address.
type Event struct {
	Kind    EventKind
	Owner   string
	Address Address
	// MAC is the other host's address in a conflict or a reclaim.
	MAC net.HardwareAddr
	Err error
}

// Stats are the manager's counters since it started.
type Stats struct {
	Bound, Released, Readded, StaleRemoved, Conflicts, Reclaimed uint64
	// Announcements counts frames sent: ARP requests and replies, NAs and probes.
	Announcements uint64
	Errors        uint64
}

// Config configures a Manager.
type Config struct {
	// StateDir holds the file listing the addresses this node bound.
	StateDir string
	Log      *slog.Logger
	// OnEvent, if set, receives every event. It must not block, and must
	// not call back into the Manager.
	OnEvent func(Event)
	// GuardInterval is how often held addresses are checked even when no
	// netlink notification arrived (a lost notification, a re-subscription).
	// Default 5s.
	GuardInterval time.Duration
	// ConflictHoldoff reports one conflict, and logs one reclaim, per VIP
	// and foreign MAC at most this often. Default 10s.
	ConflictHoldoff time.Duration
	// ConflictGrace is how long a claim must outlive before it counts: in
	// a normal handback the new master's gratuitous ARP can arrive before
	// its advert has made this node release the VIP. Default 500ms.
	ConflictGrace time.Duration
	// ConflictProbeWait is how long, after a claim counted, an answer to
	// the probe asking who holds the address is waited for. An answer is
	// a conflict; none means the other host let go (a split brain that
	// healed) and the address is announced again, since hosts may still
	// send to the other host's MAC. Default 200ms.
	ConflictProbeWait time.Duration

	listen listenFunc
}

// Manager binds virtual addresses for their owners (VRRP instances),
// announces them, keeps them bound while held and reports other hosts that
// claim them. Its methods are safe for concurrent use.
type Manager struct {
	cfg Config
	log *slog.Logger
	nl  *netlink.Handle

	mu     sync.Mutex
	owners map[string]*owner
	links  map[string]*link
	// reported is when a conflict, or a reclaim, was last reported per
	// address and other MAC (ConflictHoldoff).
	reported map[reportKey]time.Time
	// probing holds the addresses whose probe is out: a claim from
	// another host meanwhile is its answer.
	probing map[probeKey]*claimProbe
	// told is when another host last claimed a held address to all
	// (broadcast or multicast), so that hosts may have learnt its MAC.
	told map[probeKey]time.Time
	// ownProbe is when Acquire probed an address before binding it: an
	// answer to that probe is followed by this node's announcements.
	ownProbe map[probeKey]time.Time
	// repairErr remembers the last repair failure per address, so a
	// persistent one is logged once, not every GuardInterval.
	repairErr map[Address]string
	// saved is what the state file holds, to skip writing it unchanged.
	saved  []stateEntry
	closed bool

	bound, released, readded, stale, conflicts, reclaimed, sent, errs atomic.Uint64

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

type owner struct {
	name   string
	addrs  []Address
	ann    Announce
	ctx    context.Context
	cancel context.CancelFunc
}

type reportKey struct {
	ip      netip.Addr
	mac     string
	reclaim bool
}

type probeKey struct {
	ip     netip.Addr
	ifname string
}

// claimProbe is a probe out for a held address: answer is the first
// other host that claimed the address since it was sent.
type claimProbe struct{ answer net.HardwareAddr }

// ownProbeAnswer is how soon after the probe sent before binding a reply
// counts as its answer. Short: a claim taken for an answer by mistake is
// not announced over, while an answer late past it only costs a reclaim.
const ownProbeAnswer = 50 * time.Millisecond

// New starts a manager. Addresses an earlier run left bound (listed in the
// state file) are removed first, so nothing is held that no owner acquired.
func New(cfg Config) (*Manager, error) {
	if cfg.StateDir == "" {
		return nil, errors.New("vip: no state directory")
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.GuardInterval <= 0 {
		cfg.GuardInterval = 5 * time.Second
	}
	if cfg.ConflictHoldoff <= 0 {
		cfg.ConflictHoldoff = 10 * time.Second
	}
	if cfg.ConflictGrace <= 0 {
		cfg.ConflictGrace = 500 * time.Millisecond
	}
	if cfg.ConflictProbeWait <= 0 {
		cfg.ConflictProbeWait = 200 * time.Millisecond
	}
	if cfg.listen == nil {
		cfg.listen = listenPacket
	}
	nl, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("vip: netlink: %w", err)
	}
	m := &Manager{
		cfg:       cfg,
		log:       cfg.Log,
		nl:        nl,
		owners:    map[string]*owner{},
		links:     map[string]*link{},
		reported:  map[reportKey]time.Time{},
		probing:   map[probeKey]*claimProbe{},
		told:      map[probeKey]time.Time{},
		ownProbe:  map[probeKey]time.Time{},
		repairErr: map[Address]string{},
	}
	if err := m.removeStale(); err != nil {
		nl.Close()
		return nil, err
	}
	m.ctx, m.cancel = context.WithCancel(context.Background())
	m.wg.Add(1)
	go m.guard()
	return m, nil
}

func (m *Manager) emit(e Event) {
	if m.cfg.OnEvent != nil {
		m.cfg.OnEvent(e)
	}
}

func (m *Manager) fail(owner string, a Address, err error) {
	m.errs.Add(1)
	m.log.Error("vip error", "instance", owner, "vip", a.Prefix, "interface", a.Interface, "error", err)
	m.emit(Event{Kind: EventError, Owner: owner, Address: a, Err: err})
}

// removeStale removes what the state file lists: addresses bound by an
// earlier run that did not release them (it crashed or was killed).
func (m *Manager) removeStale() error {
	entries, err := readState(m.cfg.StateDir)
	if err != nil {
		// Unreadable state must not stop the node; keep the file for a
		// post-mortem and start clean.
		m.log.Error("cannot read VIP state; addresses of an earlier run may be left bound", "error", err)
		_ = os.Rename(filepath.Join(m.cfg.StateDir, stateFile), filepath.Join(m.cfg.StateDir, stateFile+".corrupt"))
	}
	var keep []stateEntry
	for _, e := range entries {
		a := Address{Prefix: e.Address, Interface: e.Interface}
		present, err := m.present(a, nil)
		if err == nil && present {
			err = m.unbind(a)
			if err == nil {
				m.stale.Add(1)
				m.log.Warn("removed VIP left bound by an earlier run", "vip", a.Prefix, "interface", a.Interface)
				m.emit(Event{Kind: EventStaleRemoved, Address: a})
			}
		}
		if err != nil && !isGone(err) {
			keep = append(keep, e)
			m.fail("", a, fmt.Errorf("remove stale %s: %w", a, err))
		}
	}
	if err := writeState(m.cfg.StateDir, keep); err != nil {
		return fmt.Errorf("vip: %w", err)
	}
	return nil
}

// isGone reports errors that mean the address or its interface is already
// gone, which is what removal wanted.
func isGone(err error) bool {
	var lnf netlink.LinkNotFoundError
	return errors.As(err, &lnf) || errors.Is(err, unix.EADDRNOTAVAIL) || errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ENOENT)
}

func toNetlink(a Address) *netlink.Addr {
	bits := a.Prefix.Bits()
	ip := a.Prefix.Addr()
	na := &netlink.Addr{IPNet: &net.IPNet{IP: ip.AsSlice(), Mask: net.CIDRMask(bits, ip.BitLen())}}
	if ip.Is4() {
		na.Label = a.Label
	} else {
		// Usable at once: a VIP that waits for DAD is a VIP that drops
		// the first second of traffic after a takeover.
		na.Flags = unix.IFA_F_NODAD
	}
	return na
}

func (m *Manager) bind(a Address) error {
	l, err := m.nl.LinkByName(a.Interface)
	if err != nil {
		return fmt.Errorf("bind %s on %s: %w", a.Prefix, a.Interface, err)
	}
	if err := m.nl.AddrReplace(l, toNetlink(a)); err != nil {
		return fmt.Errorf("bind %s on %s: %w", a.Prefix, a.Interface, err)
	}
	return nil
}

func (m *Manager) unbind(a Address) error {
	l, err := m.nl.LinkByName(a.Interface)
	if err != nil {
		return fmt.Errorf("unbind %s on %s: %w", a.Prefix, a.Interface, err)
	}
	if err := m.nl.AddrDel(l, toNetlink(a)); err != nil {
		return fmt.Errorf("unbind %s on %s: %w", a.Prefix, a.Interface, err)
	}
	return nil
}

// present reports whether a is bound. cache, if not nil, keeps address
// lists per interface and family across calls of one pass.
func (m *Manager) present(a Address, cache map[string][]netlink.Addr) (bool, error) {
	fam := netlink.FAMILY_V4
	if a.Prefix.Addr().Is6() {
		fam = netlink.FAMILY_V6
	}
	key := fmt.Sprintf("%s/%d", a.Interface, fam)
	addrs, ok := cache[key]
	if !ok {
		l, err := m.nl.LinkByName(a.Interface)
		if err != nil {
			return false, err
		}
		if addrs, err = m.nl.AddrList(l, fam); err != nil {
			return false, fmt.Errorf("list addresses of %s: %w", a.Interface, err)
		}
		if cache != nil {
			cache[key] = addrs
		}
	}
	for _, x := range addrs {
		ones, _ := x.Mask.Size()
		if ip, ok := netip.AddrFromSlice(x.IP); ok && ip.Unmap() == a.Prefix.Addr() && ones == a.Prefix.Bits() {
			return true, nil
		}
	}
	return false, nil
}

// linkFor returns the announcement link of an interface, reopening it if
// the interface was replaced (new index or MAC) since it was opened. It
// returns nil for an interface without an Ethernet address (loopback, a
// tunnel): there is no neighbour cache to update, so nothing to announce.
func (m *Manager) linkFor(name string) (*link, error) {
	if l, ok := m.links[name]; ok && time.Since(l.checked) < linkRecheck {
		// Checked moments ago: a takeover must not wait for a link dump.
		return l, nil
	}
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		return nil, fmt.Errorf("interface %s: %w", name, err)
	}
	if len(ifi.HardwareAddr) != 6 || ifi.Flags&net.FlagLoopback != 0 {
		return nil, nil
	}
	if l, ok := m.links[name]; ok {
		if l.ifi.Index == ifi.Index && bytes.Equal(l.ifi.HardwareAddr, ifi.HardwareAddr) {
			l.checked = time.Now()
			return l, nil
		}
		l.close()
		delete(m.links, name)
	}
	l, err := openLink(ifi, m.cfg.listen, &m.sent, linkHooks{claim: m.onClaim, readErr: m.onReadErr})
	if err != nil {
		return nil, err
	}
	l.checked = time.Now()
	m.links[name] = l
	return l, nil
}

// linkRecheck is how long a link is used without looking the interface up
// again; a failed send drops it at once.
const linkRecheck = time.Second

// dropLink forgets a link whose send failed, so the next use reopens it
// (the interface may have been replaced).
func (m *Manager) dropLink(l *link) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.links[l.ifi.Name] == l {
		delete(m.links, l.ifi.Name)
		l.close()
	}
}

func (m *Manager) onReadErr(l *link, err error) {
	m.errs.Add(1)
	m.log.Error("VIP conflict watch stopped reading", "interface", l.ifi.Name, "error", err)
}

// stateLocked lists every address held, plus extra.
func (m *Manager) stateLocked(extra ...Address) []stateEntry {
	var es []stateEntry
	seen := map[stateEntry]bool{}
	add := func(a Address) {
		e := stateEntry{Address: a.Prefix, Interface: a.Interface}
		if !seen[e] {
			seen[e] = true
			es = append(es, e)
		}
	}
	for _, o := range m.owners {
		for _, a := range o.addrs {
			add(a)
		}
	}
	for _, a := range extra {
		add(a)
	}
	return es
}

// saveLocked writes the state file. A failure is reported but does not stop
// a takeover: serving the VIP matters more than the crash-cleanup record.
func (m *Manager) saveLocked(extra ...Address) {
	entries := sortedState(m.stateLocked(extra...))
	if m.saved != nil && slices.Equal(entries, m.saved) {
		return // unchanged: spare the takeover a write and an fsync
	}
	if err := writeState(m.cfg.StateDir, entries); err != nil {
		m.fail("", Address{}, err)
		m.saved = nil
		return
	}
	m.saved = entries
}

// Acquire makes owner hold exactly addrs, announced on schedule ann. For a
// new owner every address is bound and the full schedule runs; for an owner
// that already holds addresses (a reload) only the difference is bound or
// released, and only added addresses are announced.
//
// It is all or nothing: if one address cannot be bound, those bound by this
// call are removed again, the owner keeps what it held before, and the
// error names the address and interface that failed.
func (m *Manager) Acquire(name string, addrs []Address, ann Announce) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return errors.New("vip: manager closed")
	}
	o := m.owners[name]
	isNew := o == nil
	var old []Address
	if !isNew {
		old = o.addrs
	}
	added := diff(addrs, old)
	removed := diff(old, addrs)
	for _, a := range added {
		if other, ok := m.holderLocked(a.Prefix.Addr(), name); ok {
			return fmt.Errorf("bind %s: already held by %s", a, other)
		}
	}

	// Probe before binding: a host that still holds the address answers,
	// and its answer is checked like any claim once the address is ours
	// (a conflict if it still answers later); the answer went to this
	// node alone, or to all just before this node's own announcements.
	for _, a := range added {
		l, err := m.linkFor(a.Interface)
		if err != nil {
			return fmt.Errorf("bind %s: %w", a, err)
		}
		if l == nil {
			continue
		}
		m.ownProbe[probeKey{a.Prefix.Addr(), a.Interface}] = time.Now()
		if err := l.probe(a.Prefix.Addr()); err != nil {
			m.fail(name, a, fmt.Errorf("probe %s: %w", a, err))
		}
	}

	// Record before binding, so a crash in between leaves a listed
	// address, never an unlisted bound one.
	m.saveLocked(added...)
	var done []Address
	for _, a := range added {
		if err := m.bind(a); err != nil {
			for _, b := range done {
				if uerr := m.unbind(b); uerr != nil {
					m.fail(name, b, fmt.Errorf("roll back: %w", uerr))
				}
			}
			m.saveLocked(done...) // failed rollbacks stay listed
			return err
		}
		done = append(done, a)
	}
	var errs []error
	for _, a := range removed {
		if err := m.unbind(a); err != nil && !isGone(err) {
			errs = append(errs, err)
			continue
		}
		m.released.Add(1)
		m.emit(Event{Kind: EventReleased, Owner: name, Address: a})
	}

	if isNew {
		ctx, cancel := context.WithCancel(m.ctx)
		o = &owner{name: name, ctx: ctx, cancel: cancel}
		m.owners[name] = o
	}
	o.addrs = slices.Clone(addrs)
	o.ann = ann
	m.saveLocked()
	for _, a := range added {
		m.bound.Add(1)
		m.log.Info("VIP bound", "instance", name, "vip", a.Prefix, "interface", a.Interface)
		m.emit(Event{Kind: EventBound, Owner: name, Address: a})
	}
	// The schedule is taken as it is now: garp changes on a reload apply
	// from the next takeover.
	switch {
	case isNew:
		m.wg.Add(1)
		go m.schedule(o, ann)
	case len(added) > 0:
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			m.burst(o, ann, added)
		}()
	}
	return errors.Join(errs...)
}

// diff returns the addresses of a that are not in b.
func diff(a, b []Address) []Address {
	var out []Address
	for _, x := range a {
		if !slices.Contains(b, x) {
			out = append(out, x)
		}
	}
	return out
}

// holderLocked returns the owner, other than except, holding ip.
func (m *Manager) holderLocked(ip netip.Addr, except string) (string, bool) {
	for _, o := range m.owners {
		if o.name == except {
			continue
		}
		for _, a := range o.addrs {
			if a.Prefix.Addr() == ip {
				return o.name, true
			}
		}
	}
	return "", false
}

// Release removes the owner's addresses and stops announcing them. An
// address that cannot be removed stays in the state file, so the next start
// removes it.
func (m *Manager) Release(name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.releaseLocked(name)
}

func (m *Manager) releaseLocked(name string) error {
	o, ok := m.owners[name]
	if !ok {
		return nil
	}
	// Forget first: the guard then treats the deletions below as ours.
	delete(m.owners, name)
	o.cancel()
	var errs []error
	var failed []Address
	for _, a := range o.addrs {
		if err := m.unbind(a); err != nil && !isGone(err) {
			errs = append(errs, err)
			failed = append(failed, a)
			continue
		}
		m.released.Add(1)
		m.log.Info("VIP released", "instance", name, "vip", a.Prefix, "interface", a.Interface)
		m.emit(Event{Kind: EventReleased, Owner: name, Address: a})
	}
	m.saveLocked(failed...)
	return errors.Join(errs...)
}

// Announce sends one burst for the owner's addresses now, as a master does
// when it hears a lower-priority master (split brain healing).
func (m *Manager) Announce(name string) {
	m.mu.Lock()
	o, ok := m.owners[name]
	var ann Announce
	if ok {
		ann = o.ann
	}
	m.mu.Unlock()
	if ok {
		m.burst(o, ann, nil)
	}
}

// Held returns the addresses an owner holds.
func (m *Manager) Held(name string) []Address {
	m.mu.Lock()
	defer m.mu.Unlock()
	if o, ok := m.owners[name]; ok {
		return slices.Clone(o.addrs)
	}
	return nil
}

// Stats returns the counters.
func (m *Manager) Stats() Stats {
	return Stats{
		Bound: m.bound.Load(), Released: m.released.Load(), Readded: m.readded.Load(),
		StaleRemoved: m.stale.Load(), Conflicts: m.conflicts.Load(), Reclaimed: m.reclaimed.Load(),
		Announcements: m.sent.Load(), Errors: m.errs.Load(),
	}
}

// Close releases every address, stops every goroutine and closes the
// sockets.
func (m *Manager) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	var errs []error
	for name := range m.owners {
		errs = append(errs, m.releaseLocked(name))
	}
	m.cancel()
	m.mu.Unlock()
	m.wg.Wait()
	m.mu.Lock()
	for _, l := range m.links {
		l.close()
	}
	m.links = nil
	m.mu.Unlock()
	m.nl.Close()
	return errors.Join(errs...)
}

// schedule runs an owner's announcements: a burst, a second burst after
// MasterDelay, then a refresh every Refresh until the owner is released.
func (m *Manager) schedule(o *owner, ann Announce) {
	defer m.wg.Done()
	m.burst(o, ann, nil)
	if ann.MasterDelay > 0 {
		if !sleep(o.ctx, ann.MasterDelay) {
			return
		}
		m.burst(o, ann, nil)
	}
	if ann.Refresh <= 0 {
		return
	}
	t := time.NewTicker(ann.Refresh)
	defer t.Stop()
	for {
		select {
		case <-o.ctx.Done():
			return
		case <-t.C:
			m.announce(o, nil)
		}
	}
}

// burst announces Repeat times, Interval apart. only, if not nil, limits it
// to those addresses.
func (m *Manager) burst(o *owner, ann Announce, only []Address) {
	for i := 0; i < ann.Repeat; i++ {
		if i > 0 && !sleep(o.ctx, ann.Interval) {
			return
		}
		m.announce(o, only)
	}
}

func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// announce sends one announcement for each of the owner's addresses (those
// in only, if given) that it still holds.
func (m *Manager) announce(o *owner, only []Address) {
	m.mu.Lock()
	if o.ctx.Err() != nil {
		m.mu.Unlock()
		return
	}
	addrs := o.addrs
	if only != nil {
		addrs = slices.DeleteFunc(slices.Clone(only), func(a Address) bool { return !slices.Contains(o.addrs, a) })
	}
	type job struct {
		a Address
		l *link
	}
	var jobs []job
	for _, a := range addrs {
		l, err := m.linkFor(a.Interface)
		if err != nil {
			m.fail(o.name, a, fmt.Errorf("announce %s: %w", a, err))
			continue
		}
		if l != nil {
			jobs = append(jobs, job{a, l})
		}
	}
	m.mu.Unlock()
	for _, j := range jobs {
		if err := j.l.announce(j.a.Prefix.Addr()); err != nil {
			m.dropLink(j.l)
			m.fail(o.name, j.a, fmt.Errorf("announce %s: %w", j.a, err))
		}
	}
}

// onClaim sees every ARP packet and neighbour advertisement on the links. A
// claim for a VIP we hold, on the VIP's interface, from a MAC that is not
// the interface's, counts if we still hold the address ConflictGrace
// later; a claim while a probe for that VIP is out answers it.
func (m *Manager) onClaim(l *link, c claim) {
	if bytes.Equal(c.mac, l.ifi.HardwareAddr) {
		return
	}
	c.at = time.Now()
	pk := probeKey{c.ip, l.ifi.Name}
	m.mu.Lock()
	o, _ := m.holdingLocked(c.ip, l.ifi.Name)
	// A DAD answer goes to all nodes, but one to the probe sent before
	// binding is followed by this node's own announcements.
	answersOwn := c.reply && c.at.Sub(m.ownProbe[pk]) < ownProbeAnswer
	if o != nil && !bytes.Equal(c.to, l.ifi.HardwareAddr) && !answersOwn {
		m.told[pk] = c.at
	}
	if p, ok := m.probing[pk]; ok && o != nil && c.reply {
		if p.answer == nil {
			p.answer = c.mac
		}
		o = nil
	}
	m.mu.Unlock()
	if o == nil {
		return
	}
	time.AfterFunc(m.cfg.ConflictGrace, func() { m.confirmClaim(o, l.ifi.Name, c) })
}

// holdingLocked returns the owner holding ip on ifname, and the address.
func (m *Manager) holdingLocked(ip netip.Addr, ifname string) (*owner, Address) {
	for _, o := range m.owners {
		for _, a := range o.addrs {
			if a.Prefix.Addr() == ip && a.Interface == ifname {
				return o, a
			}
		}
	}
	return nil, Address{}
}

// confirmClaim runs ConflictGrace after another host claimed an address
// we held: if we still hold it, it asks who holds the address now (an ARP
// probe or a DAD solicitation, which claim nothing) and waits
// ConflictProbeWait for the other host's answer.
func (m *Manager) confirmClaim(was *owner, ifname string, c claim) {
	m.mu.Lock()
	o, a := m.holdingLocked(c.ip, ifname)
	pk := probeKey{c.ip, ifname}
	if o == nil || o != was || m.closed {
		// Released meanwhile: a handover, not a conflict.
		m.mu.Unlock()
		return
	}
	if _, ok := m.probing[pk]; ok {
		m.mu.Unlock()
		return // the probe out answers for this claim too
	}
	l, err := m.linkFor(ifname)
	if err != nil || l == nil {
		// No way to ask: the claim stands.
		report := m.dueLocked(reportKey{c.ip, c.mac.String(), false})
		m.mu.Unlock()
		if report {
			m.reportConflict(o.name, a, c.mac)
		}
		return
	}
	p := &claimProbe{}
	m.probing[pk] = p
	m.wg.Add(1)
	m.mu.Unlock()
	go func() {
		defer m.wg.Done()
		err := l.probe(c.ip)
		if err == nil {
			sleep(o.ctx, m.cfg.ConflictProbeWait)
		}
		m.mu.Lock()
		delete(m.probing, pk)
		now, _ := m.holdingLocked(c.ip, ifname)
		held := now == o && !m.closed && o.ctx.Err() == nil
		// A conflict names the host that answered, a reclaim the one
		// that claimed.
		mac, answered, ann := c.mac, p.answer != nil, o.ann
		if answered {
			mac = p.answer
		}
		// Only a claim made to all can have taught hosts the other MAC:
		// one made to this node alone (an answer to its probe before it
		// bound the address, from a master then stepping down) cannot.
		// A mark older than this claim belongs to an episode already
		// decided; a later one (a claim still in its grace) is kept.
		t, ok := m.told[pk]
		toAll := ok && !t.Before(c.at)
		report := held && (answered || toAll) && m.dueLocked(reportKey{c.ip, mac.String(), !answered})
		m.mu.Unlock()
		if err != nil {
			// Nobody could answer: decide as if nobody did.
			m.dropLink(l)
			m.fail(o.name, a, fmt.Errorf("probe %s: %w", a, err))
		}
		switch {
		case !held:
		case answered:
			if report {
				m.reportConflict(o.name, a, mac)
			}
		case !toAll:
			m.log.Debug("another host claimed this address to this node alone and no longer answers for it",
				"instance", o.name, "vip", a.Prefix, "interface", a.Interface, "mac", c.mac.String())
		default:
			// A DR real server without arp_announce claims the VIP in
			// its own ARP requests, again and again: announce each time,
			// log once per holdoff.
			m.reclaimed.Add(1)
			level := slog.LevelDebug
			if report {
				level = slog.LevelWarn
			}
			m.log.Log(context.Background(), level, "VIP reclaimed: another host claimed this address and no longer answers for it; announcing it again",
				"instance", o.name, "vip", a.Prefix, "interface", a.Interface, "mac", c.mac.String())
			m.emit(Event{Kind: EventReclaimed, Owner: o.name, Address: a, MAC: c.mac})
			m.burst(o, ann, []Address{a})
		}
	}()
}

// dueLocked says whether the conflict or reclaim key names is to be
// reported: once per ConflictHoldoff for each address and MAC.
func (m *Manager) dueLocked(key reportKey) bool {
	now := time.Now()
	if t, ok := m.reported[key]; ok && now.Sub(t) < m.cfg.ConflictHoldoff {
		return false
	}
	if len(m.reported) >= 256 {
		// Claims from many MACs (spoofed, say) must not grow it for ever.
		for k, t := range m.reported {
			if now.Sub(t) >= m.cfg.ConflictHoldoff {
				delete(m.reported, k)
			}
		}
	}
	m.reported[key] = now
	return true
}

func (m *Manager) reportConflict(ownerName string, a Address, mac net.HardwareAddr) {
	m.conflicts.Add(1)
	m.log.Warn("VIP conflict: another host answers for this address", "instance", ownerName, "vip", a.Prefix, "interface", a.Interface, "mac", mac.String())
	m.emit(Event{Kind: EventConflict, Owner: ownerName, Address: a, MAC: mac})
}

// guard keeps held addresses bound: a deletion notification for one of
// them, or the periodic check, rebinds what is missing. The subscription
// channel closes on any netlink receive error; the guard subscribes again
// and checks everything, since notifications may have been lost meanwhile.
func (m *Manager) guard() {
	defer m.wg.Done()
	tick := time.NewTicker(m.cfg.GuardInterval)
	defer tick.Stop()
	for m.ctx.Err() == nil {
		ch := make(chan netlink.AddrUpdate, 256)
		done := make(chan struct{})
		err := netlink.AddrSubscribeWithOptions(ch, done, netlink.AddrSubscribeOptions{
			ErrorCallback: func(err error) {
				if m.ctx.Err() == nil { // closing the watch makes it fail too
					m.log.Warn("address watch error", "error", err)
				}
			},
			ReceiveBufferSize: 1 << 20,
		})
		if err != nil {
			close(done)
			m.errs.Add(1)
			m.log.Error("cannot watch addresses; checking every interval instead", "error", err)
		}
		m.repair()
	watch:
		for {
			select {
			case <-m.ctx.Done():
				close(done)
				return
			case <-tick.C:
				m.repair()
				if err != nil {
					break watch // try to subscribe again
				}
			case u, ok := <-ch:
				if !ok {
					m.log.Warn("address watch lost; subscribing again")
					break watch
				}
				if !u.NewAddr && m.holds(u.LinkAddress.IP) {
					m.repair()
				}
			}
		}
		if err == nil {
			close(done)
		}
	}
}

func (m *Manager) holds(ip net.IP) bool {
	a, ok := netip.AddrFromSlice(ip)
	if !ok {
		return false
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	_, held := m.holderLocked(a.Unmap(), "")
	return held
}

// repair binds again every held address that is missing and re-announces
// it. Removals directord made itself are not seen here: a released address
// is no longer held.
func (m *Manager) repair() {
	m.mu.Lock()
	defer m.mu.Unlock()
	cache := map[string][]netlink.Addr{}
	for _, o := range m.owners {
		var rebound []Address
		for _, a := range o.addrs {
			present, err := m.present(a, cache)
			if err == nil && present {
				delete(m.repairErr, a)
				continue
			}
			if err == nil {
				err = m.bind(a)
			}
			if err != nil {
				if m.repairErr[a] != err.Error() {
					m.repairErr[a] = err.Error()
					m.errs.Add(1)
					m.log.Error("VIP missing and cannot be bound again", "instance", o.name, "vip", a.Prefix, "interface", a.Interface, "error", err)
					m.emit(Event{Kind: EventError, Owner: o.name, Address: a, Err: err})
				}
				continue
			}
			delete(m.repairErr, a)
			m.readded.Add(1)
			m.log.Warn("VIP was removed by someone else while held; bound it again", "instance", o.name, "vip", a.Prefix, "interface", a.Interface)
			m.emit(Event{Kind: EventReadded, Owner: o.name, Address: a})
			rebound = append(rebound, a)
		}
		if len(rebound) > 0 {
			m.wg.Add(1)
			go func(o *owner, ann Announce) {
				defer m.wg.Done()
				m.burst(o, ann, rebound)
			}(o, o.ann)
		}
	}
}
