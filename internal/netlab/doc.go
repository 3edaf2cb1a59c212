// Package netlab builds throw-away networks of Linux network namespaces for
// privileged tests: a "switch" namespace holding one bridge per segment, and
// host namespaces plugged into it by veth pairs, so VRRP, VIP announcement and
// health checks run against real kernels and real packets while the host's
// own namespace is never touched (every veth is created inside the switch
// namespace with its peer placed straight into the host namespace). A Lab is
// tied to a testing.TB: New registers a cleanup that stops the processes it
// started and deletes every namespace it made, also after a failed test, and
// Require skips where namespaces are unusable, except under CI=true, where it
// fails instead so a privileged tier never passes by not running.
package netlab
