package control

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// dialEnv makes the test binary a client: it calls the socket named with
// a status request and prints the answer.
const dialEnv = "DIRECTORD_CONTROL_TEST_DIAL"

func TestMain(m *testing.M) {
	if path := os.Getenv(dialEnv); path != "" {
		os.Exit(dialOnce(path))
	}
	os.Exit(m.Run())
}

func dialOnce(path string) int {
	r, err := Call(path, Request{Command: CmdStatus}, 5*time.Second)
	if err != nil {
		fmt.Println("call:", err)
		return 1
	}
	b, _ := json.Marshal(r)
	fmt.Println(string(b))
	return 0
}

// A user other than root and the daemon's own is refused by its peer
// credentials even when the socket's mode would let it connect (a chmod
// by hand, a permissive umask on another path).
func TestPeerOtherThanRootIsRefused(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run a client as another user")
	}
	var logMu sync.Mutex
	var logBuf bytes.Buffer
	log := slog.New(slog.NewTextHandler(writerFunc(func(b []byte) (int, error) {
		logMu.Lock()
		defer logMu.Unlock()
		return logBuf.Write(b)
	}), nil))
	s, err := Listen(filepath.Join(t.TempDir(), "run", "directord.sock"), &fakeHandler{}, log)
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve()
	t.Cleanup(func() { s.Close() })
	for p := s.Path(); p != "/" && p != "."; p = filepath.Dir(p) {
		if p == os.TempDir() {
			break
		}
		mode := os.FileMode(0o755)
		if p == s.Path() {
			mode = 0o666
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
	}
	// The client runs as nobody, so from a copy nobody can reach.
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	exe := filepath.Join(filepath.Dir(s.Path()), "client")
	if err := os.WriteFile(exe, b, 0o755); err != nil {
		t.Fatal(err)
	}
	run := func(uid uint32) string {
		t.Helper()
		cmd := exec.Command(exe)
		cmd.Env = append(os.Environ(), dialEnv+"="+s.Path())
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("client as uid %d: %v: %s", uid, err, out)
		}
		return string(out)
	}
	if out := run(65534); !strings.Contains(out, `"error":"permission denied: the control socket is for root"`) || strings.Contains(out, "VI_1") {
		t.Errorf("uid 65534 got %q, want refused", out)
	}
	if out := run(0); !strings.Contains(out, `"ok":true`) || !strings.Contains(out, "VI_1") {
		t.Errorf("root got %q, want the status", out)
	}
	logMu.Lock()
	logged := logBuf.String()
	logMu.Unlock()
	if strings.Count(logged, "refused a client that is not root") != 1 || !strings.Contains(logged, "uid=65534") {
		t.Errorf("log %q, want one refusal naming uid 65534", logged)
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(b []byte) (int, error) { return f(b) }
