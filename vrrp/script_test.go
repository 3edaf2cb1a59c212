//go:build linux

package vrrp

import (
	"github.com/directord/directord/healthcheck"

	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// scriptSh is an argv running a /bin/sh script with $1.. set to args.
func scriptSh(script string, args ...string) []string {
	return append([]string{"/bin/sh", "-c", script, "sh"}, args...)
}

// startScripts starts specs with no random first delay and returns the
// change channel and a stop function that cancels and drains it, failing
// the test if the channel does not close promptly.
func startScripts(t *testing.T, specs ...ScriptSpec) (*Scripts, <-chan ScriptResult, func() []ScriptResult) {
	t.Helper()
	s := NewScripts(specs, nil)
	s.firstDelay = func(time.Duration) time.Duration { return 0 }
	ctx, cancel := context.WithCancel(context.Background())
	ch := s.Start(ctx)
	stopped := false
	stop := func() []ScriptResult {
		t.Helper()
		if stopped {
			return nil
		}
		stopped = true
		cancel()
		var rest []ScriptResult
		deadline := time.After(3 * time.Second)
		for {
			select {
			case r, ok := <-ch:
				if !ok {
					return rest
				}
				rest = append(rest, r)
			case <-deadline:
				t.Fatal("result channel not closed 3s after cancel")
			}
		}
	}
	t.Cleanup(func() { stop() })
	return s, ch, stop
}

func nextResult(t *testing.T, ch <-chan ScriptResult, within time.Duration) ScriptResult {
	t.Helper()
	select {
	case r, ok := <-ch:
		if !ok {
			t.Fatal("result channel closed early")
		}
		return r
	case <-time.After(within):
		t.Fatalf("no status change within %v", within)
	}
	panic("unreachable")
}

func readInt(t *testing.T, file string) int {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("%s: %q: %v", file, b, err)
	}
	return n
}

// scriptRunning reports whether pid is alive (not gone, not a zombie).
func scriptRunning(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	return i < 0 || len(b) <= i+2 || (b[i+2] != 'Z' && b[i+2] != 'X')
}

