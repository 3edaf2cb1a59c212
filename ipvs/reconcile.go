package ipvs

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/directord/directord/internal/config"
)

// OpKind is what one operation does to the kernel's table.
type OpKind int

// Operation kinds. SetTimeouts is never planned by Plan: the Manager adds
// it from PlanTimeouts.
const (
	NewService OpKind = iota + 1
	UpdateService
	DelService
	NewDest
	UpdateDest
	DelDest
	SetTimeouts
)

func (k OpKind) String() string {
	switch k {
	case NewService:
		return "NewService"
	case UpdateService:
		return "UpdateService"
	case DelService:
		return "DelService"
	case NewDest:
		return "NewDest"
	case UpdateDest:
		return "UpdateDest"
	case DelDest:
		return "DelDest"
	case SetTimeouts:
		return "SetTimeouts"
	}
	return fmt.Sprintf("OpKind(%d)", int(k))
}

// Op is one change to the kernel's table.
type Op struct {
	Kind OpKind
	// Name is the service's name in the configuration; empty for a service
	// that is not configured (one being deleted).
	Name string
	// Key is the service the operation applies to.
	Key ServiceKey
	// Service holds the settings to set (NewService, UpdateService) or, for
	// DelService, the settings the kernel had.
	Service Service
	// OldService is what the kernel had before an UpdateService.
	OldService Service
	// Dest holds the destination to set (NewDest, UpdateDest) or, for
	// DelDest, the destination the kernel had.
	Dest Destination
	// OldDest is what the kernel had before an UpdateDest.
	OldDest Destination
	// DestKey is the destination of NewDest, UpdateDest and DelDest.
	DestKey DestKey
	// Timeouts are the values SetTimeouts sets (zero: left alone), and
	// OldTimeouts the kernel's before.
	Timeouts, OldTimeouts Timeouts
}

func (o Op) String() string {
	switch o.Kind {
	case NewService:
		return fmt.Sprintf("add service %s (%s)", o.Key, describeService(o.Service))
	case UpdateService:
		return fmt.Sprintf("edit service %s: %s", o.Key, strings.Join(serviceChanges(o.OldService, o.Service), ", "))
	case DelService:
		return fmt.Sprintf("delete service %s", o.Key)
	case NewDest:
		return fmt.Sprintf("add destination %s to %s (%s)", o.DestKey, o.Key, describeDest(o.Dest))
	case UpdateDest:
		return fmt.Sprintf("edit destination %s of %s: %s", o.DestKey, o.Key, strings.Join(destChanges(o.OldDest, o.Dest), ", "))
	case DelDest:
		return fmt.Sprintf("delete destination %s from %s", o.DestKey, o.Key)
	case SetTimeouts:
		return "set timeouts: " + strings.Join(timeoutChanges(o.OldTimeouts, o.Timeouts), ", ")
	}
	return o.Kind.String()
}

// OpError is an operation the kernel refused.
type OpError struct {
	Op  Op
	Err error
}

func (e OpError) Error() string { return e.Op.String() + ": " + e.Err.Error() }

// Unwrap returns the kernel's error.
func (e OpError) Unwrap() error { return e.Err }

// Plan returns the fewest operations that turn the actual table into the
// desired one, in a deterministic order:
//
//   - a desired service that is missing is added with its destinations;
//   - a desired service whose settings differ is edited in place, never
//     deleted and added again, so its connections survive;
//   - destinations are compared one by one and added, edited or deleted;
//     a change of forwarding method is an edit (the kernel rehashes the
//     destination in place, see __ip_vs_update_dest);
//   - within a service, additions come before edits and edits before
//     deletions, so a service swapping its real servers for its sorry
//     server (or back) never has zero destinations;
//   - a service that is not desired is deleted only if owned lists it
//     (directord installed it); others, made by hand, are left alone. A
//     desired service that exists but is not owned is adopted: its
//     settings and destinations are reconciled like any other;
//   - services are deleted last.
//
// Nothing is ever flushed. A table equal to the desired one gives no
// operations.
func Plan(desired Table, actual []Entry, owned map[ServiceKey]bool) []Op {
	have := make(map[ServiceKey]*Entry, len(actual))
	for i := range actual {
		have[actual[i].Service.Key.canonical()] = &actual[i]
	}
	own := make(map[ServiceKey]bool, len(owned))
	for k, ok := range owned {
		if ok {
			own[k.canonical()] = true
		}
	}
	want := make(map[ServiceKey]bool, len(desired.Services))
	var ops []Op
	for _, ds := range desired.Services {
		svc := normalService(ds.Service)
		key := svc.Key
		if want[key] {
			continue // validation rejects two services with one key
		}
		want[key] = true
		e, ok := have[key]
		if !ok {
			ops = append(ops, Op{Kind: NewService, Name: ds.Name, Key: key, Service: svc})
			for _, d := range ds.Destinations {
				d = normalDest(d)
				ops = append(ops, Op{Kind: NewDest, Name: ds.Name, Key: key, Dest: d, DestKey: d.Key})
			}
			continue
		}
		if old := normalService(e.Service); !sameService(old, svc) {
			ops = append(ops, Op{Kind: UpdateService, Name: ds.Name, Key: key, Service: svc, OldService: old})
		}
		ops = append(ops, planDests(ds.Name, key, ds.Destinations, e.Destinations)...)
	}

	var gone []Op
	for key, e := range have {
		if !want[key] && own[key] {
			gone = append(gone, Op{Kind: DelService, Key: key, Service: normalService(e.Service)})
		}
	}
	slices.SortFunc(gone, func(a, b Op) int { return compareServiceKeys(a.Key, b.Key) })
	return append(ops, gone...)
}

