package vrrp

import (
	"cmp"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Stolen time: on a virtual machine the hypervisor may not run a virtual
// CPU for a while, and nothing on that CPU runs then: not the master's
// timing thread, not the kernel timer that sends its queued advert. The
// guest's kernel counts that time per CPU as "steal" in /proc/stat. The
// saturation benchmark samples it, so that a long gap in the master's
// adverts can be told apart: the CPU was taken away, or directord was
// late on a CPU it had.

// stealSample is every CPU's stolen time at one moment.
type stealSample struct {
	at    time.Time
	steal []time.Duration // per CPU, cumulative
}

// userHZ is the unit of /proc/stat's counters (USER_HZ, 100 on Linux).
const userHZ = 100

// readSteal reads the per-CPU steal counters from a /proc/stat text.
func readSteal(stat string) ([]time.Duration, error) {
	var steal []time.Duration
	for _, l := range strings.Split(stat, "\n") {
		f := strings.Fields(l)
		if len(f) == 0 || !strings.HasPrefix(f[0], "cpu") || f[0] == "cpu" {
			continue
		}
		// cpuN user nice system idle iowait irq softirq steal ...
		if len(f) < 9 {
			return nil, fmt.Errorf("/proc/stat: %q has no steal field", l)
		}
		ticks, err := strconv.ParseInt(f[8], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("/proc/stat: %q: %w", l, err)
		}
		steal = append(steal, time.Duration(ticks)*time.Second/userHZ)
	}
	if len(steal) == 0 {
		return nil, fmt.Errorf("/proc/stat: no cpuN line")
	}
	return steal, nil
}

// stealSampler reads /proc/stat every 5 ms from a real-time thread (the
// lowest SCHED_FIFO priority: above the busy processes, below directord's
// timing thread; a normal one where real-time is refused) until stop is
// called.
type stealSampler struct {
	stopc   chan struct{}
	done    chan struct{}
	samples []stealSample
	err     error
}

func startStealSampler(t *testing.T) *stealSampler {
	t.Helper()
	s := &stealSampler{stopc: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		// Locked and never unlocked: the thread, real-time, ends with the
		// goroutine instead of going back to the runtime's pool, and
		// reset-on-fork keeps its policy from anything started from it.
		runtime.LockOSThread()
		attr := unix.SchedAttr{Size: unix.SizeofSchedAttr, Policy: unix.SCHED_FIFO, Priority: 1, Flags: unix.SCHED_FLAG_RESET_ON_FORK}
		if err := unix.SchedSetAttr(0, &attr, 0); err != nil {
			t.Logf("stolen time sampled without real-time priority: %v", err)
		}
		tick := unix.Timespec{Nsec: int64(5 * time.Millisecond)}
		for {
			select {
			case <-s.stopc:
				return
			default:
			}
			b, err := os.ReadFile("/proc/stat")
			if err == nil {
				var steal []time.Duration
				if steal, err = readSteal(string(b)); err == nil {
					s.samples = append(s.samples, stealSample{at: time.Now(), steal: steal})
				}
			}
			if err != nil {
				s.err = err
				return
			}
			_ = unix.Nanosleep(&tick, nil)
		}
	}()
	t.Cleanup(s.stop)
	return s
}

// stop ends the sampling; the samples may be read after it.
func (s *stealSampler) stop() {
	select {
	case <-s.stopc:
	default:
		close(s.stopc)
	}
	<-s.done
}

// stolenDuring is the most time stolen from one CPU between the last
// sample at or before from and the first at or after to, and the length of
// that window (0, 0 if the samples do not surround [from, to]).
func stolenDuring(samples []stealSample, from, to time.Time) (stolen, window time.Duration) {
	i := -1
	for k, s := range samples {
		if s.at.After(from) {
			break
		}
		i = k
	}
	j := slices.IndexFunc(samples, func(s stealSample) bool { return !s.at.Before(to) })
	if i < 0 || j < 0 {
		return 0, 0
	}
	a, b := samples[i], samples[j]
	for c := range min(len(a.steal), len(b.steal)) {
		stolen = max(stolen, b.steal[c]-a.steal[c])
	}
	return stolen, b.at.Sub(a.at)
}

// totalStolen is the time stolen from all CPUs together over the samples.
func totalStolen(samples []stealSample) time.Duration {
	if len(samples) < 2 {
		return 0
	}
	var d time.Duration
	a, b := samples[0], samples[len(samples)-1]
	for c := range min(len(a.steal), len(b.steal)) {
		d += b.steal[c] - a.steal[c]
	}
	return d
}

// satGap is a gap between two of the master's adverts on the wire, the
// most time stolen from one CPU (any CPU: the sampler does not know which
// one the master ran on) between the samples around it, and how long that
// window was (a little longer than the gap; steal is counted in 10 ms
// ticks).
type satGap struct {
	Ms     float64 `json:"ms"`
	Stolen float64 `json:"stolen_ms"`
	Window float64 `json:"window_ms"`
}

// longestGaps returns the n longest gaps between consecutive adverts
// (times in order), longest first, each with the most time stolen from one
// CPU around it.
func longestGaps(at []time.Time, samples []stealSample, n int) []satGap {
	type gap struct{ from, to time.Time }
	var gaps []gap
	for k := 1; k < len(at); k++ {
		gaps = append(gaps, gap{at[k-1], at[k]})
	}
	slices.SortStableFunc(gaps, func(a, b gap) int { return cmp.Compare(b.to.Sub(b.from), a.to.Sub(a.from)) })
	var out []satGap
	for _, g := range gaps[:min(n, len(gaps))] {
		stolen, window := stolenDuring(samples, g.from, g.to)
		out = append(out, satGap{Ms: ms(g.to.Sub(g.from)), Stolen: ms(stolen), Window: ms(window)})
	}
	return out
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func TestReadSteal(t *testing.T) {
	stat := "cpu  2359810 0 320143 2531788 5711 0 25272 3505 0 0\n" +
		"cpu0 1172971 0 154683 1280390 1515 0 11913 1740 0 0\n" +
		"cpu1 1186839 0 165460 1251397 4196 0 13358 1765 0 0\n" +
		"intr 1 2 3\n"
	got, err := readSteal(stat)
	if err != nil {
		t.Fatal(err)
	}
	if want := []time.Duration{17400 * time.Millisecond, 17650 * time.Millisecond}; !slices.Equal(got, want) {
		t.Errorf("readSteal = %v, want %v", got, want)
	}
	if _, err := readSteal("cpu0 1 2 3\n"); err == nil {
		t.Error("a cpu line without a steal field was accepted")
	}
	if _, err := readSteal("intr 1\n"); err == nil {
		t.Error("a text without cpu lines was accepted")
	}
	if _, err := os.Stat("/proc/stat"); err == nil {
		b, err := os.ReadFile("/proc/stat")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := readSteal(string(b)); err != nil {
			t.Fatalf("this machine's /proc/stat: %v", err)
		}
	}
}

func TestLongestGapsAndStolen(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(msec int) time.Time { return t0.Add(time.Duration(msec) * time.Millisecond) }
	samples := []stealSample{
		{at(0), []time.Duration{0, 0}},
		{at(20), []time.Duration{0, 0}},
		{at(40), []time.Duration{0, 10 * time.Millisecond}},
		{at(80), []time.Duration{0, 40 * time.Millisecond}},
		{at(100), []time.Duration{10 * time.Millisecond, 40 * time.Millisecond}},
	}
	adverts := []time.Time{at(5), at(15), at(25), at(62), at(72), at(82), at(90)}
	got := longestGaps(adverts, samples, 2)
	// 25 -> 62 (37 ms): samples 20 and 80 surround it; cpu1 lost 40 ms.
	// Next: 10 ms gaps; 5 -> 15 lies between samples 0 and 20: nothing.
	if len(got) != 2 || got[0].Ms != 37 || got[0].Stolen != 40 || got[0].Window != 60 || got[1].Ms != 10 {
		t.Errorf("longestGaps = %+v, want 37 ms with 40 stolen in a 60 ms window first, then a 10 ms gap", got)
	}
	if s, w := stolenDuring(samples, at(-5), at(10)); s != 0 || w != 0 {
		t.Errorf("a window before the first sample: stolen %v in %v, want nothing", s, w)
	}
	if s, w := stolenDuring(samples, at(85), at(95)); s != 10*time.Millisecond || w != 20*time.Millisecond {
		t.Errorf("stolenDuring(85, 95) = %v in %v, want 10ms in 20ms", s, w)
	}
	if d := totalStolen(samples); d != 50*time.Millisecond {
		t.Errorf("totalStolen = %v, want 50ms", d)
	}
}
