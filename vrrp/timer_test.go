package vrrp

import (
	"context"
	"net/netip"
	"runtime"
	"testing"
	"time"
	"unsafe"

	"github.com/directord/directord/internal/config"
	"golang.org/x/sys/unix"
)

// The advert timer (timer.go), on real sockets and the real kernel: a
// master engine runs its loop, advertising every 10 ms by unicast UDP on
// loopback (the transport code of the raw socket, as in alloc_test.go),
// and a receiver records every advert with the kernel's receive time.

// wireAdvert is one advert as the receiver saw it.
type wireAdvert struct {
	at   time.Time
	prio uint8
}

// timedMaster is a master engine whose loop runs in the test.
type timedMaster struct {
	e      *Engine
	in     *instance
	cancel context.CancelFunc
	done   chan error
	rfd    int // the peer's socket: adverts wait there, kernel-timestamped
}

// startTimedMaster starts a priority-255 master (MASTER at once) whose
// adverts (every interval) go to a receiving socket; withTimer false runs
// it without the advert timer, as on a kernel without io_uring.
func startTimedMaster(t *testing.T, withTimer bool, interval time.Duration) *timedMaster {
	t.Helper()
	rfd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Bind(rfd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 3}}); err != nil {
		t.Fatal(err)
	}
	if err := unix.SetsockoptInt(rfd, unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1); err != nil {
		t.Fatal(err)
	}
	// Room for every advert of a test (about a hundred) until collect
	// reads them.
	if err := unix.SetsockoptInt(rfd, unix.SOL_SOCKET, unix.SO_RCVBUF, 1<<20); err != nil {
		t.Fatal(err)
	}
	sa, err := unix.Getsockname(rfd)
	if err != nil {
		t.Fatal(err)
	}
	port := sa.(*unix.SockaddrInet4).Port

	sfd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Bind(sfd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 2}}); err != nil {
		t.Fatal(err)
	}
	if err := setupSocket(sfd, false); err != nil {
		t.Fatal(err)
	}
	cfg := &config.Config{VRRP: config.VRRP{Instances: []config.Instance{{
		Name: "VI_1", Interface: "lo", VRID: 51, Priority: 255, Version: 3,
		AdvertInterval: interval, Preempt: true, ChecksumCompat: "rfc",
		SourceAddress:    netip.MustParseAddr("127.0.0.2"),
		UnicastPeers:     []netip.Addr{netip.MustParseAddr("127.0.0.3")},
		VirtualAddresses: []config.VirtualAddress{{Address: netip.MustParsePrefix("192.0.2.50/32")}},
	}}}}
	e, err := NewEngine(cfg, EngineOptions{})
	if err != nil {
		t.Fatal(err)
	}
	e.trans[0] = newTransport(sfd, false, false, port)
	wfd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	e.wakeFD = wfd
	for i := range e.pfds {
		e.pfds[i] = unix.PollFd{Fd: -1, Events: unix.POLLIN}
	}
	e.pfds[0].Fd = int32(sfd)
	e.pfds[2].Fd = int32(wfd)

	m := &timedMaster{e: e, in: e.insts[0], done: make(chan error, 1), rfd: rfd}
	ctx, cancel := context.WithCancel(context.Background())
	m.cancel = cancel
	go func() {
		runtime.LockOSThread()
		// Real-time where permitted, as directord runs it: the test
		// measures stalls it makes itself, not the other tests of a
		// loaded machine.
		e.rtPrio = 10
		e.realtime()
		if !withTimer {
			e.noTimer = true
		}
		m.done <- e.loop(ctx)
	}()
	t.Cleanup(func() {
		m.stop()
		unix.Close(rfd)
		unix.Close(sfd)
		unix.Close(wfd)
	})
	return m
}

func (m *timedMaster) stop() {
	if m.cancel != nil {
		m.cancel()
		m.e.wake()
		<-m.done
		m.cancel = nil
	}
}

// collect returns the adverts received since the last collect, each at
// its kernel receive time. It reads them from the socket itself, so none
// is missed because a reader was scheduled late on a loaded machine.
func (m *timedMaster) collect() []wireAdvert {
	var out []wireAdvert
	buf := make([]byte, 1500)
	oob := make([]byte, 128)
	for {
		n, oobn, _, _, err := unix.Recvmsg(m.rfd, buf, oob, unix.MSG_DONTWAIT)
		if err != nil {
			return out // EAGAIN: all read
		}
		a := wireAdvert{at: time.Now()}
		if cms, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil {
			for _, c := range cms {
				if c.Header.Level == unix.SOL_SOCKET && c.Header.Type == unix.SO_TIMESTAMPNS && len(c.Data) >= int(unsafe.Sizeof(unix.Timespec{})) {
					ts := (*unix.Timespec)(unsafe.Pointer(&c.Data[0]))
					a.at = time.Unix(ts.Unix())
				}
			}
		}
		if n >= 8 {
			a.prio = buf[2]
		}
		out = append(out, a)
	}
}

// stallLoop blocks the engine's loop, on its own thread, for d, as a
// stopped world or a missing processor would.
func (m *timedMaster) stallLoop(t *testing.T, d time.Duration) {
	t.Helper()
	if err := m.e.onLoop(func() error { time.Sleep(d); return nil }); err != nil {
		t.Fatal(err)
	}
}

