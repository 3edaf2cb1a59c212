package healthcheck

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// A tcp check is the cheapest probe there is, and the most numerous (10,000
// at a 1 s interval is a goal), so it skips the Go network stack: it opens
// a non-blocking socket and connects; a handshake that finished meanwhile
// (a server on this host or next to it) is seen with one poll, and any
// other is waited for on one epoll instance shared by every tcp check of
// the process (the connector); then the connection is reset. Six system
// calls a probe where net.Dialer made ten (poller registration and
// removal, both socket names, TCP_NODELAY), no net.Conn, and, through
// CheckWithin, no context or timer per probe. BenchmarkNetnsChecks (10,000
// checks at 1 s): 0.62 cores through net.Dialer, 0.48 this way, in a lab
// that also charged the prober for br_netfilter and Multipath TCP
// listeners; 0.43-0.46 without them (docs/healthchecks.md).

// connector completes non-blocking connects: one goroutine waits in
// epoll_wait and hands each socket's outcome (SO_ERROR) to its waiter.
type connector struct {
	ep int

	mu sync.Mutex
	// waiters is indexed by file descriptor; gen tells a registration
	// from an earlier one of the same (reused) descriptor.
	waiters []*connWait
	gen     uint32
}

// connWait is one check's waiting place, reused by every probe of it (a
// check never overlaps itself).
type connWait struct {
	gen uint32
	ch  chan unix.Errno // buffered: the connector never blocks
}

var (
	connOnce sync.Once
	conns    *connector
	connErr  error
)

// sharedConnector starts the process's connector on first use.
func sharedConnector() (*connector, error) {
	connOnce.Do(func() {
		ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
		if err != nil {
			connErr = fmt.Errorf("epoll_create1: %w", err)
			return
		}
		conns = &connector{ep: ep}
		go conns.run()
	})
	return conns, connErr
}

func (c *connector) run() {
	events := make([]unix.EpollEvent, 256)
	for {
		n, err := unix.EpollWait(c.ep, events, -1)
		if err != nil {
			// EINTR; nothing else can happen to a valid epoll fd.
			continue
		}
		for _, ev := range events[:n] {
			c.complete(int(ev.Fd), uint32(ev.Pad))
		}
	}
}

// complete hands fd's outcome to its waiter, unless the waiter gave up
// (forget). All of it happens under mu: a waiter that gives up either
// finds the outcome in its channel (and drains it) or never gets one, and
// fd is still open while it is read, since the waiter closes it only after
// forget or after the outcome.
func (c *connector) complete(fd int, gen uint32) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if fd >= len(c.waiters) || c.waiters[fd] == nil || c.waiters[fd].gen != gen {
		return // given up on (timeout, cancel)
	}
	w := c.waiters[fd]
	c.waiters[fd] = nil
	soErr, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR)
	if err != nil {
		soErr = int(errnoOf(err))
	}
	select {
	case w.ch <- unix.Errno(soErr):
	default: // cannot happen: one outcome per registration, drained
	}
}

// watch registers fd's connect for w.
func (c *connector) watch(fd int, w *connWait) error {
	c.mu.Lock()
	c.gen++
	w.gen = c.gen
	if fd >= len(c.waiters) {
		c.waiters = append(c.waiters, make([]*connWait, fd+1-len(c.waiters)+len(c.waiters)/2)...)
	}
	c.waiters[fd] = w
	c.mu.Unlock()
	ev := unix.EpollEvent{Events: unix.EPOLLOUT | unix.EPOLLONESHOT, Fd: int32(fd), Pad: int32(w.gen)}
	if err := unix.EpollCtl(c.ep, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		c.forget(fd, w)
		return err
	}
	return nil
}

// forget gives up on fd's connect; after it returns the connector sends
// nothing more to w for it, but may have sent already.
func (c *connector) forget(fd int, w *connWait) {
	c.mu.Lock()
	if fd < len(c.waiters) && c.waiters[fd] == w {
		c.waiters[fd] = nil
	}
	c.mu.Unlock()
	select {
	case <-w.ch:
	default:
	}
}

// tcpChecker keeps what every probe needs, built once: 10,000 checks a
// second make the per-probe work count.
type tcpChecker struct {
	probe
	family int
	laddr  unix.Sockaddr // nil: the kernel picks the source
	raddr  unix.Sockaddr
	wait   connWait
	timer  *time.Timer // bounds a wait; made on the first
	ok     string
}

func newTCPChecker(p probe, raddr, laddr netip.AddrPort) *tcpChecker {
	c := &tcpChecker{probe: p, family: unix.AF_INET, raddr: sockaddr(raddr), ok: "connected to " + p.target}
	if raddr.Addr().Is6() && !raddr.Addr().Is4In6() {
		c.family = unix.AF_INET6
	}
	if laddr.IsValid() {
		c.laddr = sockaddr(laddr)
	}
	c.wait.ch = make(chan unix.Errno, 1)
	return c
}

