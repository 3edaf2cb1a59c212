package command

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// BasePath is the PATH every command starts with. Nothing else is inherited
// from the daemon's environment, so secrets passed to directord (or set by
// its service manager) never reach scripts.
const BasePath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// MaxOutput is how much of a command's combined stdout and stderr Run keeps:
// the last MaxOutput bytes. The rest is read and dropped, so a chatty script
// neither blocks on a full pipe nor grows the daemon's memory.
const MaxOutput = 4 << 10

// pipeGrace bounds how long Run keeps reading output after the command's own
// process has exited. A background child that inherited stdout keeps the
// pipe open; without a bound, Run would wait for that child to exit.
const pipeGrace = 200 * time.Millisecond

// Spec describes one command to run.
type Spec struct {
	// Argv is the program and its arguments; no shell is involved. A
	// program name without a slash is looked up in the command's PATH
	// (BasePath unless Env sets PATH), not the daemon's.
	Argv []string
	// User runs the command as this user: its uid and primary gid, with
	// the supplementary groups cleared. "" runs it as the daemon's user.
	User string
	// Timeout kills the command's process group after this long; 0 = none.
	Timeout time.Duration
	// Env is extra KEY=VALUE entries, added to BasePath (a later entry for
	// the same key wins, so Env may replace PATH).
	Env []string
	// Dir is the working directory; "" = "/".
	Dir string
}

// Result is the outcome of one run.
type Result struct {
	// ExitCode is the exit status, or -1 if the command was killed by a
	// signal or could not start.
	ExitCode int
	// Signal names the signal that killed the command ("killed" when the
	// timeout or a cancellation killed it); "" if it exited.
	Signal string
	// TimedOut is true when Spec.Timeout expired and the kill ended the run.
	TimedOut bool
	// Duration is the wall time of the run, including the start.
	Duration time.Duration
	// Output is the tail (at most MaxOutput bytes) of the combined stdout
	// and stderr, for logs.
	Output []byte
	// Err says why the command could not be started or waited for
	// ("start /x: no such file or directory"). It is nil for a command that
	// ran, whatever its exit status or signal.
	Err error
}

// Run runs s and waits for it. It never returns before the command's own
// process has exited and been reaped. When ctx is done or s.Timeout expires,
// the whole process group gets SIGKILL, so a hanging script and the children
// it forked all die. Children that outlive a normal exit of the command are
// left alone (a notify hook may start something on purpose), but Run stops
// reading their output shortly after the command exits.
func Run(ctx context.Context, s Spec) Result {
	start := time.Now()
	r := run(ctx, s)
	r.Duration = time.Since(start)
	return r
}

func run(ctx context.Context, s Spec) Result {
	failed := func(err error) Result { return Result{ExitCode: -1, Err: err} }
	if len(s.Argv) == 0 || s.Argv[0] == "" {
		return failed(errors.New("start: empty command"))
	}
	name := s.Argv[0]
	env := append([]string{BasePath}, s.Env...)
	dir := s.Dir
	if dir == "" {
		dir = "/"
	}
	// With SysProcAttr set, os.StartProcess blames a missing directory on
	// the program ("fork/exec /bin/true: no such file or directory"), so
	// check it here to say what is really missing.
	if fi, err := os.Stat(dir); err != nil {
		return failed(fmt.Errorf("start %s: chdir %s: %w", name, dir, unwrapPath(err)))
	} else if !fi.IsDir() {
		return failed(fmt.Errorf("start %s: chdir %s: not a directory", name, dir))
	}
	path, err := lookPath(name, env, dir)
	if err != nil {
		return failed(fmt.Errorf("start %s: %w", name, err))
	}
	attr, err := sysProcAttr(s.User)
	if err != nil {
		return failed(fmt.Errorf("start %s: %w", name, err))
	}
	if err := ctx.Err(); err != nil {
		return failed(fmt.Errorf("start %s: %w", name, err))
	}

	out := &tailBuffer{max: MaxOutput}
	cmd := &exec.Cmd{
		Path:        path,
		Args:        s.Argv,
		Env:         env,
		Dir:         dir,
		Stdout:      out, // the same writer twice: exec shares one pipe
		Stderr:      out,
		SysProcAttr: attr,
		WaitDelay:   pipeGrace,
	}

	// Pdeathsig fires when the thread that forked the child exits, not the
	// process. Go ends a thread when a goroutine locked to it returns
	// (netns code does this), so keep this goroutine on its thread until
	// the child is gone; no other goroutine can then lock it and exit.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()

	if err := cmd.Start(); err != nil {
		return failed(fmt.Errorf("start %s: %w", name, unwrapPath(err)))
	}
	pid := cmd.Process.Pid

	var timeout <-chan time.Time
	if s.Timeout > 0 {
		t := time.NewTimer(s.Timeout)
		defer t.Stop()
		timeout = t.C
	}
	exited := make(chan struct{})
	why := make(chan killReason, 1)
	go func() {
		r := killNone
		select {
		case <-exited:
		case <-timeout:
			r = killTimeout
		case <-ctx.Done():
			r = killCancel
		}
		if r != killNone {
			// The leader is not reaped before this goroutine reports
			// back, so its pid, which is the group id, cannot have been
			// reused by an unrelated process group.
			killGroup(pid)
		}
		why <- r
	}()
	waitErr := waitExited(pid)
	close(exited)
	killed := <-why

	err = cmd.Wait() // reaps the leader, then drains (or gives up on) the pipe
	r := Result{ExitCode: -1, Output: out.bytes()}
	ps := cmd.ProcessState
	if ps == nil {
		if waitErr == nil {
			waitErr = err
		}
		r.Err = fmt.Errorf("wait %s: %w", name, waitErr)
		return r
	}
	r.ExitCode = ps.ExitCode()
	r.Signal = signalName(ps)
	r.TimedOut = killed == killTimeout && r.Signal != ""
	return r
}

