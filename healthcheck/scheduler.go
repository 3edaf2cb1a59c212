package healthcheck

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"reflect"
	"sync"
	"time"
)

// Defaults applied by the Scheduler to zero fields of Spec.Check, the same
// as the configuration's, so a Spec built by hand behaves like one read from
// a file. The Spec itself is kept as given for the reload comparison.
const (
	defaultInterval = 2 * time.Second
	defaultTimeout  = time.Second
	defaultRise     = 2
	defaultFall     = 3
	// maxFirstDelay caps the random delay before a check's first probe:
	// long enough to spread 10,000 checks apart, short enough that a
	// 30s-interval check still decides soon after startup or reload.
	maxFirstDelay = time.Second
	// minTransitionBuffer is the least room in the transition channel, so
	// that checks added by Update after Start also find room.
	minTransitionBuffer = 1024
)

// Scheduler runs health checks and turns their results into up/down
// transitions with rise/fall hysteresis, the rules of vrrp.Scripts:
//
// A check starts unknown: Status reports it as not known, and nothing is
// sent. The first Rise consecutive successes make it up, or the first Fall
// consecutive failures make it down, whichever streak completes first;
// after that it goes down after Fall consecutive failures and up again after
// Rise consecutive successes. Only changes are sent. While a check is up, a
// successful result with a dynamic weight (WeightSet) different from the
// last one sent is also sent, as a Transition with Up true and the new
// Weight; a successful result without a weight keeps the weight in force
// (keepalived's exit 0 for dynamic_weight), so it sends nothing.
//
// Each check has one timer and no goroutine while idle; a probe runs on a
// goroutine of its own and re-arms the timer when done, so a check never
// overlaps itself. Its first probe comes after a random delay below
// min(interval, 1s), which spreads checks that share an interval; later
// probes are on a fixed grid from the first (first + k*interval), and a
// grid point that passes while the previous probe is still going is skipped
// rather than queued. Each probe is bounded by timeout: a checker that
// bounds itself (timedChecker: tcp) is given it, any other gets
// context.WithTimeout(timeout).
//
// The Scheduler is safe for concurrent use.
type Scheduler struct {
	newChecker func(Spec) (Checker, error)
	log        *slog.Logger
	// firstDelay is a field so tests can replace it.
	firstDelay func(interval time.Duration) time.Duration

	mu      sync.Mutex // held for all of Update, never by probes
	checks  map[string]*check
	ctx     context.Context // Start's; nil before Start
	out     chan Transition
	stopped bool           // ctx is done: launch nothing more, wg is being waited on
	wg      sync.WaitGroup // one per launched check until it has halted
}

// check is one Spec with its checker, its timer and the state Status
// reads.
type check struct {
	spec     Spec // as given to Update (slices cloned), for the comparison
	checker  Checker
	interval time.Duration
	timeout  time.Duration
	rise     int
	fall     int

	ctx    context.Context    // the probes'; nil until launched
	cancel context.CancelFunc // nil until launched
	done   chan struct{}      // closed once halted and no probe runs
	out    chan<- Transition
	wg     *sync.WaitGroup // the Scheduler's

	// Only the probe in progress touches these; the timer is re-armed
	// after it, so probes are serialised.
	h         Hysteresis
	first     time.Time // the grid's origin
	weight    int       // the dynamic weight last sent while up
	weightSet bool
	log       *slog.Logger

	mu      sync.Mutex
	timer   *time.Timer
	running bool // a probe is in progress
	halted  bool
	health  Health
	last    Result
}

// NewScheduler returns a Scheduler with no checks. newChecker builds the
// checker for a Spec (NewChecker in the daemon, fakes in tests); it is
// called by Update for new and changed specs only. A nil log discards.
func NewScheduler(newChecker func(Spec) (Checker, error), log *slog.Logger) *Scheduler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Scheduler{
		newChecker: newChecker,
		log:        log,
		firstDelay: randomFirstDelay,
		checks:     make(map[string]*check),
	}
}

