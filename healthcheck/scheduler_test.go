package healthcheck

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/directord/directord/internal/config"
)

// fakeChecker plays results in order (the last one repeats), numbering each
// call in Reason ("call 3") unless the result has a reason of its own.
type fakeChecker struct {
	results []Result
	// block makes Check wait this long or until ctx is done.
	block time.Duration

	mu        sync.Mutex
	calls     int
	first     time.Time
	deadlines []time.Duration // ctx deadline minus call time
	cancelled int             // calls that ended by ctx being cancelled

	inflight, maxInflight atomic.Int32
	started               chan struct{} // if set, signalled at each call
}

func (f *fakeChecker) Check(ctx context.Context) Result {
	now := time.Now()
	n := f.inflight.Add(1)
	defer f.inflight.Add(-1)
	for {
		m := f.maxInflight.Load()
		if n <= m || f.maxInflight.CompareAndSwap(m, n) {
			break
		}
	}
	f.mu.Lock()
	f.calls++
	call := f.calls
	if call == 1 {
		f.first = now
	}
	if d, ok := ctx.Deadline(); ok {
		f.deadlines = append(f.deadlines, d.Sub(now))
	}
	f.mu.Unlock()
	if f.started != nil {
		select {
		case f.started <- struct{}{}:
		default:
		}
	}
	if f.block > 0 {
		select {
		case <-time.After(f.block):
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.Canceled) {
				f.mu.Lock()
				f.cancelled++
				f.mu.Unlock()
			}
			return Result{Reason: "cancelled"}
		}
	}
	r := Result{OK: true, Reason: "ok"}
	if len(f.results) > 0 {
		r = f.results[min(call, len(f.results))-1]
		if r.Reason == "" {
			r.Reason = fmt.Sprintf("call %d", call)
		}
	}
	return r
}

func (f *fakeChecker) Calls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

// fakes is a checker factory that hands out one fakeChecker per build and
// counts the builds per ID.
type fakes struct {
	make func(Spec) *fakeChecker // nil: always OK
	fail map[string]bool

	mu     sync.Mutex
	byID   map[string]*fakeChecker // the latest build
	builds map[string]int
}

func (fs *fakes) New(sp Spec) (Checker, error) {
	if fs.fail[sp.ID] {
		return nil, errors.New("bad check")
	}
	f := &fakeChecker{}
	if fs.make != nil {
		f = fs.make(sp)
	}
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if fs.byID == nil {
		fs.byID, fs.builds = map[string]*fakeChecker{}, map[string]int{}
	}
	fs.byID[sp.ID] = f
	fs.builds[sp.ID]++
	return f, nil
}

func (fs *fakes) get(id string) *fakeChecker {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	return fs.byID[id]
}

func (fs *fakes) buildCount(id string) int {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	return fs.builds[id]
}

func testSpec(id string, interval time.Duration, rise, fall int) Spec {
	return Spec{ID: id, Check: config.Check{
		Type: "tcp", Interval: interval, Timeout: interval, Rise: rise, Fall: fall,
	}}
}

func recv(t *testing.T, ch <-chan Transition, within time.Duration) Transition {
	t.Helper()
	select {
	case tr, ok := <-ch:
		if !ok {
			t.Fatal("transition channel closed")
		}
		return tr
	case <-time.After(within):
		t.Fatalf("no transition within %v", within)
		return Transition{}
	}
}

// collect gathers the transitions that arrive within d.
func collect(ch <-chan Transition, d time.Duration) []Transition {
	var got []Transition
	deadline := time.After(d)
	for {
		select {
		case tr, ok := <-ch:
			if !ok {
				return got
			}
			got = append(got, tr)
		case <-deadline:
			return got
		}
	}
}

