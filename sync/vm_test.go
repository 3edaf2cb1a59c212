package sync

import (
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/directord/directord/internal/vmtest"
)

// TestVM runs this package's guest tests (the kernel's sync daemons, its
// datagrams, directord failing over with live connections) in one VM boot.
// With -update, the golden datagrams the guest captures are written to
// testdata. DIRECTORD_SYNC_GUEST_RUN narrows the guest tests run (a
// -test.run pattern), for working on one of them.
func TestVM(t *testing.T) {
	var golden []string
	guestRun := "^TestGuest"
	if v := os.Getenv("DIRECTORD_SYNC_GUEST_RUN"); v != "" {
		guestRun = v
	}
	vmtest.Run(t, vmtest.Options{Run: guestRun, Binaries: []string{"./cmd/directord"}, Env: guestEnv(),
		Console: func(line string) {
			if i := strings.Index(line, "SYNC-GOLDEN "); i >= 0 {
				golden = append(golden, line[i+len("SYNC-GOLDEN "):])
			}
		}})
	if !*update {
		return
	}
	if len(golden) == 0 {
		t.Fatal("-update: the guest captured no golden datagrams")
	}
	for _, g := range golden {
		name, h, ok := strings.Cut(strings.TrimSpace(g), " ")
		b, err := hex.DecodeString(h)
		if !ok || err != nil || strings.ContainsAny(name, "/.") {
			t.Fatalf("-update: bad golden line %q", g)
		}
		if err := os.WriteFile(filepath.Join("testdata", name+".bin"), b, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote testdata/%s.bin (%d bytes)", name, len(b))
	}
}