// maxGap is the longest time between two adverts in as.
func maxGap(as []wireAdvert) time.Duration {
	var most time.Duration
	for i := 1; i < len(as); i++ {
		most = max(most, as[i].at.Sub(as[i-1].at))
	}
	return most
}

// stalledGap runs a master for a while, stalls its loop three times for
// 70 ms, and returns the adverts seen and the longest gap between two.
func stalledGap(t *testing.T, withTimer bool) ([]wireAdvert, time.Duration) {
	m := startTimedMaster(t, withTimer, 10*time.Millisecond)
	time.Sleep(200 * time.Millisecond)
	if got := m.e.Scheduling().KernelTimedAdverts; got != withTimer {
		t.Fatalf("kernel-timed adverts: %v, want %v (io_uring of this kernel: see the engine's log)", got, withTimer)
	}
	m.collect()
	for range 3 {
		m.stallLoop(t, 70*time.Millisecond)
		time.Sleep(60 * time.Millisecond)
	}
	as := m.collect()
	return as, maxGap(as)
}

func TestAdvertTimerKeepsAdvertsGoingThroughAStalledLoop(t *testing.T) {
	as, gap := stalledGap(t, true)
	if len(as) < 30 {
		t.Fatalf("%d adverts in about 400 ms at 10 ms", len(as))
	}
	if gap > 40*time.Millisecond {
		t.Errorf("longest gap between adverts %v across three 70 ms stalls of the loop, want about 10 ms", gap)
	}
	// The control: the same stalls without the timer leave gaps on the
	// wire, or this test could not tell.
	_, bare := stalledGap(t, false)
	if bare < 60*time.Millisecond {
		t.Errorf("without the advert timer the longest gap was %v: the stalls did not stall", bare)
	}
	t.Logf("longest gap across 70 ms stalls: %v with the advert timer, %v without", gap, bare)
}

func TestAdvertTimerNeverSendsAStaleAdvert(t *testing.T) {
	m := startTimedMaster(t, true, 10*time.Millisecond)
	time.Sleep(150 * time.Millisecond)
	// A new priority: the queued adverts (priority 255) are cancelled
	// before the first at 200 goes out.
	err := m.e.onLoop(func() error {
		now := time.Now()
		m.e.apply(m.in, now, m.in.m.Handle(now, Event{Kind: EvPriority, Priority: 200}))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(150 * time.Millisecond)
	// Stop: priority 0, and nothing queued follows it.
	m.stop()
	time.Sleep(150 * time.Millisecond)
	as := m.collect()
	first200, zero := -1, -1
	for i, a := range as {
		switch {
		case a.prio == 200 && first200 < 0:
			first200 = i
		case a.prio == 0 && zero < 0:
			zero = i
		}
	}
	if first200 < 0 || zero < 0 {
		t.Fatalf("want adverts at 255, then 200, then 0; got priorities %v", prios(as))
	}
	for _, a := range as[first200:zero] {
		if a.prio != 200 {
			t.Fatalf("an advert at %d after the first at 200: %v", a.prio, prios(as))
		}
	}
	if zero != len(as)-1 {
		t.Errorf("%d adverts after the priority-0 one: %v", len(as)-1-zero, prios(as[zero:]))
	}
	if n := zero - first200; n < 3 {
		t.Errorf("%d adverts at 200 in 150 ms at 10 ms", n)
	}
}

// A master that must advertise out of turn (here: it hears another
// router give up with priority 0, RFC 5798 6.4.3) does so at once, not
// at its next queued advert: the backups wait only Skew_Time after a
// priority 0.
func TestAdvertTimerSendsOutOfTurnAtOnce(t *testing.T) {
	m := startTimedMaster(t, true, time.Second)
	time.Sleep(300 * time.Millisecond)
	before := m.collect()
	if len(before) != 1 {
		t.Fatalf("%d adverts in the first 300 ms at 1 s, want 1", len(before))
	}
	var at time.Time
	err := m.e.onLoop(func() error {
		at = time.Now()
		m.e.apply(m.in, at, m.in.m.Handle(at, Event{Kind: EvAdvert, Priority: 0, Interval: time.Second, Src: netip.MustParseAddr("127.0.0.9")}))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	as := m.collect()
	if len(as) != 1 {
		t.Fatalf("%d adverts in the 200 ms after the priority 0, want 1 (sent at once)", len(as))
	}
	if d := as[0].at.Sub(at); d < 0 || d > 50*time.Millisecond {
		t.Errorf("the answer left %v after the priority 0, want at once", d)
	}
	// The queue starts again from it: the next is a second later.
	time.Sleep(time.Second)
	as = m.collect()
	if len(as) != 1 {
		t.Fatalf("%d adverts in the next second, want 1", len(as))
	}
	if d := as[0].at.Sub(at); d < 950*time.Millisecond || d > 1100*time.Millisecond {
		t.Errorf("the next advert came %v after the answer, want about 1s", d)
	}
}

func prios(as []wireAdvert) []uint8 {
	out := make([]uint8, len(as))
	for i, a := range as {
		out[i] = a.prio
	}
	return out
}