// Update sets the checks to run, by Spec.ID. IDs not running yet start
// (their first probe after the random first delay) and removed IDs stop:
// their in-flight probe is cancelled and Update returns only after their
// probes have. An ID whose Spec is unchanged (reflect.DeepEqual, with
// nil and empty slices equal) keeps running with its checker, its grid and
// its health; a changed one is stopped and restarts from unknown with a new
// checker.
//
// If a checker cannot be built, or two specs share an ID, Update changes
// nothing and returns an error naming every such ID: a reload is applied
// whole or not at all. Update may be called before Start (the checks start
// with it) and after ctx is done (the checks are recorded, nothing runs).
//
// Transitions already in the channel when Update returns may be of IDs it
// removed or restarted; Status tells the state in force.
func (s *Scheduler) Update(specs []Spec) error {
	s.mu.Lock()
	defer s.mu.Unlock()

	want := make(map[string]Spec, len(specs))
	built := make(map[string]Checker)
	var errs []error
	for _, sp := range specs {
		if _, dup := want[sp.ID]; dup {
			errs = append(errs, fmt.Errorf("check %q: duplicate id", sp.ID))
			continue
		}
		sp = cloneSpec(sp)
		want[sp.ID] = sp
		if old, ok := s.checks[sp.ID]; ok && reflect.DeepEqual(old.spec, sp) {
			continue
		}
		c, err := s.newChecker(sp)
		if err == nil && c == nil {
			err = errors.New("no checker")
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("build checker for %q: %w", sp.ID, err))
			continue
		}
		built[sp.ID] = c
	}
	if len(errs) > 0 {
		return fmt.Errorf("update health checks: %w", errors.Join(errs...))
	}

	var stopping []*check
	var removed, restarted int
	for id, c := range s.checks {
		if _, ok := want[id]; !ok {
			removed++
		} else if _, ok := built[id]; ok {
			restarted++
		} else {
			continue
		}
		stopping = append(stopping, c)
		delete(s.checks, id)
		s.halt(c)
	}
	// Wait before starting replacements, so an old probe cannot send
	// after its successor has. Probes never take s.mu, and their sends
	// give up on cancellation, so this ends as soon as the cancelled
	// probes return (a Checker must honour its ctx).
	for _, c := range stopping {
		if c.done != nil {
			<-c.done
		}
	}
	for id, ch := range built {
		c := newCheck(want[id], ch)
		s.checks[id] = c
		s.launch(c)
	}
	s.log.Info("health checks updated", "checks", len(s.checks),
		"started", len(built)-restarted, "restarted", restarted, "removed", removed)
	return nil
}

// Start runs every check until ctx is done and returns the channel of
// transitions. A probe in progress when ctx is done is cancelled and not
// counted. The channel is closed once every probe has returned,
// so draining it to the end waits for all probes to finish. Call Start
// once.
//
// The channel has room for one transition per check at Start (at least
// 1024). Nothing is dropped: a reader that falls further behind holds up
// each check whose transition waits to be sent, which skips that check's
// grid points (no probes, no queueing) until the reader takes it; the
// other checks go on. Stopping a check (Update, ctx) is never held up by
// the reader.
func (s *Scheduler) Start(ctx context.Context) <-chan Transition {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.out != nil {
		panic("healthcheck: Scheduler.Start called twice")
	}
	s.ctx = ctx
	s.out = make(chan Transition, max(minTransitionBuffer, len(s.checks)))
	for _, c := range s.checks {
		s.launch(c)
	}
	go func() {
		<-ctx.Done()
		s.mu.Lock()
		s.stopped = true // no wg.Add after this, so Wait is safe
		for _, c := range s.checks {
			s.halt(c)
		}
		s.mu.Unlock()
		s.wg.Wait()
		close(s.out)
	}()
	return s.out
}

