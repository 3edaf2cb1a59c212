package healthcheck

import (
	"context"
	"net/netip"
	"time"

	"github.com/directord/directord/internal/config"
)

// Spec is one real server's check: the configured check (the service's with
// the real server's fields laid over it) and what it probes.
type Spec struct {
	// ID names the check in logs and events: "web 198.51.100.11:80".
	ID string
	// Check is the effective check configuration.
	Check config.Check
	// Addr and Port are what the check connects to: the real server's
	// address, and check.port, else the real server's port, else the
	// service's.
	Addr netip.Addr
	Port uint16
	// Source, if valid, is the local address probes are sent from (the
	// director's address on the real servers' network).
	Source netip.Addr
}

// Result is the outcome of one probe.
type Result struct {
	OK bool
	// Reason says why, for people: "connect: connection refused",
	// "http 503 from 198.51.100.11:80", "timeout after 1s".
	Reason string
	// Weight is set by exec checks with dynamic_weight (exit code N in
	// 2..255 gives weight N-2).
	Weight    int
	WeightSet bool
	Latency   time.Duration
}

// Checker probes a real server once. Check must return by ctx's deadline
// and must not keep goroutines, sockets or processes after it returns.
type Checker interface {
	Check(ctx context.Context) Result
}

// Transition is a change of a real server's health, after rise/fall.
type Transition struct {
	ID     string
	Up     bool
	Reason string
	// Weight carries a dynamic weight when the last result set one.
	Weight    int
	WeightSet bool
	At        time.Time
}
