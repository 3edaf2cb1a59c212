//go:build linux

package command

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func sh(script string, args ...string) []string {
	return append([]string{"/bin/sh", "-c", script, "sh"}, args...)
}

func TestExitStatusIsReportedAsIs(t *testing.T) {
	for _, code := range []int{0, 1, 2, 42, 255} {
		t.Run(strconv.Itoa(code), func(t *testing.T) {
			r := Run(t.Context(), Spec{Argv: sh("exit " + strconv.Itoa(code))})
			if r.Err != nil || r.ExitCode != code || r.Signal != "" || r.TimedOut {
				t.Fatalf("Run = %+v, want exit %d, no signal, no error", r, code)
			}
		})
	}
}

func TestSignalDeathIsNotAnExitCode(t *testing.T) {
	r := Run(t.Context(), Spec{Argv: sh("kill -TERM $$")})
	if r.Err != nil || r.ExitCode != -1 || r.Signal != "terminated" || r.TimedOut {
		t.Fatalf("Run = %+v, want exit -1, signal terminated, not timed out", r)
	}
}

// pidGone waits until pid is no longer running (gone, or a zombie waiting
// for whoever inherited it).
func pidGone(t *testing.T, pid int, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return
		}
		// state is the field after "(comm)"
		if i := bytes.LastIndexByte(b, ')'); i >= 0 && len(b) > i+2 && (b[i+2] == 'Z' || b[i+2] == 'X') {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("pid %d still running after %v: %s", pid, within, b)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func readPid(t *testing.T, file string) int {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("read pid file: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("pid file %q: %v", b, err)
	}
	return pid
}

func TestTimeoutKillsTheWholeProcessGroup(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "grandchild")
	const timeout = 300 * time.Millisecond
	start := time.Now()
	// The grandchild holds the output pipe too: Run must not wait for it.
	r := Run(t.Context(), Spec{
		Argv:    sh(`sleep 100 & echo $! > "$1"; sleep 100`, pidFile),
		Timeout: timeout,
	})
	took := time.Since(start)
	if !r.TimedOut || r.Signal != "killed" || r.ExitCode != -1 || r.Err != nil {
		t.Fatalf("Run = %+v, want timed out, killed", r)
	}
	if took < timeout || took > timeout+500*time.Millisecond {
		t.Errorf("Run took %v, want about %v", took, timeout)
	}
	pidGone(t, readPid(t, pidFile), 2*time.Second)
}

