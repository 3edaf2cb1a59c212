package command

import (
	"errors"
	"fmt"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// sysProcAttr puts the child in its own process group (so the group can be
// killed as one), has the kernel SIGKILL it if the daemon dies, and switches
// to userName's uid and gid with an empty supplementary group list.
func sysProcAttr(userName string) (*syscall.SysProcAttr, error) {
	attr := &syscall.SysProcAttr{
		Setpgid:   true,
		Pdeathsig: syscall.SIGKILL,
	}
	if userName == "" {
		return attr, nil
	}
	uid, gid, err := LookupUser(userName)
	if err != nil {
		return nil, err
	}
	if os.Geteuid() != 0 && uint32(os.Geteuid()) == uid && uint32(os.Getegid()) == gid {
		// Already that user; setgroups would fail without CAP_SETGID.
		return attr, nil
	}
	// Groups empty and NoSetGroups false: the child calls setgroups(0, nil)
	// and drops the daemon's supplementary groups.
	attr.Credential = &syscall.Credential{Uid: uid, Gid: gid}
	return attr, nil
}

// waitExited blocks until the child pid has exited but leaves it a zombie
// (WNOWAIT), so its pid, and with it the process group id, stays reserved
// until exec.Cmd.Wait reaps it.
func waitExited(pid int) error {
	for {
		var info unix.Siginfo
		err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("waitid %d: %w", pid, err)
		}
		return nil
	}
}

// killGroup sends SIGKILL to every process in the group led by pid.
func killGroup(pid int) {
	_ = unix.Kill(-pid, unix.SIGKILL) // ESRCH: the group is already gone
}

func signalName(ps *os.ProcessState) string {
	ws, ok := ps.Sys().(syscall.WaitStatus)
	if !ok || !ws.Signaled() {
		return ""
	}
	return ws.Signal().String()
}