func waitScriptPidsGone(t *testing.T, pidFile string) {
	t.Helper()
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Second)
	for _, f := range strings.Fields(string(b)) {
		pid, _ := strconv.Atoi(f)
		for scriptRunning(pid) {
			if time.Now().After(deadline) {
				t.Fatalf("pid %d (a script's child) still running", pid)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// keepalived vrrp_script: init until the first rise successes or fall
// failures in a row, then fall failures in a row to go down and rise
// successes in a row to come back.
func TestScriptHysteresisNeedsConsecutiveRuns(t *testing.T) {
	for _, tc := range []struct {
		name       string
		rise, fall int
		runs       string // S = success, F = failure
		want       []string
	}{
		{"first successes decide up", 2, 2, "SS", []string{"2 up"}},
		{"first failures decide down", 2, 3, "FFF", []string{"3 down"}},
		{"a broken streak in init decides nothing", 2, 2, "SFSFSF", nil},
		{"fall-1 failures do not go down", 1, 3, "SFFSFFS", []string{"1 up"}},
		{"rise-1 successes do not come back", 3, 1, "FSSFSSFSSS", []string{"1 down", "10 up"}},
		{"rise 1 fall 1 follows every change", 1, 1, "SFFSS", []string{"1 up", "2 down", "4 up"}},
		{"long streaks report once", 2, 2, "SSSSSSFFFFFFFSS", []string{"2 up", "8 down", "15 up"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := healthcheck.Hysteresis{Rise: tc.rise, Fall: tc.fall}
			var got []string
			for i, c := range tc.runs {
				if h.Observe(c == 'S') {
					state := "down"
					if h.Health == healthcheck.HealthUp {
						state = "up"
					}
					got = append(got, fmt.Sprintf("%d %s", i+1, state))
				}
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("changes (-want +got):\n%s", diff)
			}
		})
	}
}

// A real script follows a plan file, one character per run (F fails, the
// rest succeed), and counts its runs. Each plan has streaks one short of a
// threshold, so an off-by-one in rise or fall changes the reported sequence.
func TestScriptRiseAndFallAreExact(t *testing.T) {
	for _, tc := range []struct {
		name       string
		rise, fall int
		plan       string
		want       []ScriptResult
		wantAtRun  []int
	}{
		{
			name: "rise 2 fall 3", rise: 2, fall: 3,
			plan:      "FFSSFFSFFFSFSS",
			want:      []ScriptResult{{"chk", true, "exit 0"}, {"chk", false, "exit 1"}, {"chk", true, "exit 0"}},
			wantAtRun: []int{4, 10, 14},
		},
		{
			name: "rise 3 fall 1", rise: 3, fall: 1,
			plan:      "FSSFSSS",
			want:      []ScriptResult{{"chk", false, "exit 1"}, {"chk", true, "exit 0"}},
			wantAtRun: []int{1, 7},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			count := filepath.Join(dir, "count")
			if err := os.WriteFile(count, []byte("0\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, "plan"), []byte(tc.plan+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			_, ch, stop := startScripts(t, ScriptSpec{
				Name: "chk",
				Command: scriptSh(`n=$(($(cat "$1/count") + 1)); echo $n > "$1/count.tmp"; mv "$1/count.tmp" "$1/count"
					[ "$(cut -c "$n" "$1/plan")" != F ]`, dir),
				Interval: 20 * time.Millisecond, Timeout: time.Second, Rise: tc.rise, Fall: tc.fall,
			})
			var got []ScriptResult
			for i := range tc.want {
				got = append(got, nextResult(t, ch, 5*time.Second))
				if n := readInt(t, count); n < tc.wantAtRun[i] {
					t.Errorf("change %d (%+v) reported after run %d, want after run %d", i+1, got[i], n, tc.wantAtRun[i])
				}
			}
			// Let it run past the plan (all successes) and check nothing else was reported.
			for readInt(t, count) < len(tc.plan)+3 {
				time.Sleep(10 * time.Millisecond)
			}
			got = append(got, stop()...)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("status changes (-want +got):\n%s", diff)
			}
		})
	}
}

func TestScriptHangingRunIsKilledAtTimeoutAndFails(t *testing.T) {
	pids := filepath.Join(t.TempDir(), "pids")
	const timeout = 100 * time.Millisecond
	start := time.Now()
	_, ch, stop := startScripts(t, ScriptSpec{
		Name:     "hang",
		Command:  scriptSh(`sleep 30 & echo $! >> "$1"; wait`, pids),
		Interval: 300 * time.Millisecond, Timeout: timeout, Rise: 1, Fall: 1,
	})
	r := nextResult(t, ch, 5*time.Second)
	took := time.Since(start)
	if want := (ScriptResult{Name: "hang", Up: false, Reason: "timeout after 100ms"}); r != want {
		t.Errorf("first change = %+v, want %+v", r, want)
	}
	if took < timeout || took > timeout+500*time.Millisecond {
		t.Errorf("down reported after %v, want about %v", took, timeout)
	}
	stop()
	waitScriptPidsGone(t, pids)
}

func TestScriptStartErrorIsAFailureWithItsReason(t *testing.T) {
	_, ch, _ := startScripts(t, ScriptSpec{
		Name: "missing", Command: []string{"/nonexistent/directord-check"},
		Interval: 20 * time.Millisecond, Timeout: time.Second, Rise: 1, Fall: 2,
	})
	r := nextResult(t, ch, 5*time.Second)
	want := ScriptResult{Name: "missing", Up: false, Reason: "start /nonexistent/directord-check: no such file or directory"}
	if r != want {
		t.Errorf("change = %+v, want %+v", r, want)
	}
}

func TestScriptNeverOverlapsItself(t *testing.T) {
	dir := t.TempDir()
	// mkdir is atomic: a second concurrent run finds the lock taken.
	_, _, stop := startScripts(t, ScriptSpec{
		Name: "slow",
		Command: scriptSh(`mkdir "$1/lock" 2>/dev/null || echo overlap >> "$1/overlaps"
			echo run >> "$1/runs"; sleep 0.1; rmdir "$1/lock"`, dir),
		Interval: 20 * time.Millisecond, Timeout: time.Second, Rise: 1, Fall: 1,
	})
	time.Sleep(700 * time.Millisecond)
	stop()
	runs, _ := os.ReadFile(filepath.Join(dir, "runs"))
	if n := strings.Count(string(runs), "run"); n < 3 {
		t.Errorf("only %d runs in 700ms", n)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "overlaps")); err == nil {
		t.Errorf("runs overlapped %d times", strings.Count(string(b), "overlap"))
	}
}

