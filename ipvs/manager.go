package ipvs

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/directord/directord/internal/config"
)

// Result is what one Apply, Resync or RemoveStale did.
type Result struct {
	// Applied are the operations the kernel accepted, in order.
	Applied []Op
	// Failed are the operations the kernel refused; the next Apply or
	// Resync plans them again.
	Failed []OpError
	// Skipped are operations not tried because one they need failed (the
	// destinations of a service that could not be created).
	Skipped []Op
	// Adopted are services that existed in the kernel, made outside
	// directord, with the key of a configured service: directord owns them
	// now.
	Adopted []ServiceKey
}

// Counters are a Manager's counters since it started.
type Counters struct {
	// OpsApplied counts operations the kernel accepted.
	OpsApplied uint64
	// OpErrors counts operations the kernel refused, and failed reads of
	// the table.
	OpErrors uint64
	// Repairs counts operations Resync applied because the kernel's table
	// had drifted from the last one applied.
	Repairs uint64
}

// Manager keeps the kernel's IPVS table equal to a desired table. It owns
// the services it created or adopted, and lists them in a state file so a
// later run can tell them from services made by hand: those it never
// touches. Its methods are safe for concurrent use.
type Manager struct {
	k   Kernel
	dir string
	log *slog.Logger

	mu    sync.Mutex
	owned map[ServiceKey]bool
	last  *Table
	// failed remembers the operations that failed last time, so Resync
	// reports their success as a retry and not as drift.
	failed map[opID]bool

	applied, errs, repairs atomic.Uint64
}

type opID struct {
	kind OpKind
	key  ServiceKey
	dest DestKey
}

func idOf(op Op) opID { return opID{op.Kind, op.Key, op.DestKey} }

