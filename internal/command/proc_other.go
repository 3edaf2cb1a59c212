//go:build !linux

package command

import (
	"errors"
	"os"
	"syscall"
)

// Process groups, parent-death signals and WNOWAIT are what make Run safe;
// without them it refuses to run anything.
var errUnsupported = errors.New("running commands needs Linux")

func sysProcAttr(string) (*syscall.SysProcAttr, error) { return nil, errUnsupported }

func waitExited(int) error { return errUnsupported }

func killGroup(int) {}

func signalName(*os.ProcessState) string { return "" }