func TestCancelKillsTheWholeProcessGroup(t *testing.T) {
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "grandchild")
	ctx, cancel := context.WithCancel(t.Context())
	go func() {
		for ctx.Err() == nil {
			if _, err := os.Stat(pidFile); err == nil {
				cancel()
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	start := time.Now()
	r := Run(ctx, Spec{Argv: sh(`sleep 100 & echo $! > "$1.tmp"; mv "$1.tmp" "$1"; wait`, pidFile)})
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("Run took %v after cancel", took)
	}
	if r.TimedOut || r.Signal != "killed" || r.Err != nil {
		t.Fatalf("Run = %+v, want killed, not timed out", r)
	}
	pidGone(t, readPid(t, pidFile), 2*time.Second)
}

func TestCancelledContextDoesNotStart(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	r := Run(ctx, Spec{Argv: []string{"/bin/true"}})
	if !errors.Is(r.Err, context.Canceled) || r.ExitCode != -1 {
		t.Fatalf("Run = %+v, want not started with context.Canceled", r)
	}
}

func TestStartErrorsNameTheProgram(t *testing.T) {
	notExec := filepath.Join(t.TempDir(), "not-executable")
	if err := os.WriteFile(notExec, []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		argv []string
		dir  string
		want string
	}{
		{[]string{"/nonexistent/prog", "x"}, "", "start /nonexistent/prog: no such file or directory"},
		{[]string{"no-such-program-directord"}, "", "start no-such-program-directord: executable file not found in $PATH"},
		{[]string{notExec}, "", "start " + notExec + ": permission denied"},
		{[]string{"/bin/true"}, "/nonexistent", "start /bin/true: chdir /nonexistent: no such file or directory"},
		{nil, "", "start: empty command"},
	} {
		r := Run(t.Context(), Spec{Argv: tc.argv, Dir: tc.dir})
		if r.Err == nil || r.Err.Error() != tc.want || r.ExitCode != -1 {
			t.Errorf("Run(%q) = %+v, want Err %q and exit -1", tc.argv, r, tc.want)
		}
	}
}

func TestProgramIsFoundInTheCommandsPathNotTheDaemons(t *testing.T) {
	dir := t.TempDir()
	prog := filepath.Join(dir, "only-here")
	if err := os.WriteFile(prog, []byte("#!/bin/sh\necho found\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir+":"+os.Getenv("PATH"))
	if r := Run(t.Context(), Spec{Argv: []string{"only-here"}}); r.Err == nil {
		t.Errorf("found %q through the daemon's PATH: %+v", "only-here", r)
	}
	r := Run(t.Context(), Spec{Argv: []string{"only-here"}, Env: []string{"PATH=" + dir}})
	if r.Err != nil || string(r.Output) != "found\n" {
		t.Errorf("with PATH in Env: %+v, want output found", r)
	}
}

func TestOutputKeepsOnlyTheTail(t *testing.T) {
	// 1 MiB of 'a' then a marker: only the last MaxOutput bytes survive.
	r := Run(t.Context(), Spec{Argv: sh(`head -c 1048576 /dev/zero | tr '\0' a; echo; echo END >&2`)})
	if r.Err != nil || r.ExitCode != 0 {
		t.Fatalf("Run = %+v", r)
	}
	if len(r.Output) != MaxOutput {
		t.Fatalf("kept %d bytes, want %d", len(r.Output), MaxOutput)
	}
	if !bytes.HasSuffix(r.Output, []byte("a\nEND\n")) {
		t.Errorf("output does not end with the tail: %q", r.Output[len(r.Output)-16:])
	}
}

func TestTailBufferKeepsTheLastBytesOfManyWrites(t *testing.T) {
	b := &tailBuffer{max: 8}
	var all []byte
	for i := range 100 {
		p := []byte(strconv.Itoa(i))
		all = append(all, p...)
		if n, err := b.Write(p); n != len(p) || err != nil {
			t.Fatalf("Write = %d, %v", n, err)
		}
		want := all[max(0, len(all)-8):]
		if !bytes.Equal(b.bytes(), want) {
			t.Fatalf("after %d writes: %q, want %q", i+1, b.bytes(), want)
		}
	}
	if cap(b.buf) > 8 {
		t.Errorf("buffer grew to %d", cap(b.buf))
	}
}

func TestEnvironmentIsMinimal(t *testing.T) {
	t.Setenv("DIRECTORD_TEST_SECRET", "hunter2")
	r := Run(t.Context(), Spec{Argv: []string{"env"}, Env: []string{"EXTRA=1"}})
	if r.Err != nil || r.ExitCode != 0 {
		t.Fatalf("Run = %+v", r)
	}
	got := strings.Split(strings.TrimSpace(string(r.Output)), "\n")
	want := []string{BasePath, "EXTRA=1"}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("child environment = %q, want %q", got, want)
	}
}

func TestStdinIsDevNullAndNoDescriptorsLeak(t *testing.T) {
	f, err := os.Open("/etc/hostname") // open in the daemon; must not reach the child
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r := Run(t.Context(), Spec{Argv: sh(`readlink /proc/$$/fd/0; ls /proc/$$/fd`)})
	if r.Err != nil || r.ExitCode != 0 {
		t.Fatalf("Run = %+v", r)
	}
	lines := strings.Fields(string(r.Output))
	if len(lines) == 0 || lines[0] != "/dev/null" {
		t.Fatalf("stdin is %q, want /dev/null", lines)
	}
	for _, fd := range lines[1:] {
		if n, _ := strconv.Atoi(fd); n > 2 && n < 10 { // dash keeps a private fd >= 10
			t.Errorf("child has fd %s open: %q", fd, lines[1:])
		}
	}
}

func TestWorkingDirectoryDefaultsToRoot(t *testing.T) {
	r := Run(t.Context(), Spec{Argv: []string{"pwd"}})
	if string(r.Output) != "/\n" {
		t.Errorf("pwd = %q, want /", r.Output)
	}
}

func TestRunsAsNobodyWithoutSupplementaryGroups(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("switching users needs root")
	}
	uid, gid, err := LookupUser("nobody")
	if err != nil {
		t.Skipf("no nobody user here: %v", err)
	}
	r := Run(t.Context(), Spec{Argv: sh(`id -u; id -g; id -G`), User: "nobody"})
	if r.Err != nil || r.ExitCode != 0 {
		t.Fatalf("Run = %+v", r)
	}
	want := fmt.Sprintf("%d\n%d\n%d\n", uid, gid, gid)
	if string(r.Output) != want {
		t.Errorf("id -u, -g, -G = %q, want %q", r.Output, want)
	}
}

func TestUnknownUserIsAStartError(t *testing.T) {
	r := Run(t.Context(), Spec{Argv: []string{"/bin/true"}, User: "no-such-user-directord"})
	if r.Err == nil || !strings.Contains(r.Err.Error(), `look up user "no-such-user-directord"`) || r.ExitCode != -1 {
		t.Errorf("Run = %+v, want a user lookup error", r)
	}
	if _, _, err := LookupUser("no-such-user-directord"); err == nil {
		t.Error("LookupUser found a user that does not exist")
	}
}

func TestDefaultUserIsNobody(t *testing.T) {
	if _, _, err := LookupUser("nobody"); err != nil {
		t.Skipf("no nobody user here: %v", err)
	}
	if u, err := DefaultUser(); u != "nobody" || err != nil {
		t.Errorf("DefaultUser() = %q, %v, want nobody", u, err)
	}
}

func TestBackgroundChildDoesNotHoldRunOpen(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "bg")
	start := time.Now()
	r := Run(t.Context(), Spec{Argv: sh(`sleep 100 & echo $! > "$1"; echo done`, pidFile)})
	pid := readPid(t, pidFile)
	t.Cleanup(func() { syscall.Kill(pid, syscall.SIGKILL) })
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("Run waited %v for a background child's output", took)
	}
	if r.Err != nil || r.ExitCode != 0 || !strings.HasPrefix(string(r.Output), "done") {
		t.Errorf("Run = %+v, want exit 0 with output", r)
	}
}

