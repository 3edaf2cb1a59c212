// Package sdnotify speaks systemd's notification protocol (sd_notify(3)):
// READY, RELOADING, STOPPING, STATUS and WATCHDOG datagrams to the socket
// named by $NOTIFY_SOCKET. Outside systemd it does nothing.
package sdnotify

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// Notify sends state (lines like "READY=1") to the service manager. It
// returns nil without $NOTIFY_SOCKET.
func Notify(state string) error {
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return nil
	}
	if path[0] == '@' {
		path = "\x00" + path[1:] // abstract namespace
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("sd_notify: %w", err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(state)); err != nil {
		return fmt.Errorf("sd_notify: %w", err)
	}
	return nil
}

// Ready tells the service manager that startup is complete.
func Ready(status string) error { return Notify("READY=1\nSTATUS=" + status) }

// Reloading tells it that a reload started; Ready ends it. MONOTONIC_USEC
// lets Type=notify-reload services match the reload to the request.
func Reloading() error {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return err
	}
	usec := ts.Sec*1e6 + ts.Nsec/1e3
	return Notify("RELOADING=1\nMONOTONIC_USEC=" + strconv.FormatInt(usec, 10))
}

// Stopping tells it that shutdown started.
func Stopping() error { return Notify("STOPPING=1") }

// Watchdog pings the watchdog.
func Watchdog() error { return Notify("WATCHDOG=1") }

// WatchdogInterval is how often to ping the watchdog: half of
// $WATCHDOG_USEC, or 0 when the watchdog is off or meant for another
// process ($WATCHDOG_PID).
func WatchdogInterval() time.Duration {
	usec, err := strconv.ParseInt(os.Getenv("WATCHDOG_USEC"), 10, 64)
	if err != nil || usec <= 0 {
		return 0
	}
	if pid := os.Getenv("WATCHDOG_PID"); pid != "" && pid != strconv.Itoa(os.Getpid()) {
		return 0
	}
	return time.Duration(usec) * time.Microsecond / 2
}