// NewManager returns a manager of k's table. The services it owns are read
// from the state file in stateDir; nothing is changed until RemoveStale or
// Apply. An unreadable state file does not stop the director: it is kept
// as ipvs.json.corrupt and the manager starts owning nothing, so services
// of an earlier run that are no longer configured stay installed (logged),
// and configured ones are adopted.
func NewManager(k Kernel, stateDir string, log *slog.Logger) (*Manager, error) {
	if stateDir == "" {
		return nil, errors.New("ipvs: no state directory")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	keys, err := readState(stateDir)
	if err != nil {
		log.Error("cannot read IPVS state; services of an earlier run that are no longer configured may be left installed", "error", err)
		_ = os.Rename(filepath.Join(stateDir, stateFile), filepath.Join(stateDir, stateFile+".corrupt"))
	}
	m := &Manager{k: k, dir: stateDir, log: log, owned: map[ServiceKey]bool{}, failed: map[opID]bool{}}
	for _, key := range keys {
		m.owned[key.canonical()] = true
	}
	return m, nil
}

// Owned returns the services the manager owns, sorted.
func (m *Manager) Owned() []ServiceKey {
	m.mu.Lock()
	defer m.mu.Unlock()
	return sortedKeys(m.owned)
}

// Counters returns the manager's counters.
func (m *Manager) Counters() Counters {
	return Counters{OpsApplied: m.applied.Load(), OpErrors: m.errs.Load(), Repairs: m.repairs.Load()}
}

// RemoveStale deletes the services an earlier run installed (the state file
// lists them) that desired no longer has: a crashed or stopped run left
// them, and nobody else would remove them. Call it at start, before the
// first Apply. Nothing else is changed.
func (m *Manager) RemoveStale(desired Table) (Result, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	actual, err := m.k.Services()
	if err != nil {
		m.errs.Add(1)
		return Result{}, fmt.Errorf("read IPVS table: %w", err)
	}
	var ops []Op
	for _, op := range Plan(desired, actual, m.owned) {
		if op.Kind == DelService {
			ops = append(ops, op)
		}
	}
	var res Result
	errs := []error{m.own(desired, actual, nil, false, nil, &res)}
	errs = append(errs, m.run(ops, &res, func(op Op) {
		m.log.Warn("removed IPVS service left by an earlier run", "service", op.Key.String())
	}))
	return res, errors.Join(errs...)
}

// Apply makes the kernel's table equal to desired with the fewest
// operations (see Plan) and remembers desired for Resync. An operation the
// kernel refuses is reported in Result.Failed and in the error, and the
// others are still applied; the next Apply or Resync tries it again. The
// error is nil only if everything was applied and the state file saved.
//
// Only the services whose desired entry changed since the last Apply are
// read back from the kernel (all of them the first time, or while an
// earlier operation failed): a change to one real server of a thousand
// services costs one service's read and one operation. Drift elsewhere is
// Resync's job.
func (m *Manager) Apply(desired Table) (Result, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	prev := m.last
	last := cloneTable(desired)
	m.last = &last
	logOp := func(op Op) { m.log.Info("IPVS change applied", opAttrs(op)...) }
	if prev == nil || len(m.failed) > 0 {
		return m.apply(desired, nil, logOp)
	}
	return m.apply(desired, changedKeys(*prev, desired), logOp)
}

// changedKeys returns the services added, removed or changed between two
// desired tables.
func changedKeys(prev, next Table) map[ServiceKey]bool {
	byKey := func(t Table) map[ServiceKey]DesiredService {
		out := make(map[ServiceKey]DesiredService, len(t.Services))
		for _, ds := range t.Services {
			out[ds.Service.Key.canonical()] = ds
		}
		return out
	}
	p, n := byKey(prev), byKey(next)
	out := map[ServiceKey]bool{}
	for k, ds := range n {
		if old, ok := p[k]; !ok || !reflect.DeepEqual(old, ds) {
			out[k] = true
		}
	}
	for k := range p {
		if _, ok := n[k]; !ok {
			out[k] = true
		}
	}
	return out
}

// Resync applies the last desired table again, repairing whatever changed
// in the kernel since (someone ran ipvsadm -C, deleted or edited a real
// server by hand), and logs each repair. The daemon calls it periodically.
// Before the first Apply it does nothing.
func (m *Manager) Resync() (Result, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.last == nil {
		return Result{}, nil
	}
	failed := m.failed
	return m.apply(*m.last, nil, func(op Op) {
		if failed[idOf(op)] {
			m.log.Info("IPVS change applied on retry", opAttrs(op)...)
			return
		}
		m.repairs.Add(1)
		m.log.Warn("IPVS drift repaired", append(opAttrs(op), "reason", driftReason(op))...)
	})
}

// apply plans desired against the kernel and runs the plan. scope, if not
// nil, limits both to those services: the others are neither read nor
// touched.
func (m *Manager) apply(desired Table, scope map[ServiceKey]bool, logOp func(Op)) (Result, error) {
	var actual []Entry
	if scope == nil {
		var err error
		if actual, err = m.k.Services(); err != nil {
			m.errs.Add(1)
			return Result{}, fmt.Errorf("read IPVS table: %w", err)
		}
	} else {
		keys := slices.SortedFunc(maps.Keys(scope), func(a, b ServiceKey) int { return strings.Compare(a.String(), b.String()) })
		for _, key := range keys {
			e, ok, err := m.k.Service(key)
			if err != nil {
				m.errs.Add(1)
				return Result{}, fmt.Errorf("read IPVS table: %w", err)
			}
			if ok {
				actual = append(actual, e)
			}
		}
		desired.Services = slices.DeleteFunc(slices.Clone(desired.Services), func(ds DesiredService) bool {
			return !scope[ds.Service.Key.canonical()]
		})
	}
	var errs []error
	ops := Plan(desired, actual, m.owned)
	if desired.Timeouts != (config.Timeouts{}) {
		kt, err := m.k.Timeouts()
		if err != nil {
			m.errs.Add(1)
			errs = append(errs, fmt.Errorf("read IPVS timeouts: %w", err))
		} else if set, ok := PlanTimeouts(desired.Timeouts, kt); ok {
			ops = append([]Op{{Kind: SetTimeouts, Timeouts: set, OldTimeouts: kt}}, ops...)
		}
	}
	var res Result
	errs = append(errs, m.own(desired, actual, ops, true, scope, &res))
	errs = append(errs, m.run(ops, &res, logOp))
	m.failed = map[opID]bool{}
	for _, f := range res.Failed {
		m.failed[idOf(f.Op)] = true
	}
	for _, op := range res.Skipped {
		m.failed[idOf(op)] = true
	}
	return res, errors.Join(errs...)
}

// own updates the owned set before ops run and saves it: services about to
// be created, and with adopt desired services found in the kernel, are
// owned from now (listed before they exist, so a crash never leaves one
// installed and unlisted); owned services neither desired nor in the
// kernel are forgotten.
func (m *Manager) own(desired Table, actual []Entry, ops []Op, adopt bool, scope map[ServiceKey]bool, res *Result) error {
	have := map[ServiceKey]bool{}
	for _, e := range actual {
		have[e.Service.Key.canonical()] = true
	}
	want := map[ServiceKey]bool{}
	changed := false
	for _, ds := range desired.Services {
		key := ds.Service.Key.canonical()
		want[key] = true
		if adopt && have[key] && !m.owned[key] {
			m.owned[key] = true
			changed = true
			res.Adopted = append(res.Adopted, key)
			m.log.Warn("adopted IPVS service created outside directord", "service", key.String(), "name", ds.Name)
		}
	}
	for _, op := range ops {
		if op.Kind == NewService && !m.owned[op.Key] {
			m.owned[op.Key] = true
			changed = true
		}
	}
	for key := range m.owned {
		if scope != nil && !scope[key] {
			continue // not read this time: nothing is known of it
		}
		if !want[key] && !have[key] {
			delete(m.owned, key)
			changed = true
		}
	}
	if !changed {
		return nil
	}
	return m.save()
}

// run applies ops in order, going on past failures, and keeps the owned
// set in step.
func (m *Manager) run(ops []Op, res *Result, logOp func(Op)) error {
	var errs []error
	changed := false
	notCreated := map[ServiceKey]bool{}
	for _, op := range ops {
		if notCreated[op.Key] && op.Kind != NewService {
			res.Skipped = append(res.Skipped, op)
			continue
		}
		if err := m.do(op); err != nil {
			oe := OpError{Op: op, Err: err}
			res.Failed = append(res.Failed, oe)
			errs = append(errs, oe)
			m.errs.Add(1)
			m.log.Error("IPVS change failed", append(opAttrs(op), "error", err)...)
			if op.Kind == NewService {
				notCreated[op.Key] = true
				delete(m.owned, op.Key)
				changed = true
			}
			continue
		}
		res.Applied = append(res.Applied, op)
		m.applied.Add(1)
		if op.Kind == DelService {
			delete(m.owned, op.Key)
			changed = true
		}
		logOp(op)
	}
	if changed {
		errs = append(errs, m.save())
	}
	return errors.Join(errs...)
}

func (m *Manager) do(op Op) error {
	switch op.Kind {
	case NewService:
		return m.k.NewService(op.Service)
	case UpdateService:
		return m.k.UpdateService(op.Service)
	case DelService:
		return m.k.DelService(op.Key)
	case NewDest:
		return m.k.NewDestination(op.Key, op.Dest)
	case UpdateDest:
		return m.k.UpdateDestination(op.Key, op.Dest)
	case DelDest:
		return m.k.DelDestination(op.Key, op.DestKey)
	case SetTimeouts:
		return m.k.SetTimeouts(op.Timeouts)
	}
	return fmt.Errorf("unknown operation %v", op.Kind)
}

func (m *Manager) save() error {
	if err := writeState(m.dir, sortedKeys(m.owned)); err != nil {
		m.log.Error("cannot save the list of IPVS services directord owns; after a restart they may be taken for hand-made ones", "error", err)
		return err
	}
	return nil
}

func opAttrs(op Op) []any {
	a := []any{"op", op.String()}
	if op.Kind == SetTimeouts {
		return a
	}
	a = append(a, "service", op.Key.String())
	if op.Name != "" {
		a = append(a, "name", op.Name)
	}
	switch op.Kind {
	case NewDest, UpdateDest, DelDest:
		a = append(a, "real", op.DestKey.String())
	}
	return a
}

// driftReason guesses, for the operator, how the kernel's table came to
// need op although the last desired table was applied.
func driftReason(op Op) string {
	switch op.Kind {
	case NewService:
		return "missing: someone ran ipvsadm -C?"
	case UpdateService:
		return "settings changed outside directord"
	case DelService:
		return "owned but no longer configured"
	case NewDest:
		return "real server removed outside directord"
	case UpdateDest:
		return "real server changed outside directord"
	case DelDest:
		return "real server added outside directord"
	case SetTimeouts:
		return "timeouts changed outside directord"
	}
	return ""
}

func sortedKeys(set map[ServiceKey]bool) []ServiceKey {
	keys := make([]ServiceKey, 0, len(set))
	for k, ok := range set {
		if ok {
			keys = append(keys, k)
		}
	}
	slices.SortFunc(keys, compareServiceKeys)
	return keys
}

func cloneTable(t Table) Table {
	t.Services = slices.Clone(t.Services)
	for i := range t.Services {
		t.Services[i].Destinations = slices.Clone(t.Services[i].Destinations)
	}
	return t
}

// stateFile lists the services directord owns (created or adopted), so
// that a later run removes those no longer configured and leaves services
// made by hand alone. A service is listed before it is created and
// unlisted after it is deleted, so a crash in between leaves it listed,
// never installed and unlisted.
const stateFile = "ipvs.json"

// stateService is a ServiceKey as the state file spells it.
type stateService struct {
	Protocol string     `json:"protocol,omitempty"` // tcp, udp, sctp; empty for fwmark services
	Address  netip.Addr `json:"address,omitzero"`
	Port     uint16     `json:"port,omitempty"`
	FWMark   uint32     `json:"fwmark,omitempty"`
	Family   string     `json:"family"` // ipv4, ipv6
}

type stateDoc struct {
	Services []stateService `json:"services"`
}

var protocolNames = map[Protocol]string{TCP: "tcp", UDP: "udp", SCTP: "sctp"}

func readState(dir string) ([]ServiceKey, error) {
	path := filepath.Join(dir, stateFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read IPVS state: %w", err)
	}
	var doc stateDoc
	if err := json.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("read IPVS state %s: %w", path, err)
	}
	keys := make([]ServiceKey, 0, len(doc.Services))
	for i, s := range doc.Services {
		k := ServiceKey{Address: s.Address, Port: s.Port, FWMark: s.FWMark, IPv6: s.FWMark != 0 && s.Family == "ipv6"}
		if s.FWMark == 0 {
			for p, name := range protocolNames {
				if name == s.Protocol {
					k.Protocol = p
				}
			}
			if n, err := strconv.ParseUint(s.Protocol, 10, 16); err == nil {
				k.Protocol = Protocol(n)
			}
			if k.Protocol == 0 || !s.Address.IsValid() {
				return nil, fmt.Errorf("read IPVS state %s: service %d: want protocol and address, or fwmark", path, i)
			}
		}
		keys = append(keys, k.canonical())
	}
	return keys, nil
}

// writeState replaces the state file atomically (a temporary file renamed
// over it), as the VIP state is written.
func writeState(dir string, keys []ServiceKey) error {
	doc := stateDoc{Services: make([]stateService, 0, len(keys))}
	for _, k := range keys {
		k = k.canonical()
		s := stateService{FWMark: k.FWMark, Family: "ipv4"}
		if k.is6() {
			s.Family = "ipv6"
		}
		if k.FWMark == 0 {
			s.Protocol = cmp.Or(protocolNames[k.Protocol], fmt.Sprint(uint16(k.Protocol)))
			s.Address, s.Port = k.Address, k.Port
		}
		doc.Services = append(doc.Services, s)
	}
	b, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("write IPVS state: %w", err)
	}
	tmp, err := os.CreateTemp(dir, stateFile+".*")
	if err != nil {
		return fmt.Errorf("write IPVS state: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("write IPVS state: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("write IPVS state: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write IPVS state: %w", err)
	}
	if err := os.Rename(tmp.Name(), filepath.Join(dir, stateFile)); err != nil {
		return fmt.Errorf("write IPVS state: %w", err)
	}
	return nil
}
