package netlab

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

var (
	binMu   sync.Mutex
	binDir  string
	binPath = map[string]string{}
)

// Binary builds the module's package pkg (e.g. "./cmd/directord") once per
// test process and returns the path of the executable, so tests run the
// product itself in their namespaces.
func Binary(t testing.TB, pkg string) string {
	t.Helper()
	binMu.Lock()
	defer binMu.Unlock()
	if p, ok := binPath[pkg]; ok {
		return p
	}
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatalf("netlab: go env GOMOD: %v", err)
	}
	root := filepath.Dir(strings.TrimSpace(string(out)))
	if binDir == "" {
		// Not t.TempDir: the binary outlives the test that built it.
		if binDir, err = os.MkdirTemp("", "netlab-bin-"); err != nil {
			t.Fatal(err)
		}
	}
	dst := filepath.Join(binDir, filepath.Base(pkg))
	cmd := exec.Command("go", "build", "-o", dst, pkg)
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("netlab: build %s: %v\n%s", pkg, err, b)
	}
	binPath[pkg] = dst
	return dst
}

// RemoveBinaries deletes what Binary built; call it from TestMain after
// the tests ran.
func RemoveBinaries() {
	binMu.Lock()
	defer binMu.Unlock()
	if binDir != "" {
		if err := os.RemoveAll(binDir); err != nil {
			fmt.Fprintln(os.Stderr, "netlab:", err)
		}
	}
}
