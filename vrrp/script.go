package vrrp

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/directord/directord/healthcheck"
	"github.com/directord/directord/internal/command"
)

// Defaults of vrrp.scripts, applied by NewScripts to zero fields so a
// ScriptSpec built by hand behaves like one read from the configuration.
const (
	defaultScriptInterval = 2 * time.Second
	defaultScriptTimeout  = time.Second
	defaultScriptRise     = 2
	defaultScriptFall     = 2
	// maxScriptFirstDelay caps the random delay before a script's first
	// run: long enough to spread many scripts apart, short enough that a
	// 30s-interval script still decides soon after startup.
	maxScriptFirstDelay = time.Second
)

// ScriptSpec is one vrrp.scripts entry (keepalived vrrp_script). User is
// already resolved: the caller substitutes command.DefaultUser for "".
// Zero Interval, Timeout, Rise and Fall take the vrrp.scripts defaults
// (2s, 1s capped at Interval, 2, 2).
type ScriptSpec struct {
	Name     string
	Command  []string
	Interval time.Duration
	Timeout  time.Duration
	Rise     int
	Fall     int
	User     string
}

// ScriptResult is a status change of a script. Reason is the outcome of the
// run that caused it: "exit 0", "exit 1", "timeout after 1s", "signal:
// terminated" or a start error ("start /x: no such file or directory").
type ScriptResult struct {
	Name   string
	Up     bool
	Reason string
}

// Scripts runs tracked scripts and turns their exit statuses into up/down
// with rise/fall hysteresis.
//
// Like keepalived, a script starts in an "init" state that is neither up nor
// down (Status reports it as not known, and nothing is sent). The first
// Rise consecutive successes make it up, or the first Fall consecutive
// failures make it down, whichever streak completes first; after that it
// goes down after Fall consecutive failures and up again after Rise
// consecutive successes. Exit 0 is a success; any other exit, a signal, a
// timeout or a start error is a failure.
//
// Each script has one goroutine that runs it, so a script never overlaps
// itself. Its first run comes after a random delay below min(Interval, 1s),
// which spreads scripts that share an interval; later runs are on a fixed
// grid from that first run (first + k*Interval), and a grid point that
// passes while the previous run is still going is skipped rather than
// queued.
type Scripts struct {
	specs []ScriptSpec
	log   *slog.Logger
	// run and firstDelay are fields so tests can replace them.
	run        func(context.Context, command.Spec) command.Result
	firstDelay func(interval time.Duration) time.Duration

	mu     sync.Mutex
	health map[string]healthcheck.Health
}

// NewScripts prepares specs; nothing runs until Start. Names must be unique
// (the configuration guarantees it). A nil log discards.
func NewScripts(specs []ScriptSpec, log *slog.Logger) *Scripts {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Scripts{
		log:        log,
		run:        command.Run,
		firstDelay: randomFirstDelay,
		health:     make(map[string]healthcheck.Health, len(specs)),
	}
	for _, sp := range specs {
		sp.Command = append([]string(nil), sp.Command...)
		if sp.Interval <= 0 {
			sp.Interval = defaultScriptInterval
		}
		if sp.Timeout <= 0 {
			sp.Timeout = min(defaultScriptTimeout, sp.Interval)
		}
		if sp.Rise <= 0 {
			sp.Rise = defaultScriptRise
		}
		if sp.Fall <= 0 {
			sp.Fall = defaultScriptFall
		}
		s.specs = append(s.specs, sp)
		s.health[sp.Name] = healthcheck.HealthUnknown
	}
	return s
}

// Start runs every script until ctx is done and returns the channel of
// status changes. A run in progress when ctx is done is killed and not
// counted. The channel is closed once every script goroutine has returned,
// so draining it to the end waits for all runs to finish. Call Start once.
// The channel has room for one change per script; a reader that falls
// further behind delays the scripts whose changes wait to be sent.
func (s *Scripts) Start(ctx context.Context) <-chan ScriptResult {
	out := make(chan ScriptResult, len(s.specs))
	var wg sync.WaitGroup
	for _, sp := range s.specs {
		wg.Go(func() { s.loop(ctx, sp, out) })
	}
	go func() {
		wg.Wait()
		close(out)
	}()
	return out
}

// Status reports whether the named script is up. known is false for a
// script still in its init state and for a name that is not a script.
func (s *Scripts) Status(name string) (up, known bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	h, ok := s.health[name]
	return h == healthcheck.HealthUp, ok && h != healthcheck.HealthUnknown
}

func (s *Scripts) loop(ctx context.Context, sp ScriptSpec, out chan<- ScriptResult) {
	log := s.log.With("script", sp.Name)
	h := healthcheck.Hysteresis{Rise: sp.Rise, Fall: sp.Fall}
	cs := command.Spec{Argv: sp.Command, User: sp.User, Timeout: sp.Timeout}

	first := time.Now().Add(s.firstDelay(sp.Interval))
	timer := time.NewTimer(time.Until(first))
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		res := s.run(ctx, cs)
		if ctx.Err() != nil {
			return // killed by the shutdown: says nothing about the script
		}
		ok, reason := scriptOutcome(res, sp.Timeout)
		if log.Enabled(ctx, slog.LevelDebug) { // spare the output copy otherwise
			log.Debug("tracked script ran", "ok", ok, "reason", reason,
				"duration", res.Duration, "output", string(res.Output))
		}
		if h.Observe(ok) {
			up := h.Health == healthcheck.HealthUp
			s.mu.Lock()
			s.health[sp.Name] = h.Health
			s.mu.Unlock()
			if !up {
				// The change itself is the caller's to log; the output
				// of the failing run is only here.
				log.Warn("tracked script down", "reason", reason, "output", string(res.Output))
			}
			select {
			case out <- ScriptResult{Name: sp.Name, Up: up, Reason: reason}:
			case <-ctx.Done():
				return
			}
		}
		timer.Reset(time.Until(nextScriptRun(first, sp.Interval, time.Now())))
	}
}

// nextScriptRun is the first point of the grid first + k*interval that is
// after now (first itself if now is before it).
func nextScriptRun(first time.Time, interval time.Duration, now time.Time) time.Time {
	if now.Before(first) {
		return first
	}
	k := now.Sub(first)/interval + 1
	return first.Add(k * interval)
}

func randomFirstDelay(interval time.Duration) time.Duration {
	return rand.N(min(interval, maxScriptFirstDelay))
}

// scriptOutcome says whether a run succeeded and, in the words of
// ScriptResult.Reason, why.
func scriptOutcome(r command.Result, timeout time.Duration) (ok bool, reason string) {
	switch {
	case r.Err != nil:
		return false, r.Err.Error()
	case r.TimedOut:
		return false, "timeout after " + timeout.String()
	case r.Signal != "":
		return false, "signal: " + r.Signal
	default:
		return r.ExitCode == 0, fmt.Sprintf("exit %d", r.ExitCode)
	}
}
