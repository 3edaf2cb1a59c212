// Package ipvstest provides an in-memory ipvs.Kernel for tests that need a
// table without root or a kernel with IPVS: it keeps services and
// destinations like the kernel does, answers with the kernel's errors,
// records every call and fails chosen calls on demand.
package ipvstest

import (
	"cmp"
	"fmt"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/directord/directord/ipvs"
)

// Call is one call of a Kernel method that names a service or destination.
type Call struct {
	// Method is the ipvs.Kernel method: "Services", "NewService",
	// "UpdateService", "DelService", "NewDestination",
	// "UpdateDestination", "DelDestination", "Timeouts", "SetTimeouts".
	Method string
	Key    ipvs.ServiceKey
	Dest   ipvs.DestKey
}

func (c Call) String() string {
	switch c.Method {
	case "NewDestination", "UpdateDestination", "DelDestination":
		return fmt.Sprintf("%s %s %s", c.Method, c.Key, c.Dest)
	case "NewService", "UpdateService", "DelService":
		return fmt.Sprintf("%s %s", c.Method, c.Key)
	}
	return c.Method
}

// Kernel is an in-memory IPVS table. The zero value is not usable; call
// New. Its methods are safe for concurrent use.
type Kernel struct {
	mu       sync.Mutex
	svcs     map[ipvs.ServiceKey]*service
	timeouts ipvs.Timeouts
	calls    []Call
	faults   []fault
}

type service struct {
	s     ipvs.Service
	dests map[ipvs.DestKey]ipvs.Destination
}

type fault struct {
	match Call
	err   error
}

var _ ipvs.Kernel = (*Kernel)(nil)

// New returns an empty table with the kernel's default timeouts (TCP 900s,
// TCP FIN 120s, UDP 300s).
func New() *Kernel {
	return &Kernel{
		svcs:     map[ipvs.ServiceKey]*service{},
		timeouts: ipvs.Timeouts{TCP: 900 * time.Second, TCPFin: 120 * time.Second, UDP: 300 * time.Second},
	}
}

// Key returns k in the form the table keys services by and reports them
// in, as the netlink Kernel does: IPv6 false for an address service (the
// address gives the family), and only mark and family for a firewall-mark
// service.
func Key(k ipvs.ServiceKey) ipvs.ServiceKey {
	if k.FWMark != 0 {
		return ipvs.ServiceKey{FWMark: k.FWMark, IPv6: k.IPv6}
	}
	return ipvs.ServiceKey{Protocol: k.Protocol, Address: k.Address.Unmap(), Port: k.Port}
}

func is6(k ipvs.ServiceKey) bool {
	if k.FWMark != 0 {
		return k.IPv6
	}
	return k.Address.Is6()
}

// FailOnce makes the next call matching match fail with err, before it
// changes anything. Zero fields of match match anything.
func (k *Kernel) FailOnce(match Call, err error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if match.Key != (ipvs.ServiceKey{}) {
		match.Key = Key(match.Key)
	}
	k.faults = append(k.faults, fault{match, err})
}

// Add installs a service with its destinations directly, as an operator
// running ipvsadm would. It is not recorded as a call.
func (k *Kernel) Add(e ipvs.Entry) {
	k.mu.Lock()
	defer k.mu.Unlock()
	s := e.Service
	s.Key = Key(s.Key)
	svc := &service{s: s, dests: map[ipvs.DestKey]ipvs.Destination{}}
	for _, d := range e.Destinations {
		svc.dests[d.Key] = d.Destination
	}
	k.svcs[s.Key] = svc
}

// Flush empties the table, like ipvsadm -C.
func (k *Kernel) Flush() {
	k.mu.Lock()
	defer k.mu.Unlock()
	clear(k.svcs)
}

// Calls returns the calls made so far, in order.
func (k *Kernel) Calls() []Call {
	k.mu.Lock()
	defer k.mu.Unlock()
	return slices.Clone(k.calls)
}

// ResetCalls forgets the calls made so far.
func (k *Kernel) ResetCalls() {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.calls = nil
}

// Table returns the services and destinations without counters, sorted,
// with the flags as set (without the kernel's FlagHashed): for comparing
// with what a test expects.
func (k *Kernel) Table() []ipvs.Entry {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.list(false)
}

// call records c and returns the injected error for it, if any.
func (k *Kernel) call(c Call) error {
	k.calls = append(k.calls, c)
	for i, f := range k.faults {
		m := f.match
		if (m.Method == "" || m.Method == c.Method) &&
			(m.Key == (ipvs.ServiceKey{}) || m.Key == c.Key) &&
			(m.Dest == (ipvs.DestKey{}) || m.Dest == c.Dest) {
			k.faults = slices.Delete(k.faults, i, i+1)
			return f.err
		}
	}
	return nil
}

