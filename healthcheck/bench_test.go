package healthcheck

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/directord/directord/internal/config"
	"github.com/directord/directord/internal/netlab"
	"github.com/directord/directord/internal/procstat"
)

// The health-check cost goal: 10,000 TCP checks at a 1 s interval against
// listeners in another namespace (100 addresses x 100 ports). The checks
// run in a helper process (-hc.bench N: the scheduler and the real
// checkers, what directord runs for its checks) inside the director's
// namespace; this process serves the listeners and counts the probes that
// reach them, so a checker that stalls cannot look cheap. After a warm-up,
// the helper's CPU (fraction of one core) and resident memory are read
// from /proc over a window. Goal: under half a core and under 150 MB.
// keepalived's checker needs IPVS, so the side-by-side comparison runs in
// the VM (BenchmarkVMChecks in internal/daemon). Run it with make bench, or
//
//	go test -run '^$' -bench '^BenchmarkNetnsChecks$' -benchtime 1x ./healthcheck
const (
	benchAddrs  = 100
	benchPorts  = 100
	benchChecks = benchAddrs * benchPorts
	benchWarmup = 10 * time.Second
	benchWindow = 30 * time.Second
)

// benchSpecs are the helper's checks: every address and port, tcp, 1s.
func benchSpecs(n int) []Spec {
	specs := make([]Spec, 0, n)
	for i := range n {
		a := netip.AddrFrom4([4]byte{198, 51, 100, byte(11 + i/benchPorts)})
		specs = append(specs, Spec{
			ID: fmt.Sprintf("c%d", i), Addr: a, Port: uint16(10001 + i%benchPorts),
			Check: config.Check{Type: "tcp", Interval: time.Second, Timeout: time.Second, Rise: 2, Fall: 3},
		})
	}
	return specs
}

// runBenchHelper runs n checks until SIGTERM and prints how many
// transitions it saw (all checks should go up once).
func runBenchHelper(n int) int {
	s := NewScheduler(NewChecker, nil)
	if err := s.Update(benchSpecs(n)); err != nil {
		fmt.Println("update:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	ups, downs := 0, 0
	for tr := range s.Start(ctx) {
		if tr.Up {
			ups++
		} else {
			downs++
		}
		if ups+downs == n {
			fmt.Printf("DECIDED up=%d down=%d\n", ups, downs)
		}
	}
	fmt.Printf("TRANSITIONS up=%d down=%d\n", ups, downs)
	return 0
}

func BenchmarkNetnsChecks(b *testing.B) {
	// Go raises the soft file limit to the hard one at startup.
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		b.Fatal(err)
	}
	if lim.Cur < benchChecks+2000 {
		b.Fatalf("open-file limit %d: the listeners need %d (raise ulimit -n)", lim.Cur, benchChecks+2000)
	}
	lab := netlab.New(b)
	lb := lab.AddHost("lb", "198.51.100.1/24")
	addrs := make([]string, benchAddrs)
	for i := range addrs {
		addrs[i] = fmt.Sprintf("198.51.100.%d/24", 11+i)
	}
	srv := lab.AddHost("srv", addrs...)
	var accepted atomic.Int64
	for i := range benchChecks {
		addr := fmt.Sprintf("198.51.100.%d:%d", 11+i/benchPorts, 10001+i%benchPorts)
		if err := srv.AcceptAndCount(addr, &accepted); err != nil {
			b.Fatal(err)
		}
	}
	exe, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	p := lb.Start(exe, "-hc.bench", strconv.Itoa(benchChecks))
	time.Sleep(benchWarmup)
	user0, sys0, err0 := procstat.CPUTimes(p.Pid())
	n0, t0 := accepted.Load(), time.Now()
	time.Sleep(benchWindow)
	user1, sys1, err1 := procstat.CPUTimes(p.Pid())
	n1, t1 := accepted.Load(), time.Now()
	rss, err2 := procstat.RSS(p.Pid())
	threads, err3 := procstat.Threads(p.Pid())
	if err := errors.Join(err0, err1, err2, err3); err != nil {
		b.Fatalf("measure the checker: %v\n%s", err, p.Output())
	}
	secs := t1.Sub(t0).Seconds()
	user, sys := (user1-user0)/secs, (sys1-sys0)/secs
	cores, mb, probes := user+sys, float64(rss)/(1<<20), float64(n1-n0)/secs
	b.Logf("%d checks: %.3f cores (user %.3f, kernel %.3f), %.1f MB RSS, %d threads, %.0f probes/s",
		benchChecks, cores, user, sys, mb, threads, probes)
	if probes < 0.9*benchChecks {
		b.Fatalf("the listeners saw %.0f probes/s, want about %d:\n%s", probes, benchChecks, p.Output())
	}
	if err := p.Signal(syscall.SIGTERM); err != nil {
		b.Fatal(err)
	}
	if err := p.Wait(10 * time.Second); err != nil {
		b.Fatalf("checker exit: %v\n%s", err, p.Output())
	}
	if want := fmt.Sprintf("TRANSITIONS up=%d down=0", benchChecks); !slices.Contains(strings.Split(string(p.Output()), "\n"), want) {
		b.Errorf("every check should have gone up once and stayed up; the helper said:\n%s", p.Output())
	}
	b.ReportMetric(cores, "cores")
	b.ReportMetric(mb, "MB")
	b.ReportMetric(probes, "probes/s")
}
