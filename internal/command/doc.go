// Package command runs the external programs directord starts on its own:
// tracked scripts (vrrp.scripts), notify hooks and exec health checks. A
// command is an argv list run without a shell, with a minimal environment,
// stdin on /dev/null, optionally as another user with no supplementary
// groups, in its own process group so that a timeout or cancellation kills
// everything it spawned, and with a parent-death signal so a crashed daemon
// leaves no runaway children. Its combined output is captured through a
// bounded buffer (the last 4 KiB) for logs, and every run reports a typed
// Result (exit code, signal, timeout, start error) instead of an error to
// pick apart.
package command