func sockaddr(ap netip.AddrPort) unix.Sockaddr {
	a := ap.Addr().Unmap()
	if a.Is4() {
		return &unix.SockaddrInet4{Addr: a.As4(), Port: int(ap.Port())}
	}
	sa := &unix.SockaddrInet6{Addr: a.As16(), Port: int(ap.Port())}
	if z := ap.Addr().Zone(); z != "" {
		if ifi, err := net.InterfaceByName(z); err == nil {
			sa.ZoneId = uint32(ifi.Index)
		}
	}
	return sa
}

// Check succeeds when a TCP connection opens; it is reset at once: the
// director keeps no TIME_WAIT socket per probe (10,000 checks a second
// would keep 600,000), and neither side spends a FIN exchange on a
// connection that carried nothing.
func (c *tcpChecker) Check(ctx context.Context) Result {
	ctx, cancel, label := c.bound(ctx)
	defer cancel()
	return c.check(ctx, 0, label)
}

// CheckWithin is Check bounded by timeout instead of a deadline of ctx
// (the scheduler's way: no context per probe; a timer only when the
// handshake does not finish at once).
func (c *tcpChecker) CheckWithin(ctx context.Context, timeout time.Duration) Result {
	return c.check(ctx, timeout, timeout.String())
}

// check is one probe: bounded by timeout if > 0, else by ctx's deadline.
func (c *tcpChecker) check(ctx context.Context, timeout time.Duration, label string) Result {
	start := time.Now()
	errno, step := c.connect(ctx, timeout)
	lat := time.Since(start)
	switch {
	case errno == 0:
		return Result{OK: true, Reason: c.ok, Latency: lat}
	case errno == unix.ETIMEDOUT && step == "wait":
		if ctx.Err() == context.Canceled {
			return Result{Reason: "connect " + c.target + ": canceled", Latency: lat}
		}
		return Result{Reason: "timeout after " + label, Latency: lat}
	default:
		return Result{Reason: "connect " + c.target + ": " + step + errno.Error(), Latency: lat}
	}
}

// connect opens, waits for and resets one connection. step names a failed
// step before connect ("socket: ", "bind: "), or is "wait" when the wait
// ended by the timeout or ctx.
func (c *tcpChecker) connect(ctx context.Context, timeout time.Duration) (unix.Errno, string) {
	cn, err := sharedConnector()
	if err != nil {
		return errnoOf(err), "epoll: "
	}
	fd, err := unix.Socket(c.family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return errnoOf(err), "socket: "
	}
	if c.laddr != nil {
		if err := unix.Bind(fd, c.laddr); err != nil {
			unix.Close(fd)
			return errnoOf(err), "bind: "
		}
	}
	errno, step := unix.Errno(0), ""
	switch err := unix.Connect(fd, c.raddr); err {
	case nil:
	case unix.EINPROGRESS:
		if errno, done := connected(fd); done {
			return c.finish(fd, errno), ""
		}
		if err := cn.watch(fd, &c.wait); err != nil {
			errno = errnoOf(err)
			break
		}
		var expired <-chan time.Time
		if timeout > 0 {
			if c.timer == nil {
				c.timer = time.NewTimer(timeout)
			} else {
				c.timer.Reset(timeout)
			}
			expired = c.timer.C
		}
		select {
		case errno = <-c.wait.ch:
		case <-expired:
			cn.forget(fd, &c.wait)
			errno, step = unix.ETIMEDOUT, "wait"
		case <-ctx.Done():
			cn.forget(fd, &c.wait)
			errno, step = unix.ETIMEDOUT, "wait"
		}
		if c.timer != nil {
			c.timer.Stop()
		}
	default:
		errno = errnoOf(err)
	}
	return c.finish(fd, errno), step
}

// connected tells whether fd's connect has already finished (a server on
// this host or next to it answers before connect returns), and how: one
// poll costs less than waking the connector.
func connected(fd int) (unix.Errno, bool) {
	pfd := [1]unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
	if n, err := unix.Poll(pfd[:], 0); err != nil || n == 0 {
		return 0, false
	}
	soErr, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR)
	if err != nil {
		return errnoOf(err), true
	}
	return unix.Errno(soErr), true
}

// finish resets a connection that opened and closes fd.
func (c *tcpChecker) finish(fd int, errno unix.Errno) unix.Errno {
	if errno == 0 {
		_ = unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
	}
	unix.Close(fd)
	return errno
}

// errnoOf is err's system error number (EIO if it has none).
func errnoOf(err error) unix.Errno {
	var e unix.Errno
	if errors.As(err, &e) {
		return e
	}
	return unix.EIO
}
