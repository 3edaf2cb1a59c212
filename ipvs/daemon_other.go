//go:build !linux

package ipvs

// Daemons fails: IPVS exists only on Linux.
func (*NetlinkKernel) Daemons() ([]DaemonConfig, error) { return nil, errNotLinux }

// NewDaemon fails: IPVS exists only on Linux.
func (*NetlinkKernel) NewDaemon(DaemonConfig) error { return errNotLinux }

// DelDaemon fails: IPVS exists only on Linux.
func (*NetlinkKernel) DelDaemon(DaemonState) error { return errNotLinux }
