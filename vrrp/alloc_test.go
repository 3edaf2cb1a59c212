package vrrp

import (
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/directord/directord/internal/config"
	"golang.org/x/sys/unix"
)

// The advert path, end to end: a master engine marshals an advert and
// sends it with sendmsg; a backup engine polls, reads it with recvmsg,
// parses and checks it, and feeds its state machine, which restarts the
// Master_Down_Timer. At 10 ms adverts that runs 100 times a second on both
// directors for as long as they live, so it must give the garbage collector
// nothing to do: no allocation at all.
//
// It runs without privileges: the engines share a UDP socket on loopback
// (127.0.0.2 advertises unicast to 127.0.0.3 on lo) instead of a raw
// protocol-112 socket, through the same transport code (sendmsg with
// IP_PKTINFO, recvmsg with PKTINFO and TTL control messages).

// advertPair is a master and a backup engine wired through one socket.
type advertPair struct {
	master, backup *Engine
	mi, bi         *instance
}

func newAdvertPair(tb testing.TB) *advertPair {
	tb.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { unix.Close(fd) })
	if err := unix.Bind(fd, &unix.SockaddrInet4{}); err != nil {
		tb.Fatal(err)
	}
	if err := setupSocket(fd, false); err != nil {
		tb.Fatal(err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		tb.Fatal(err)
	}
	tr := newTransport(fd, false, false, sa.(*unix.SockaddrInet4).Port)

	engine := func(prio int, src, peer string) (*Engine, *instance) {
		cfg := &config.Config{VRRP: config.VRRP{Instances: []config.Instance{{
			Name: "VI_1", Interface: "lo", VRID: 51, Priority: prio, Version: 3,
			AdvertInterval: 10 * time.Millisecond, Preempt: true, ChecksumCompat: "rfc",
			SourceAddress:    netip.MustParseAddr(src),
			UnicastPeers:     []netip.Addr{netip.MustParseAddr(peer)},
			VirtualAddresses: []config.VirtualAddress{{Address: netip.MustParsePrefix("192.0.2.50/32")}},
		}}}}
		e, err := NewEngine(cfg, EngineOptions{})
		if err != nil {
			tb.Fatal(err)
		}
		e.trans[0] = tr
		for i := range e.pfds {
			e.pfds[i] = unix.PollFd{Fd: -1, Events: unix.POLLIN}
		}
		e.pfds[0].Fd = int32(fd)
		in := e.insts[0]
		e.resolve(in)
		if in.m == nil || in.ifi == nil {
			tb.Fatalf("instance on lo not set up: interface %v, source %v", in.ifi, in.src)
		}
		now := time.Now()
		e.apply(in, now, in.m.Handle(now, Event{Kind: EvStartup}))
		return e, in
	}
	p := &advertPair{}
	p.master, p.mi = engine(150, "127.0.0.2", "127.0.0.3")
	p.backup, p.bi = engine(100, "127.0.0.3", "127.0.0.2")
	return p
}

// once sends one advert from the master and runs one iteration of the
// backup's loop over it, as the loop does: poll, lateness, receive, timers.
func (p *advertPair) once() {
	p.master.send(p.mi, 150, true)
	b := p.backup
	woke := b.poll(time.Now().Add(time.Second))
	b.noteLateness(woke)
	drained := time.Now()
	b.receive()
	b.timeouts(drained)
}

func TestAdvertSendReceiveDoesNotAllocate(t *testing.T) {
	p := newAdvertPair(t)
	p.once() // the backup learns its master
	sent, recv := p.mi.sent.Load(), p.bi.recv.Load()
	allocs := testing.AllocsPerRun(1000, p.once)
	if got := p.bi.recv.Load() - recv; got < 1000 {
		t.Fatalf("the backup accepted %d adverts of the %d sent; drops: %v", got, p.mi.sent.Load()-sent, p.backup.Drops())
	}
	if allocs != 0 {
		t.Errorf("%v allocations per advert sent and received, want 0", allocs)
	}
	if s := p.bi.m.State(); s != StateBackup {
		t.Errorf("backup is %s after the adverts, want BACKUP", s)
	}
	if m := p.bi.m.Master(); m != netip.MustParseAddr("127.0.0.2") {
		t.Errorf("backup's master is %v, want 127.0.0.2", m)
	}
}

// BenchmarkAdvertSendReceive is one advert sent by a master engine and
// received and handled by a backup engine; allocs/op must be 0.
func BenchmarkAdvertSendReceive(b *testing.B) {
	p := newAdvertPair(b)
	p.once()
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		p.once()
	}
}

// A master's periodic adverts through the advert timer (timer.go): queuing
// one in the kernel, and reaping the completions of those sent, allocates
// nothing either.
func TestAdvertTimerDoesNotAllocate(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	p := newAdvertPair(t)
	m, in := p.master, p.mi
	now := time.Now().Add(time.Second) // past the Master_Down_Timer
	m.apply(in, now, in.m.Handle(now, Event{Kind: EvTimeout}))
	if s := in.m.State(); s != StateMaster {
		t.Fatalf("master engine is %s, want MASTER", s)
	}
	a, err := newAdvertTimer()
	if err != nil {
		t.Fatalf("advert timer: %v", err)
	}
	m.timer = a
	defer func() { m.stopTimer() }()
	sent := in.sent.Load()
	allocs := testing.AllocsPerRun(200, func() {
		m.send(in, in.m.Priority(), true)
		m.reapTimed()
		time.Sleep(time.Millisecond)
	})
	if got := in.sent.Load() - sent; got < 10 {
		t.Fatalf("%d adverts sent by the kernel in about 200 ms at 10 ms", got)
	}
	if allocs != 0 {
		t.Errorf("%v allocations per advert through the advert timer, want 0", allocs)
	}
}