// Status reports the health of the check with this ID and its last probe's
// result. known is false for a check still unknown (no rise or fall streak
// completed since it started) and for an ID that is not a check.
func (s *Scheduler) Status(id string) (up, known bool, last Result) {
	s.mu.Lock()
	c, ok := s.checks[id]
	s.mu.Unlock()
	if !ok {
		return false, false, Result{}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.health == HealthUp, c.health != HealthUnknown, c.last
}

// launch arms c's timer if the Scheduler runs. s.mu must be held.
//
// A check has no goroutine of its own: its timer starts a probe in a
// goroutine of the timer's (time.AfterFunc), and the probe re-arms the
// timer when it is done. An idle check costs its timer, so 10,000 checks
// cost 10,000 timers, not 10,000 stacks.
func (s *Scheduler) launch(c *check) {
	if s.ctx == nil || s.stopped {
		return
	}
	c.ctx, c.cancel = context.WithCancel(s.ctx)
	c.done, c.out, c.wg = make(chan struct{}), s.out, &s.wg
	c.h = Hysteresis{Rise: c.rise, Fall: c.fall}
	c.log = s.log.With("check", c.spec.ID)
	s.wg.Add(1)
	delay := s.firstDelay(c.interval)
	c.first = time.Now().Add(delay)
	c.mu.Lock()
	c.timer = time.AfterFunc(delay, func() { s.probe(c) })
	c.mu.Unlock()
}

// halt stops c: its probe in progress is cancelled, and done is closed as
// soon as no probe runs. s.mu must be held.
func (s *Scheduler) halt(c *check) {
	if c.cancel == nil {
		return // never launched
	}
	c.cancel()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.halted {
		return
	}
	c.halted = true
	c.timer.Stop()
	if !c.running {
		c.finish()
	}
}

// finish closes done; c.mu must be held.
func (c *check) finish() {
	close(c.done)
	c.wg.Done()
}

// probe runs one probe of c on the timer's goroutine and re-arms the timer
// for the next point of the grid.
func (s *Scheduler) probe(c *check) {
	c.mu.Lock()
	if c.halted {
		c.mu.Unlock()
		return // halt has finished c
	}
	c.running = true
	c.mu.Unlock()

	s.observe(c)

	c.mu.Lock()
	defer c.mu.Unlock()
	c.running = false
	if c.halted {
		c.finish()
		return
	}
	c.timer.Reset(time.Until(nextRun(c.first, c.interval, time.Now())))
}

// observe probes once and sends the transition, if any.
func (s *Scheduler) observe(c *check) {
	ctx := c.ctx
	var res Result
	if tc, ok := c.checker.(timedChecker); ok {
		res = tc.CheckWithin(ctx, c.timeout)
	} else {
		pctx, cancel := context.WithTimeout(ctx, c.timeout)
		res = c.checker.Check(pctx)
		cancel()
	}
	if ctx.Err() != nil {
		return // cancelled by a stop: says nothing about the server
	}
	if c.log.Enabled(ctx, slog.LevelDebug) {
		c.log.Debug("health check ran", "ok", res.OK, "reason", res.Reason, "latency", res.Latency)
	}
	changed := c.h.Observe(res.OK)
	c.mu.Lock()
	c.health, c.last = c.h.Health, res
	c.mu.Unlock()

	send := changed
	if c.h.Health == HealthUp && res.OK && res.WeightSet && (!c.weightSet || res.Weight != c.weight) {
		send = true
	}
	if !send {
		return
	}
	t := Transition{ID: c.spec.ID, Up: c.h.Health == HealthUp, Reason: res.Reason, At: time.Now()}
	if res.OK && res.WeightSet {
		t.Weight, t.WeightSet = res.Weight, true
	}
	// The weight is reset when down, so the next up carries its weight
	// afresh.
	if t.Up {
		if t.WeightSet {
			c.weight, c.weightSet = t.Weight, true
		}
	} else {
		c.weight, c.weightSet = 0, false
	}
	select {
	case c.out <- t:
	case <-ctx.Done():
	}
}

// timedChecker is a Checker that bounds a probe by a timeout itself, so
// that the scheduler need not make a context with a deadline (a timer and
// its allocations) for each probe; the tcp checker, the most numerous, is
// one.
type timedChecker interface {
	CheckWithin(ctx context.Context, timeout time.Duration) Result
}

// newCheck applies the defaults to sp's timing.
func newCheck(sp Spec, ch Checker) *check {
	c := &check{
		spec:     sp,
		checker:  ch,
		interval: sp.Check.Interval,
		timeout:  sp.Check.Timeout,
		rise:     sp.Check.Rise,
		fall:     sp.Check.Fall,
	}
	if c.interval <= 0 {
		c.interval = defaultInterval
	}
	if c.timeout <= 0 {
		c.timeout = min(defaultTimeout, c.interval)
	}
	if c.rise <= 0 {
		c.rise = defaultRise
	}
	if c.fall <= 0 {
		c.fall = defaultFall
	}
	return c
}

// cloneSpec copies sp's slices, so the caller may reuse them, and makes
// empty ones nil, so that nil and empty compare equal on reload.
func cloneSpec(sp Spec) Spec {
	sp.Check.ExpectStatus = append([]int(nil), sp.Check.ExpectStatus...)
	sp.Check.Command = append([]string(nil), sp.Check.Command...)
	return sp
}

// nextRun is the first point of the grid first + k*interval that is after
// now (first itself if now is before it).
func nextRun(first time.Time, interval time.Duration, now time.Time) time.Time {
	if now.Before(first) {
		return first
	}
	k := now.Sub(first)/interval + 1
	return first.Add(k * interval)
}

func randomFirstDelay(interval time.Duration) time.Duration {
	return rand.N(min(interval, maxFirstDelay))
}

// Health is what rise/fall hysteresis concluded about a probed object.
type Health uint8

// Health values.
const (
	HealthUnknown Health = iota // not decided yet
	HealthUp
	HealthDown
)

// Hysteresis turns probe outcomes into health: an object starts unknown,
// Rise successes in a row make it up and Fall failures in a row down; only
// full streaks change it (keepalived's rules, also those of VRRP's tracked
// scripts).
type Hysteresis struct {
	Rise, Fall int
	Health     Health
	streak     int
	streakOK   bool
}

// Observe records one outcome and reports whether Health changed.
func (h *Hysteresis) Observe(ok bool) bool {
	if h.streak == 0 || ok != h.streakOK {
		h.streak, h.streakOK = 0, ok
	}
	if h.streak < max(h.Rise, h.Fall) {
		h.streak++ // capped: only reaching a threshold matters
	}
	switch {
	case ok && h.Health != HealthUp && h.streak >= h.Rise:
		h.Health = HealthUp
		return true
	case !ok && h.Health != HealthDown && h.streak >= h.Fall:
		h.Health = HealthDown
		return true
	}
	return false
}