type killReason uint8

const (
	killNone killReason = iota
	killTimeout
	killCancel
)

// unwrapPath drops the *fs.PathError layer ("fork/exec /x: ...") so errors
// read "start /x: no such file or directory".
func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// lookPath resolves a program name without a slash against the PATH the
// command will get, like execvp in the child would, rather than against the
// daemon's PATH as exec.LookPath does.
func lookPath(name string, env []string, dir string) (string, error) {
	if strings.Contains(name, "/") {
		if !filepath.IsAbs(name) {
			// Relative to the command's directory, not the daemon's.
			return filepath.Join(dir, name), nil
		}
		return name, nil
	}
	pathList := ""
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			pathList = v // the last one wins, as in the child
		}
	}
	for _, d := range filepath.SplitList(pathList) {
		if d == "" || !filepath.IsAbs(d) {
			continue // "" and relative entries would depend on Dir; skip them
		}
		p := filepath.Join(d, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", exec.ErrNotFound
}

// LookupUser resolves a user name to its uid and primary gid. Callers use
// it when loading the configuration, to refuse an unknown user before
// anything runs.
func LookupUser(name string) (uid, gid uint32, err error) {
	u, err := user.Lookup(name)
	if err != nil {
		return 0, 0, fmt.Errorf("look up user %q: %w", name, err)
	}
	id, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return 0, 0, fmt.Errorf("look up user %q: uid %q: %w", name, u.Uid, err)
	}
	g, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return 0, 0, fmt.Errorf("look up user %q: gid %q: %w", name, u.Gid, err)
	}
	return uint32(id), uint32(g), nil
}

// DefaultUser is the user scripts run as when the configuration names none:
// "nobody" if that user exists. Otherwise it returns an error, and the
// daemon refuses to start rather than run scripts as root by surprise.
func DefaultUser() (string, error) {
	const nobody = "nobody"
	if _, _, err := LookupUser(nobody); err != nil {
		return "", fmt.Errorf("scripts need an explicit user (no default user): %w", err)
	}
	return nobody, nil
}

// tailBuffer keeps the last max bytes written to it. exec.Cmd writes to it
// from one goroutine and Run reads it only after Wait, so it needs no lock.
type tailBuffer struct {
	buf []byte
	max int
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	n := len(p)
	if n >= b.max {
		b.buf = append(b.buf[:0], p[n-b.max:]...)
		return n, nil
	}
	if over := len(b.buf) + n - b.max; over > 0 {
		b.buf = b.buf[:copy(b.buf, b.buf[over:])]
	}
	if b.buf == nil {
		b.buf = make([]byte, 0, b.max)
	}
	b.buf = append(b.buf, p...)
	return n, nil
}

func (b *tailBuffer) bytes() []byte {
	if len(b.buf) == 0 {
		return nil
	}
	return b.buf
}