// waitGoroutines waits for the goroutine count to come back to at most
// want; goroutines that have closed their done channel may still be on
// their way out.
func waitGoroutines(t *testing.T, want int) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for {
		n := runtime.NumGoroutine()
		if n <= want {
			return
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("%d goroutines, want at most %d:\n%s", n, want, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// The hysteresis rules, as keepalived and vrrp.Scripts apply them.
func TestSchedulerHysteresis(t *testing.T) {
	tests := []struct {
		name       string
		rise, fall int
		outcomes   string // S success, F failure
		want       string // health after each outcome: ? unknown, U up, D down
	}{
		{"rise completes first", 2, 3, "SS", "?U"},
		{"fall completes first", 2, 3, "FFF", "??D"},
		{"broken streaks stay unknown", 2, 3, "SFSFFSF", "???????"},
		{"up needs fall failures to go down", 2, 3, "SSFFSFFF", "?UUUUUUD"},
		{"down needs rise successes to go up", 3, 1, "FSSFSSS", "DDDDDDU"},
		{"rise 1 fall 1 follows every result", 1, 1, "SFSF", "UDUD"},
		{"long streak capped", 2, 2, "SSSSSSSSFF", "?UUUUUUUUD"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := Hysteresis{Rise: tt.rise, Fall: tt.fall}
			var got strings.Builder
			prev := HealthUnknown
			for _, o := range tt.outcomes {
				changed := h.Observe(o == 'S')
				if changed != (h.Health != prev) {
					t.Fatalf("observe reported changed=%v, health %v -> %v", changed, prev, h.Health)
				}
				prev = h.Health
				got.WriteByte("?UD"[h.Health])
			}
			if got.String() != tt.want {
				t.Errorf("health after %s = %s, want %s", tt.outcomes, got.String(), tt.want)
			}
		})
	}
}

// Transitions are sent exactly at the result completing a streak, carry
// that result's reason, and dynamic weights while up are sent as changes.
func TestSchedulerRiseFall(t *testing.T) {
	ok, fail := Result{OK: true}, Result{}
	w := func(n int) Result { return Result{OK: true, Weight: n, WeightSet: true} }
	tests := []struct {
		name       string
		rise, fall int
		results    []Result
		want       []Transition
	}{
		{
			name: "rise 3 fall 2 from unknown", rise: 3, fall: 2,
			results: []Result{ok, ok, ok, fail, ok, fail, fail, ok, ok, ok},
			want: []Transition{
				{Up: true, Reason: "call 3"},
				{Up: false, Reason: "call 7"},
				{Up: true, Reason: "call 10"},
			},
		},
		{
			name: "fall first", rise: 3, fall: 2,
			results: []Result{fail, fail, ok, ok, fail, ok, ok, ok},
			want: []Transition{
				{Up: false, Reason: "call 2"},
				{Up: true, Reason: "call 8"},
			},
		},
		{
			name: "dynamic weight while up", rise: 1, fall: 2,
			results: []Result{w(5), w(5), w(7), ok, w(7), fail, fail, w(7), w(7)},
			want: []Transition{
				{Up: true, Reason: "call 1", Weight: 5, WeightSet: true},
				{Up: true, Reason: "call 3", Weight: 7, WeightSet: true},
				{Up: false, Reason: "call 7"},
				{Up: true, Reason: "call 8", Weight: 7, WeightSet: true},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			const interval = 10 * time.Millisecond
			fs := &fakes{make: func(Spec) *fakeChecker { return &fakeChecker{results: tt.results} }}
			s := NewScheduler(fs.New, nil)
			if err := s.Update([]Spec{testSpec("web 198.51.100.11:80", interval, tt.rise, tt.fall)}); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			ch := s.Start(ctx)
			var got []Transition
			for range tt.want {
				got = append(got, recv(t, ch, time.Second))
			}
			// The last result repeats: nothing more may come.
			got = append(got, collect(ch, 5*interval)...)
			if diff := cmp.Diff(tt.want, got, cmpopts.IgnoreFields(Transition{}, "ID", "At")); diff != "" {
				t.Errorf("transitions (-want +got):\n%s", diff)
			}
			for _, tr := range got {
				if tr.ID != "web 198.51.100.11:80" || tr.At.IsZero() {
					t.Errorf("transition %+v: want ID and At set", tr)
				}
			}
		})
	}
}

// Issue: "first result quickly after start" — within one interval.
func TestSchedulerFirstResultWithinInterval(t *testing.T) {
	const interval, n = 50 * time.Millisecond, 20
	fs := &fakes{}
	s := NewScheduler(fs.New, nil)
	var specs []Spec
	for i := range n {
		specs = append(specs, testSpec(fmt.Sprint("rs", i), interval, 1, 1))
	}
	if err := s.Update(specs); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	start := time.Now()
	ch := s.Start(ctx)
	for range n {
		recv(t, ch, time.Second)
	}
	// The first probes come before one interval; the slack is for the
	// runtime's timer and scheduling latency under -race.
	if d := time.Since(start); d > interval+30*time.Millisecond {
		t.Errorf("all first results after %v, want within one interval (%v)", d, interval)
	}
}

// Issue: 10,000 checks must not fire in the same millisecond.
func TestSchedulerJitter(t *testing.T) {
	const interval, n = 100 * time.Millisecond, 1000
	fs := &fakes{}
	s := NewScheduler(fs.New, nil)
	var specs []Spec
	for i := range n {
		specs = append(specs, testSpec(fmt.Sprint("rs", i), interval, 1, 1))
	}
	if err := s.Update(specs); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	start := time.Now()
	ch := s.Start(ctx)
	go func() {
		for range ch {
		}
	}()
	time.Sleep(interval + 100*time.Millisecond)

	perMs := map[time.Duration]int{}
	var lo, hi time.Duration = time.Hour, 0
	for i := range n {
		f := fs.get(fmt.Sprint("rs", i))
		f.mu.Lock()
		first := f.first
		f.mu.Unlock()
		if first.IsZero() {
			t.Fatalf("rs%d: no probe within %v", i, interval+100*time.Millisecond)
		}
		d := first.Sub(start)
		perMs[d.Truncate(time.Millisecond)]++
		lo, hi = min(lo, d), max(hi, d)
	}
	busiest := 0
	for _, c := range perMs {
		busiest = max(busiest, c)
	}
	t.Logf("first probes from %v to %v, %d distinct ms, busiest ms %d", lo, hi, len(perMs), busiest)
	// Uniform over 100ms is ~10 per ms (20-50 in the busiest ms when
	// goroutine start-up catches up under -race); a fifth of all checks
	// in one millisecond would mean no spreading.
	if busiest > n/5 {
		t.Errorf("%d of %d first probes in one millisecond", busiest, n)
	}
	if hi-lo < interval/2 {
		t.Errorf("first probes spread over %v, want most of the %v window", hi-lo, interval)
	}
}

// A slow check never overlaps itself: grid points passed during a probe are
// skipped, not queued. Each probe gets the check's timeout.
func TestSchedulerNoOverlap(t *testing.T) {
	const interval, probe, timeout, run = 10 * time.Millisecond, 35 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond
	f := &fakeChecker{block: probe}
	s := NewScheduler(func(Spec) (Checker, error) { return f, nil }, nil)
	sp := testSpec("slow", interval, 1, 1)
	sp.Check.Timeout = timeout
	if err := s.Update([]Spec{sp}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	ch := s.Start(ctx)
	time.Sleep(run)
	cancel()
	for range ch {
	}
	if m := f.maxInflight.Load(); m != 1 {
		t.Errorf("%d probes of one check at once, want 1", m)
	}
	calls := f.Calls()
	if calls < 3 || calls > int(run/probe)+1 {
		t.Errorf("%d probes of %v in %v, want 3..%d (missed grid points skipped)", calls, probe, run, run/probe+1)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, d := range f.deadlines {
		if d > timeout || d < timeout-20*time.Millisecond {
			t.Errorf("probe deadline %v ahead, want the timeout %v", d, timeout)
		}
	}
}

// Reload: unchanged specs keep their checker, grid and health (no new
// transition, same Status); changed ones restart from unknown.
func TestSchedulerUpdateKeepsUnchanged(t *testing.T) {
	const interval = 10 * time.Millisecond
	fs := &fakes{}
	s := NewScheduler(fs.New, nil)
	a, b := testSpec("a", interval, 1, 1), testSpec("b", interval, 1, 1)
	if err := s.Update([]Spec{a, b}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	ch := s.Start(ctx)
	recv(t, ch, time.Second)
	recv(t, ch, time.Second)
	aUp, aKnown, aLast := s.Status("a")
	if !aUp || !aKnown {
		t.Fatalf("a: up=%v known=%v, want up", aUp, aKnown)
	}
	aCalls := fs.get("a").Calls()

	a2 := testSpec("a", interval, 1, 1)
	a2.Check.Command = []string{} // nil and empty are the same configuration
	b2 := testSpec("b", interval, 2, 1)
	if err := s.Update([]Spec{a2, b2, testSpec("c", interval, 1, 1)}); err != nil {
		t.Fatal(err)
	}
	if _, known, _ := s.Status("b"); known {
		t.Error("b changed but still known right after Update, want unknown")
	}
	got := collect(ch, 10*interval)
	ids := map[string]int{}
	for _, tr := range got {
		ids[tr.ID]++
		if !tr.Up {
			t.Errorf("unexpected %+v", tr)
		}
	}
	if diff := cmp.Diff(map[string]int{"b": 1, "c": 1}, ids); diff != "" {
		t.Errorf("transitions after reload per ID (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(map[string]int{"a": 1, "b": 2, "c": 1},
		map[string]int{"a": fs.buildCount("a"), "b": fs.buildCount("b"), "c": fs.buildCount("c")}); diff != "" {
		t.Errorf("checker builds per ID (-want +got):\n%s", diff)
	}
	up, known, last := s.Status("a")
	if !up || !known || last != aLast {
		t.Errorf("a after reload: up=%v known=%v last=%+v, want up, known, %+v", up, known, last, aLast)
	}
	if fs.get("a").Calls() <= aCalls {
		t.Error("a's checker not probed after the reload, want it kept running")
	}
}

// Removed checks stop: the in-flight probe is cancelled, Update returns
// once their goroutines have, and their checkers see no further calls.
func TestSchedulerUpdateRemoves(t *testing.T) {
	const interval = 10 * time.Millisecond
	blocked := &fakeChecker{block: time.Hour, started: make(chan struct{}, 1)}
	fs := &fakes{make: func(sp Spec) *fakeChecker {
		if sp.ID == "blocked" {
			return blocked
		}
		return &fakeChecker{}
	}}
	s := NewScheduler(fs.New, nil)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	ch := s.Start(ctx)
	go func() {
		for range ch {
		}
	}()
	time.Sleep(10 * time.Millisecond) // let the draining goroutine settle
	baseline := runtime.NumGoroutine()

	specs := []Spec{testSpec("blocked", interval, 1, 1)}
	specs[0].Check.Timeout = time.Hour
	for i := range 100 {
		specs = append(specs, testSpec(fmt.Sprint("rs", i), interval, 1, 1))
	}
	if err := s.Update(specs); err != nil {
		t.Fatal(err)
	}
	select {
	case <-blocked.started:
	case <-time.After(time.Second):
		t.Fatal("blocked check never probed")
	}
	// Every check runs: each has probed twice.
	deadline := time.Now().Add(5 * time.Second)
	for _, sp := range specs[1:] {
		for fs.get(sp.ID).Calls() < 2 {
			if time.Now().After(deadline) {
				t.Fatalf("%s: %d probes, want 2: checks not running", sp.ID, fs.get(sp.ID).Calls())
			}
			time.Sleep(interval)
		}
	}
	// An idle check holds no goroutine: only the blocked probe and those
	// in progress at this instant run, far fewer than one per check.
	if n := runtime.NumGoroutine(); n > baseline+50 {
		t.Errorf("%d goroutines with 101 checks, baseline %d: idle checks hold goroutines", n, baseline)
	}

	begin := time.Now()
	if err := s.Update(nil); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(begin); d > time.Second {
		t.Errorf("Update took %v to stop the checks", d)
	}
	blocked.mu.Lock()
	if blocked.cancelled != 1 {
		t.Errorf("in-flight probe cancelled %d times, want 1", blocked.cancelled)
	}
	blocked.mu.Unlock()
	calls := map[string]int{}
	for _, sp := range specs {
		calls[sp.ID] = fs.get(sp.ID).Calls()
		if _, known, _ := s.Status(sp.ID); known {
			t.Errorf("%s: removed but still known", sp.ID)
		}
	}
	waitGoroutines(t, baseline)
	time.Sleep(5 * interval)
	for _, sp := range specs {
		if n := fs.get(sp.ID).Calls(); n != calls[sp.ID] {
			t.Errorf("%s: %d probes after removal", sp.ID, n-calls[sp.ID])
		}
	}
}

// A reload that cannot build every checker changes nothing and names the
// offending IDs.
func TestSchedulerUpdateError(t *testing.T) {
	fs := &fakes{fail: map[string]bool{"bad1": true, "bad2": true}}
	s := NewScheduler(fs.New, nil)
	if err := s.Update([]Spec{testSpec("good", time.Second, 1, 1)}); err != nil {
		t.Fatal(err)
	}
	err := s.Update([]Spec{
		testSpec("good", time.Second, 2, 2), testSpec("bad1", time.Second, 1, 1),
		testSpec("bad2", time.Second, 1, 1), testSpec("dup", time.Second, 1, 1),
		testSpec("dup", time.Second, 1, 1),
	})
	if err == nil {
		t.Fatal("Update succeeded with checkers that cannot be built")
	}
	for _, want := range []string{`"bad1": bad check`, `"bad2": bad check`, `"dup": duplicate id`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %s", err, want)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.checks) != 1 || s.checks["good"].rise != 1 {
		t.Errorf("failed Update changed the checks: %v", s.checks)
	}
}

// Shutdown: cancelling ctx closes the channel even when the reader has
// stopped reading and the buffer is full, and leaves no goroutine behind.
func TestSchedulerStopClosesChannel(t *testing.T) {
	const interval, n = 10 * time.Millisecond, 1100 // more than the buffer
	baseline := runtime.NumGoroutine()
	flap := []Result{{OK: true}, {}, {OK: true}, {}, {OK: true}, {}}
	fs := &fakes{make: func(sp Spec) *fakeChecker {
		if sp.ID == "blocked" {
			return &fakeChecker{block: time.Hour}
		}
		return &fakeChecker{results: flap}
	}}
	s := NewScheduler(fs.New, nil)
	specs := []Spec{testSpec("blocked", interval, 1, 1)}
	specs[0].Check.Timeout = time.Hour
	for i := range n {
		specs = append(specs, testSpec(fmt.Sprint("rs", i), interval, 1, 1))
	}
	if err := s.Update(specs); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	ch := s.Start(ctx)
	time.Sleep(10 * interval) // nobody reads: the buffer fills
	if len(ch) != cap(ch) {
		t.Logf("buffer %d/%d: not full yet", len(ch), cap(ch))
	}
	cancel()
	deadline := time.After(2 * time.Second)
	for open := true; open; {
		select {
		case _, open = <-ch:
		case <-deadline:
			t.Fatal("channel not closed 2s after ctx was cancelled")
		}
	}
	waitGoroutines(t, baseline)
	// After shutdown, Update records but runs nothing.
	if err := s.Update(specs[:1]); err != nil {
		t.Fatal(err)
	}
	waitGoroutines(t, baseline)
}

// BenchmarkScheduler10k measures the scheduler's own overhead: 10,000
// always-OK fake checks at a 1s interval. cpu-ms/s is process CPU time
// (user+system) per second of wall time; heap-MB is the heap in use after
// a GC with all checks running, stack-MB their goroutines' stacks.
func BenchmarkScheduler10k(b *testing.B) {
	const n, interval, window = 10000, time.Second, 3 * time.Second
	fs := &fakes{}
	s := NewScheduler(fs.New, nil)
	specs := make([]Spec, n)
	for i := range specs {
		specs[i] = testSpec(fmt.Sprintf("web 198.51.%d.%d:80", i/250, i%250), interval, 2, 3)
	}
	if err := s.Update(specs); err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(b.Context())
	ch := s.Start(ctx)
	go func() {
		for range ch {
		}
	}()
	time.Sleep(2 * interval) // every check has probed and risen

	var cpu time.Duration
	var wall time.Duration
	b.ResetTimer()
	for range b.N {
		c0, w0 := processCPU(b), time.Now()
		time.Sleep(window)
		cpu += processCPU(b) - c0
		wall += time.Since(w0)
	}
	b.StopTimer()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	cancel()
	for range ch {
	}
	b.ReportMetric(float64(cpu.Milliseconds())/wall.Seconds(), "cpu-ms/s")
	b.ReportMetric(float64(ms.HeapInuse)/(1<<20), "heap-MB")
	b.ReportMetric(float64(ms.StackInuse)/(1<<20), "stack-MB")
	b.ReportMetric(0, "ns/op")
}

func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