func planDests(name string, key ServiceKey, desired []Destination, actual []DestEntry) []Op {
	have := make(map[DestKey]Destination, len(actual))
	for _, d := range actual {
		d := normalDest(d.Destination)
		have[d.Key] = d
	}
	want := make(map[DestKey]bool, len(desired))
	var adds, edits, dels []Op
	for _, d := range desired {
		d = normalDest(d)
		if want[d.Key] {
			continue
		}
		want[d.Key] = true
		old, ok := have[d.Key]
		switch {
		case !ok:
			adds = append(adds, Op{Kind: NewDest, Name: name, Key: key, Dest: d, DestKey: d.Key})
		case old != d:
			edits = append(edits, Op{Kind: UpdateDest, Name: name, Key: key, Dest: d, OldDest: old, DestKey: d.Key})
		}
	}
	for k, d := range have {
		if !want[k] {
			dels = append(dels, Op{Kind: DelDest, Name: name, Key: key, Dest: d, DestKey: k})
		}
	}
	slices.SortFunc(dels, func(a, b Op) int { return compareDestKeys(a.DestKey, b.DestKey) })
	return slices.Concat(adds, edits, dels)
}

// PlanTimeouts returns the timeouts to set so the kernel's match desired,
// and whether anything needs setting. A zero desired field leaves the
// kernel's value alone, and so does a zero field in the result.
func PlanTimeouts(desired config.Timeouts, actual Timeouts) (Timeouts, bool) {
	var set Timeouts
	if desired.TCP != 0 && desired.TCP != actual.TCP {
		set.TCP = desired.TCP
	}
	if desired.TCPFin != 0 && desired.TCPFin != actual.TCPFin {
		set.TCPFin = desired.TCPFin
	}
	if desired.UDP != 0 && desired.UDP != actual.UDP {
		set.UDP = desired.UDP
	}
	return set, set != Timeouts{}
}

// canonical returns the key in the one form keys are compared in, the form
// the kernel lists them in: IPv6 false for an address service (its address
// gives the family), and only mark and family for a firewall-mark service
// (its protocol means nothing: the kernel stores TCP whatever was sent, see
// ip_vs_genl_parse_service).
func (k ServiceKey) canonical() ServiceKey {
	if k.FWMark != 0 {
		return ServiceKey{FWMark: k.FWMark, IPv6: k.IPv6}
	}
	return ServiceKey{Protocol: k.Protocol, Address: k.Address.Unmap(), Port: k.Port}
}

// is6 reports whether the service is an IPv6 one.
func (k ServiceKey) is6() bool {
	if k.FWMark != 0 {
		return k.IPv6
	}
	return k.Address.Unmap().Is6()
}

// normalService returns s in the form services are compared in: the
// kernel's own flag dropped, a missing netmask read as the full length,
// and timeout and netmask ignored unless the service is persistent (they
// mean nothing then, and hand-made services carry whatever ipvsadm sent).
func normalService(s Service) Service {
	s.Key = s.Key.canonical()
	s.Flags &^= FlagHashed
	full := fullBits(s.Key.is6())
	if s.NetmaskBits == 0 || s.Flags&FlagPersistent == 0 {
		s.NetmaskBits = full
	}
	if s.Flags&FlagPersistent == 0 {
		s.Timeout = 0
	}
	return s
}

func sameService(a, b Service) bool { return a == b }

// normalDest returns d in the form destinations are compared in: the
// tunnel type matters only for tunnel forwarding.
func normalDest(d Destination) Destination {
	d.Key.Address = d.Key.Address.Unmap()
	if d.Forward != Tunnel {
		d.TunnelType = TunnelIPIP
	}
	return d
}

func compareServiceKeys(a, b ServiceKey) int {
	// Address services first, then firewall marks.
	if c := cmp.Compare(a.FWMark, b.FWMark); c != 0 {
		return c
	}
	return cmp.Or(
		boolCompare(a.IPv6, b.IPv6),
		cmp.Compare(a.Protocol, b.Protocol),
		a.Address.Compare(b.Address),
		cmp.Compare(a.Port, b.Port),
	)
}

func compareDestKeys(a, b DestKey) int {
	return cmp.Or(a.Address.Compare(b.Address), cmp.Compare(a.Port, b.Port))
}