func (k *Kernel) list(hashed bool) []ipvs.Entry {
	out := make([]ipvs.Entry, 0, len(k.svcs))
	for _, svc := range k.svcs {
		e := ipvs.Entry{Service: svc.s}
		if hashed {
			e.Service.Flags |= ipvs.FlagHashed
		}
		for _, d := range svc.dests {
			e.Destinations = append(e.Destinations, ipvs.DestEntry{Destination: d})
		}
		slices.SortFunc(e.Destinations, func(a, b ipvs.DestEntry) int {
			return cmp.Or(a.Key.Address.Compare(b.Key.Address), cmp.Compare(a.Key.Port, b.Key.Port))
		})
		out = append(out, e)
	}
	slices.SortFunc(out, func(a, b ipvs.Entry) int {
		x, y := a.Service.Key, b.Service.Key
		return cmp.Or(cmp.Compare(x.FWMark, y.FWMark), cmp.Compare(x.Protocol, y.Protocol),
			x.Address.Compare(y.Address), cmp.Compare(x.Port, y.Port), boolInt(x.IPv6)-boolInt(y.IPv6))
	})
	return out
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// Services lists the table as the kernel reports it: FlagHashed set on
// every service.
func (k *Kernel) Services() ([]ipvs.Entry, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if err := k.call(Call{Method: "Services"}); err != nil {
		return nil, err
	}
	return k.list(true), nil
}

// Service reads one service as the kernel reports it.
func (k *Kernel) Service(key ipvs.ServiceKey) (ipvs.Entry, bool, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	key = Key(key)
	if err := k.call(Call{Method: "Service", Key: key}); err != nil {
		return ipvs.Entry{}, false, err
	}
	for _, e := range k.list(true) {
		if Key(e.Service.Key) == key {
			return e, true, nil
		}
	}
	return ipvs.Entry{}, false, nil
}

// NewService adds a service; EEXIST if its key is taken.
func (k *Kernel) NewService(s ipvs.Service) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	s.Key = Key(s.Key)
	if err := k.call(Call{Method: "NewService", Key: s.Key}); err != nil {
		return err
	}
	if _, ok := k.svcs[s.Key]; ok {
		return syscall.EEXIST
	}
	if err := checkService(s); err != nil {
		return err
	}
	s.Flags &^= ipvs.FlagHashed
	k.svcs[s.Key] = &service{s: s, dests: map[ipvs.DestKey]ipvs.Destination{}}
	return nil
}

// UpdateService changes a service's settings; ESRCH if it does not exist.
func (k *Kernel) UpdateService(s ipvs.Service) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	s.Key = Key(s.Key)
	if err := k.call(Call{Method: "UpdateService", Key: s.Key}); err != nil {
		return err
	}
	svc, ok := k.svcs[s.Key]
	if !ok {
		return syscall.ESRCH
	}
	if err := checkService(s); err != nil {
		return err
	}
	s.Flags &^= ipvs.FlagHashed
	svc.s = s
	return nil
}

func checkService(s ipvs.Service) error {
	if s.Scheduler == "" {
		return syscall.ENOENT // no such scheduler module
	}
	if is6(s.Key) && (s.NetmaskBits < 1 || s.NetmaskBits > 128) {
		return syscall.EINVAL
	}
	return nil
}

// DelService deletes a service with its destinations; ESRCH if it does
// not exist.
func (k *Kernel) DelService(key ipvs.ServiceKey) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	key = Key(key)
	if err := k.call(Call{Method: "DelService", Key: key}); err != nil {
		return err
	}
	if _, ok := k.svcs[key]; !ok {
		return syscall.ESRCH
	}
	delete(k.svcs, key)
	return nil
}

// NewDestination adds a destination; ESRCH without the service, EEXIST if
// it exists.
func (k *Kernel) NewDestination(key ipvs.ServiceKey, d ipvs.Destination) error {
	return k.dest("NewDestination", key, d)
}

// UpdateDestination changes a destination; ENOENT if it does not exist.
func (k *Kernel) UpdateDestination(key ipvs.ServiceKey, d ipvs.Destination) error {
	return k.dest("UpdateDestination", key, d)
}

func (k *Kernel) dest(method string, key ipvs.ServiceKey, d ipvs.Destination) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	key = Key(key)
	if err := k.call(Call{Method: method, Key: key, Dest: d.Key}); err != nil {
		return err
	}
	svc, ok := k.svcs[key]
	if !ok {
		return syscall.ESRCH
	}
	// The kernel's checks (ip_vs_genl_set_cmd, ip_vs_add_dest,
	// ip_vs_edit_dest).
	if d.Key.Address.Is6() != is6(key) && d.Forward != ipvs.Tunnel {
		return syscall.EINVAL
	}
	if d.Weight < 0 || d.LowerThreshold > d.UpperThreshold {
		return syscall.ERANGE
	}
	_, exists := svc.dests[d.Key]
	switch {
	case method == "NewDestination" && exists:
		return syscall.EEXIST
	case method == "UpdateDestination" && !exists:
		return syscall.ENOENT
	}
	svc.dests[d.Key] = d
	return nil
}

// DelDestination deletes a destination; ENOENT if it does not exist.
func (k *Kernel) DelDestination(key ipvs.ServiceKey, dk ipvs.DestKey) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	key = Key(key)
	if err := k.call(Call{Method: "DelDestination", Key: key, Dest: dk}); err != nil {
		return err
	}
	svc, ok := k.svcs[key]
	if !ok {
		return syscall.ESRCH
	}
	if _, ok := svc.dests[dk]; !ok {
		return syscall.ENOENT
	}
	delete(svc.dests, dk)
	return nil
}

// Timeouts returns the global timeouts.
func (k *Kernel) Timeouts() (ipvs.Timeouts, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if err := k.call(Call{Method: "Timeouts"}); err != nil {
		return ipvs.Timeouts{}, err
	}
	return k.timeouts, nil
}

// SetTimeouts sets the non-zero fields of t.
func (k *Kernel) SetTimeouts(t ipvs.Timeouts) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if err := k.call(Call{Method: "SetTimeouts"}); err != nil {
		return err
	}
	if t.TCP != 0 {
		k.timeouts.TCP = t.TCP
	}
	if t.TCPFin != 0 {
		k.timeouts.TCPFin = t.TCPFin
	}
	if t.UDP != 0 {
		k.timeouts.UDP = t.UDP
	}
	return nil
}

// Close does nothing.
func (k *Kernel) Close() error { return nil }
