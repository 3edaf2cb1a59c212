package sync

import (
	"flag"
)

// update regenerates the golden datagrams in testdata: go test -run TestVM
// -update ./sync boots the VM, captures what its kernel sends, and writes
// it here.
var update = flag.Bool("update", false, "capture the golden sync datagrams in the VM and rewrite testdata")

// guestEnv passes -update into the guest.
func guestEnv() []string {
	if *update {
		return []string{"DIRECTORD_SYNC_UPDATE=1"}
	}
	return nil
}
