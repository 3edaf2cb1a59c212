package netlab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"testing"
	"time"
)

// ErrTimeout is returned by Proc.Wait when the process is still running.
var ErrTimeout = errors.New("process still running")

// logTail bounds how much of a process's output teardown logs, so a chatty
// daemon does not bury the failure it is meant to explain.
const logTail = 16 << 10

// Proc is a background process running inside a host, in its own process
// group, with stdout and stderr captured together.
type Proc struct {
	// Argv is the command as given to Start.
	Argv []string

	host   *Host
	cmd    *exec.Cmd
	out    lockedBuffer
	pipe   *os.File      // read end of the output pipe
	copied chan struct{} // closed when the output pipe is drained or closed
	done   chan struct{} // closed when the process has been reaped
	err    error         // exit status, valid after done
	halted sync.Once     // stop's work, done once
}

// Start runs argv in the background inside the host. It is stopped
// (SIGTERM to its process group, SIGKILL after a grace period) by a
// cleanup registered now, so before the cleanups registered earlier run:
// a directory the test made for it (t.TempDir) is removed only after it
// has stopped writing there. The lab logs its output at teardown, which is
// where a daemon's complaints end up when a test fails. The output pipe is
// not shared with the test binary, so daemons that fork and keep it open
// cannot block anything.
func (h *Host) Start(argv ...string) *Proc {
	t := h.lab.t
	t.Helper()
	p, err := h.start(argv)
	if err != nil {
		t.Fatalf("netlab: %v", err)
	}
	t.Cleanup(func() { p.stop(stopGrace) })
	return p
}

func (h *Host) start(argv []string) (*Proc, error) {
	if len(argv) == 0 {
		return nil, fmt.Errorf("start in %s: empty command", h.Label)
	}
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("start %q in %s: output pipe: %w", argv, h.Label, err)
	}
	cmd := h.command(context.Background(), argv)
	cmd.Stdout, cmd.Stderr = w, w
	p := &Proc{
		Argv:   argv,
		host:   h,
		cmd:    cmd,
		pipe:   r,
		copied: make(chan struct{}),
		done:   make(chan struct{}),
	}

	// Holding the lock across the start keeps teardown from missing a
	// process that starts while the lab closes.
	h.lab.mu.Lock()
	defer h.lab.mu.Unlock()
	if h.lab.closed {
		r.Close()
		w.Close()
		return nil, fmt.Errorf("start %q in %s: lab closed", argv, h.Label)
	}
	err = h.startIn(cmd)
	w.Close() // the child has its copy; EOF comes when it and its heirs exit
	if err != nil {
		r.Close()
		return nil, fmt.Errorf("start %q in %s: %w", argv, h.Label, err)
	}
	h.lab.procs = append(h.lab.procs, p)
	go func() {
		defer close(p.copied)
		io.Copy(&p.out, r)
	}()
	go func() {
		defer close(p.done)
		p.err = cmd.Wait()
		// Let Output after Wait see the last lines, unless an heir that
		// left the process group keeps the pipe open.
		select {
		case <-p.copied:
		case <-time.After(time.Second):
		}
	}()
	return p, nil
}

// Pid is the process id (and process group id) of the command.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Done is closed once the process has exited and been reaped and its
// output collected.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Output returns everything the process wrote so far, stdout and stderr
// interleaved as written.
func (p *Proc) Output() []byte { return p.out.Bytes() }

// Signal sends sig to the process itself, not its group: a daemon such as
// keepalived is meant to pass a SIGTERM on to its children itself.
func (p *Proc) Signal(sig syscall.Signal) error {
	if err := p.cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("signal %v to %q in %s: %w", sig, p.Argv, p.host.Label, err)
	}
	return nil
}

// Kill sends SIGKILL to the whole process group, which is how a test
// simulates a crash that takes the daemon and its helpers down at once.
func (p *Proc) Kill() error { return p.signalGroup(syscall.SIGKILL) }

func (p *Proc) signalGroup(sig syscall.Signal) error {
	err := syscall.Kill(-p.Pid(), sig)
	if err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("signal %v to process group %d (%q in %s): %w", sig, p.Pid(), p.Argv, p.host.Label, err)
	}
	return nil
}

// Wait waits up to timeout for the process to exit and returns its exit
// status as exec.Cmd.Wait reports it (nil for a zero exit, *exec.ExitError
// otherwise), or an error wrapping ErrTimeout if it is still running.
func (p *Proc) Wait(timeout time.Duration) error {
	select { // an exited process wins over an already expired timer
	case <-p.done:
		return p.err
	default:
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-p.done:
		return p.err
	case <-t.C:
		return fmt.Errorf("%q in %s after %v: %w", p.Argv, p.host.Label, timeout, ErrTimeout)
	}
}

// stop ends the process group politely, then not, and drains the output.
func (p *Proc) stop(grace time.Duration) {
	p.halted.Do(func() { p.halt(grace) })
}

func (p *Proc) halt(grace time.Duration) {
	select {
	case <-p.done:
	default:
		p.signalGroup(syscall.SIGTERM)
		if p.Wait(grace) != nil {
			p.signalGroup(syscall.SIGKILL)
			p.Wait(5 * time.Second)
		}
	}
	// Members of the group may outlive its leader.
	p.signalGroup(syscall.SIGKILL)
	select {
	case <-p.copied:
	case <-time.After(time.Second):
		// Something that left the group still holds the pipe.
	}
	p.pipe.Close()
}

func (p *Proc) logOutput(t testing.TB) {
	status := "still running"
	select {
	case <-p.done:
		status = fmt.Sprintf("exit: %v", p.err)
		if p.err == nil {
			status = "exit: 0"
		}
	default:
	}
	out := p.Output()
	if len(out) > logTail {
		out = append([]byte("[...]"), out[len(out)-logTail:]...)
	}
	t.Logf("netlab: %q in %s (pid %d), %s; output:\n%s", p.Argv, p.host.Label, p.Pid(), status, out)
}

// lockedBuffer is a bytes.Buffer safe for one writer and many readers.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return bytes.Clone(b.buf.Bytes())
}

// Busy starts n busy-looping processes, in no namespace of the lab, for
// the rest of the test: load for benchmarks that measure timing under a
// saturated CPU. They are killed at cleanup, and with the test binary if
// it dies first.
func Busy(t testing.TB, n int) {
	t.Helper()
	for range n {
		cmd := exec.Command("sh", "-c", "while :; do :; done")
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			t.Fatalf("netlab: start a busy process: %v", err)
		}
		t.Cleanup(func() {
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			_ = cmd.Wait()
		})
	}
}
