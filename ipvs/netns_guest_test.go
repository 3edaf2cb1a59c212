//go:build vmguest

package ipvs

import (
	"runtime"
	"testing"

	"github.com/vishvananda/netns"
)

// inNewNetns runs fn on a locked OS thread that has been moved into a fresh
// network namespace. Netlink sockets opened by fn and processes it starts
// (os/exec forks from the calling thread) live in that namespace. The
// thread returns to the original namespace afterwards, also when fn calls
// t.Fatal; if that fails, the thread stays locked and dies with the
// goroutine instead of leaking the namespace into other goroutines.
func inNewNetns(t *testing.T, fn func()) {
	t.Helper()
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatalf("netns.Get: %v", err)
	}
	defer orig.Close()
	ns, err := netns.New()
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatalf("netns.New: %v", err)
	}
	defer ns.Close()
	defer func() {
		if err := netns.Set(orig); err != nil {
			t.Errorf("returning to the original netns: %v", err)
			return // keep the thread locked: it is discarded with the goroutine
		}
		runtime.UnlockOSThread()
	}()
	fn()
}