func boolCompare(a, b bool) int {
	switch {
	case a == b:
		return 0
	case !a:
		return -1
	}
	return 1
}

func describeService(s Service) string {
	parts := []string{s.Scheduler}
	if s.Flags&FlagPersistent != 0 {
		parts = append(parts, "persistent "+seconds(s.Timeout))
		if s.NetmaskBits != 0 && s.NetmaskBits != fullBits(s.Key.is6()) {
			parts = append(parts, fmt.Sprintf("netmask /%d", s.NetmaskBits))
		}
	}
	if f := flagWords(s); f != "" {
		parts = append(parts, f)
	}
	return strings.Join(parts, ", ")
}

// flagWords names the flags other than persistence, as ipvsadm spells
// them.
func flagWords(s Service) string {
	var w []string
	if s.Flags&FlagOnePacket != 0 {
		w = append(w, "one-packet")
	}
	sched := "sh"
	if s.Scheduler == "mh" {
		sched = "mh"
	}
	if s.Flags&FlagSchedSH1 != 0 {
		w = append(w, sched+"-fallback")
	}
	if s.Flags&FlagSchedSH2 != 0 {
		w = append(w, sched+"-port")
	}
	return strings.Join(w, ",")
}

func serviceChanges(old, s Service) []string {
	var ch []string
	if old.Scheduler != s.Scheduler {
		ch = append(ch, fmt.Sprintf("scheduler %s -> %s", old.Scheduler, s.Scheduler))
	}
	if old.Flags&FlagPersistent != s.Flags&FlagPersistent || old.Timeout != s.Timeout {
		ch = append(ch, fmt.Sprintf("persistence %s -> %s", persistence(old), persistence(s)))
	}
	if old.NetmaskBits != s.NetmaskBits {
		ch = append(ch, fmt.Sprintf("netmask /%d -> /%d", old.NetmaskBits, s.NetmaskBits))
	}
	if a, b := flagWords(old), flagWords(s); a != b {
		ch = append(ch, fmt.Sprintf("flags %s -> %s", orNone(a), orNone(b)))
	}
	if len(ch) == 0 {
		ch = append(ch, "no change")
	}
	return ch
}

func persistence(s Service) string {
	if s.Flags&FlagPersistent == 0 {
		return "off"
	}
	return seconds(s.Timeout)
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

func describeDest(d Destination) string {
	s := fmt.Sprintf("%s, weight %d", forwardName(d), d.Weight)
	if d.UpperThreshold != 0 {
		s += fmt.Sprintf(", upper_threshold %d", d.UpperThreshold)
	}
	if d.LowerThreshold != 0 {
		s += fmt.Sprintf(", lower_threshold %d", d.LowerThreshold)
	}
	return s
}

// forwardName is the forwarding method as ipvsadm -L shows it, with the
// tunnel type when it is not the default ipip.
func forwardName(d Destination) string {
	if d.Forward == Tunnel && d.TunnelType != TunnelIPIP {
		return d.Forward.String() + "/" + tunnelName(d.TunnelType)
	}
	return d.Forward.String()
}

func tunnelName(t TunnelType) string {
	switch t {
	case TunnelIPIP:
		return "ipip"
	case TunnelGUE:
		return "gue"
	case TunnelGRE:
		return "gre"
	}
	return fmt.Sprintf("tunnel-%d", uint8(t))
}

func destChanges(old, d Destination) []string {
	var ch []string
	if forwardName(old) != forwardName(d) {
		ch = append(ch, fmt.Sprintf("forwarding %s -> %s", forwardName(old), forwardName(d)))
	}
	if old.Weight != d.Weight {
		ch = append(ch, fmt.Sprintf("weight %d -> %d", old.Weight, d.Weight))
	}
	if old.UpperThreshold != d.UpperThreshold {
		ch = append(ch, fmt.Sprintf("upper_threshold %d -> %d", old.UpperThreshold, d.UpperThreshold))
	}
	if old.LowerThreshold != d.LowerThreshold {
		ch = append(ch, fmt.Sprintf("lower_threshold %d -> %d", old.LowerThreshold, d.LowerThreshold))
	}
	if len(ch) == 0 {
		ch = append(ch, "no change")
	}
	return ch
}

func timeoutChanges(old, set Timeouts) []string {
	var ch []string
	for _, f := range []struct {
		name     string
		old, set time.Duration
	}{{"tcp", old.TCP, set.TCP}, {"tcp_fin", old.TCPFin, set.TCPFin}, {"udp", old.UDP, set.UDP}} {
		if f.set != 0 {
			ch = append(ch, fmt.Sprintf("%s %s -> %s", f.name, seconds(f.old), seconds(f.set)))
		}
	}
	if len(ch) == 0 {
		ch = append(ch, "no change")
	}
	return ch
}

// seconds formats d the way ipvsadm takes it ("300s"); the kernel counts in
// whole seconds.
func seconds(d time.Duration) string {
	if d%time.Second != 0 {
		return d.String()
	}
	return fmt.Sprintf("%ds", int64(d/time.Second))
}