// The helper "daemon" for TestDaemonDeathKillsTheChild: runs a command that
// would live for 100 seconds, then gets SIGKILLed by the test.
func TestMain(m *testing.M) {
	if pidFile := os.Getenv("DIRECTORD_COMMAND_HELPER_PIDFILE"); pidFile != "" {
		Run(context.Background(), Spec{Argv: sh(`echo $$ > "$1.tmp"; mv "$1.tmp" "$1"; exec sleep 100`, pidFile)})
		os.Exit(3)
	}
	os.Exit(m.Run())
}

func TestDaemonDeathKillsTheChild(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "child")
	helper := exec.Command(os.Args[0], "-test.run=^$")
	helper.Env = append(os.Environ(), "DIRECTORD_COMMAND_HELPER_PIDFILE="+pidFile)
	if err := helper.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := os.Stat(pidFile); err == nil {
			break
		}
		if time.Now().After(deadline) {
			helper.Process.Kill()
			helper.Wait()
			t.Fatal("helper never started its child")
		}
		time.Sleep(5 * time.Millisecond)
	}
	child := readPid(t, pidFile)
	helper.Process.Kill()
	helper.Wait()
	pidGone(t, child, 2*time.Second)
}

func TestConcurrentRunsLeakNoGoroutines(t *testing.T) {
	before := runtime.NumGoroutine()
	var wg sync.WaitGroup
	errs := make(chan string, 200)
	for i := range 200 {
		wg.Go(func() {
			spec := Spec{Argv: sh("exit $1", strconv.Itoa(i%3))}
			if i%10 == 0 {
				spec = Spec{Argv: sh("sleep 10"), Timeout: 50 * time.Millisecond}
			}
			r := Run(t.Context(), spec)
			if i%10 == 0 && !r.TimedOut || i%10 != 0 && r.ExitCode != i%3 {
				errs <- fmt.Sprintf("run %d: %+v", i, r)
			}
		})
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	deadline := time.Now().Add(2 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("goroutines: %d before, %d after\n%s", before, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}