func TestNextScriptRunSkipsGridPointsMissedByASlowRun(t *testing.T) {
	first := time.Unix(1000, 0)
	const iv = 100 * time.Millisecond
	for _, tc := range []struct{ now, want time.Duration }{
		{-50 * time.Millisecond, 0},
		{0, iv},
		{30 * time.Millisecond, iv},
		{iv, 2 * iv},
		{350 * time.Millisecond, 4 * iv}, // 1, 2, 3 passed during the run: skipped
	} {
		if got := nextScriptRun(first, iv, first.Add(tc.now)); !got.Equal(first.Add(tc.want)) {
			t.Errorf("now first%+v: next run first%+v, want first%+v", tc.now, got.Sub(first), tc.want)
		}
	}
}

func TestScriptStatusIsUnknownUntilDecided(t *testing.T) {
	dir := t.TempDir()
	gate := filepath.Join(dir, "go")
	s, ch, _ := startScripts(t, ScriptSpec{
		Name: "chk", Command: scriptSh(`[ -e "$1" ]`, gate),
		Interval: 20 * time.Millisecond, Timeout: time.Second, Rise: 2, Fall: 1000,
	})
	time.Sleep(100 * time.Millisecond) // several failing runs, fewer than fall
	if up, known := s.Status("chk"); up || known {
		t.Errorf("Status during init = %v, %v; want false, false", up, known)
	}
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if r := nextResult(t, ch, 5*time.Second); !r.Up {
		t.Fatalf("change = %+v, want up", r)
	}
	if up, known := s.Status("chk"); !up || !known {
		t.Errorf("Status after up = %v, %v; want true, true", up, known)
	}
	if up, known := s.Status("no-such-script"); up || known {
		t.Errorf("Status of an unknown name = %v, %v; want false, false", up, known)
	}
}

func TestScriptsCancelStopsEverythingWithoutLeaks(t *testing.T) {
	before := runtime.NumGoroutine()
	dir := t.TempDir()
	pids := filepath.Join(dir, "pids")
	var specs []ScriptSpec
	const n = 20
	for i := range n {
		specs = append(specs, ScriptSpec{
			Name:     fmt.Sprintf("s%d", i),
			Command:  scriptSh(`sleep 30 & echo $! >> "$1"; wait`, pids),
			Interval: 10 * time.Second, Timeout: 10 * time.Second, Rise: 1, Fall: 1,
		})
	}
	_, _, stop := startScripts(t, specs...)
	deadline := time.Now().Add(5 * time.Second)
	for {
		b, _ := os.ReadFile(pids)
		if len(strings.Fields(string(b))) == n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %q started", b)
		}
		time.Sleep(10 * time.Millisecond)
	}
	start := time.Now()
	if rest := stop(); len(rest) != 0 {
		t.Errorf("runs killed by the cancel were reported: %+v", rest)
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("stopping took %v", took)
	}
	waitScriptPidsGone(t, pids)
	deadline = time.Now().Add(2 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("goroutines: %d before, %d after\n%s", before, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}
