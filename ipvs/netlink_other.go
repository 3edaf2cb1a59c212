//go:build !linux

package ipvs

import (
	"errors"
	"runtime"
)

var errNotLinux = errors.New("IPVS needs Linux (GOOS=" + runtime.GOOS + ")")

// NetlinkKernel is the IPVS table of one network namespace; it exists only
// on Linux.
type NetlinkKernel struct{}

var _ Kernel = (*NetlinkKernel)(nil)

// NewKernel fails: IPVS exists only on Linux.
func NewKernel() (*NetlinkKernel, error) { return nil, errNotLinux }

// Services fails: IPVS exists only on Linux.
func (*NetlinkKernel) Services() ([]Entry, error) { return nil, errNotLinux }

// Service fails: IPVS exists only on Linux.
func (*NetlinkKernel) Service(ServiceKey) (Entry, bool, error) { return Entry{}, false, errNotLinux }

// NewService fails: IPVS exists only on Linux.
func (*NetlinkKernel) NewService(Service) error { return errNotLinux }

// UpdateService fails: IPVS exists only on Linux.
func (*NetlinkKernel) UpdateService(Service) error { return errNotLinux }

// DelService fails: IPVS exists only on Linux.
func (*NetlinkKernel) DelService(ServiceKey) error { return errNotLinux }

// NewDestination fails: IPVS exists only on Linux.
func (*NetlinkKernel) NewDestination(ServiceKey, Destination) error { return errNotLinux }

// UpdateDestination fails: IPVS exists only on Linux.
func (*NetlinkKernel) UpdateDestination(ServiceKey, Destination) error { return errNotLinux }

// DelDestination fails: IPVS exists only on Linux.
func (*NetlinkKernel) DelDestination(ServiceKey, DestKey) error { return errNotLinux }

// Timeouts fails: IPVS exists only on Linux.
func (*NetlinkKernel) Timeouts() (Timeouts, error) { return Timeouts{}, errNotLinux }

// SetTimeouts fails: IPVS exists only on Linux.
func (*NetlinkKernel) SetTimeouts(Timeouts) error { return errNotLinux }

// Close does nothing.
func (*NetlinkKernel) Close() error { return nil }
