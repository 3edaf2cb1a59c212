package vmtest

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// GuestEnv is the environment variable set to "1" inside the guest.
const GuestEnv = "DIRECTORD_VM"

// InGuest reports whether the process runs inside a vmtest guest.
func InGuest() bool { return os.Getenv(GuestEnv) == "1" }

// Options configures one VM boot.
type Options struct {
	// Run is the -test.run pattern for the guest test binary. Default
	// "^TestGuest".
	Run string
	// Args are further arguments for the guest test binary, e.g.
	// "-test.count=1" or "-test.failfast".
	Args []string
	// Env holds extra KEY=VALUE pairs for the guest test binary.
	Env []string
	// Binaries are packages (module-relative, e.g. "./cmd/directord") built
	// with CGO_ENABLED=0 and installed as /bin/NAME in the guest. A build
	// failure fails the test.
	Binaries []string
	// Timeout bounds building the test binary, booting and the guest tests
	// (not preparing the cached image); qemu is killed when it expires.
	// Default 5 minutes, capped by the test's own deadline (go test
	// -timeout). The guest binary gets -test.timeout 30s shorter, so that a
	// hung guest test panics with stack traces before qemu is killed.
	Timeout time.Duration
	// MemoryMB is the guest memory. Default 1024.
	MemoryMB int
	// CPUs is the number of guest CPUs. Default 2.
	CPUs int
	// Console, if set, is called with each line of the guest's serial
	// console (control characters removed), besides logging it: a
	// benchmark parses its guest's result lines here.
	Console func(line string)
}

// ciEnv reports whether we run in CI, where a VM tier that cannot run fails.
func ciEnv() bool {
	v := strings.ToLower(os.Getenv("CI"))
	return v == "true" || v == "1"
}

// unavailable skips the test with reason, or fails it under CI=true.
func unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if ciEnv() {
		t.Fatalf("vmtest: VM tier unavailable and CI=true: %s", msg)
	}
	t.Skipf("vmtest: VM tier unavailable, skipping: %s (CI=true makes this a failure)", msg)
}

// Run builds the calling package's test binary with the build tag vmguest,
// boots it in a qemu guest running Debian's stock kernel (with IPVS) and
// fails t unless the guest test binary exits 0. The guest's serial console
// is streamed to t.Log. Guest tests live in files with
// "//go:build vmguest" and are selected by Options.Run.
//
// Run skips the test with a clear message when the VM cannot be prepared
// (no qemu, no apt, ...) and under -short. With CI=true it never skips: an
// unavailable VM fails the test and -short is ignored.
func Run(t *testing.T, opts Options) {
	t.Helper()
	run(t, opts, func(line string) { t.Helper(); t.Log(line) })
}

// RunB is Run for a benchmark: it boots the guest once, whatever b.N, and
// the caller reports what the guest measured (see Options.Console). The
// testing package keeps only the first lines of a benchmark's log, so the
// guest's console is logged only when b fails. A benchmark has no
// deadline of its own: only Options.Timeout bounds the guest.
func RunB(b *testing.B, opts Options) {
	b.Helper()
	var console []string
	defer func() {
		if b.Failed() && len(console) > 0 {
			b.Log("guest console:\n" + strings.Join(console, "\n"))
		}
	}()
	run(b, opts, func(line string) { console = append(console, line) })
}

// run is Run and RunB; logLine receives each console line.
func run(t testing.TB, opts Options, logLine func(string)) {
	t.Helper()
	if InGuest() {
		t.Skip("vmtest.Run called inside the guest")
	}
	if testing.Short() && !ciEnv() {
		t.Skip("vmtest: skipping VM test in -short mode (CI=true runs it anyway)")
	}
	if runtime.GOOS != "linux" {
		unavailable(t, "needs Linux (GOOS=%s)", runtime.GOOS)
	}
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		unavailable(t, "qemu-system-x86_64 not found (apt-get install -y qemu-system-x86)")
	}
	if opts.Run == "" {
		opts.Run = "^TestGuest"
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 5 * time.Minute
	}
	if opts.MemoryMB <= 0 {
		opts.MemoryMB = 1024
	}
	if opts.CPUs <= 0 {
		opts.CPUs = 2
	}
	start := time.Now()
	img, err := prepareImage(t.Logf)
	if err != nil {
		unavailable(t, "preparing the VM image: %v", err)
	}
	prep := time.Since(start)

	// The timeout counts from here: a cold image build (download) does
	// not eat into the guest's time.
	deadline := time.Now().Add(opts.Timeout)
	if dt, ok := t.(interface{ Deadline() (time.Time, bool) }); ok {
		if d, ok := dt.Deadline(); ok && d.Add(-10*time.Second).Before(deadline) {
			deadline = d.Add(-10 * time.Second)
		}
	}
	dir := t.TempDir()
	start = time.Now()
	payload, nonce, err := buildPayload(dir, opts, time.Until(deadline))
	if err != nil {
		t.Fatalf("vmtest: %v", err)
	}
	initrd := filepath.Join(dir, "initrd")
	if err := concatFiles(initrd, img.Base, payload); err != nil {
		t.Fatalf("vmtest: %v", err)
	}
	t.Logf("vmtest: kernel %s; image ready in %v, test binary built in %v",
		img.KernelVersion, prep.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))

	res := boot(t, qemu, img.Kernel, initrd, nonce, opts, deadline, logLine)
	if res.err != nil {
		t.Fatalf("vmtest: %v\nlast console lines:\n%s", res.err, strings.Join(res.tail, "\n"))
	}
	if res.exit != 0 {
		msg := fmt.Sprintf("vmtest: guest test binary exited with status %d", res.exit)
		if len(res.failed) > 0 {
			msg += "; failed: " + strings.Join(res.failed, ", ")
		}
		t.Fatal(msg + " (guest console above)")
	}
}

// goTool returns the go command running this test.
func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	if r := os.Getenv("GOROOT"); r != "" {
		return filepath.Join(r, "bin", "go")
	}
	return "go"
}

func goEnv() []string {
	return append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
}

// buildPayload builds the test binary (and opts.Binaries) and writes the
// per-run cpio archive, returning its path and the exit marker's nonce.
func buildPayload(dir string, opts Options, budget time.Duration) (_, _ string, err error) {
	gocmd := goTool()
	bin := filepath.Join(dir, "pkg.test")
	cmd := exec.Command(gocmd, "test", "-c", "-tags", "vmguest", "-o", bin, ".")
	cmd.Env = goEnv()
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", "", fmt.Errorf("building the guest test binary (go test -c -tags vmguest): %v\n%s", err, out)
	}
	if !exists(bin) {
		return "", "", errors.New("go test -c produced no test binary (no test files?)")
	}

	t := newFSTree()
	nb := make([]byte, 8)
	rand.Read(nb)
	nonce := hex.EncodeToString(nb)
	t.Data("vmtest/nonce", []byte(nonce+"\n"), 0o644)
	t.File("vmtest/pkg.test", bin, 0o755)
	t.Dir("vmtest/pkg")
	if st, err := os.Stat("testdata"); err == nil && st.IsDir() {
		if err := t.CopyDir("vmtest/pkg/testdata", "testdata"); err != nil {
			return "", "", err
		}
	}

	if len(opts.Binaries) > 0 {
		out, err := exec.Command(gocmd, "env", "GOMOD").Output()
		gomod := strings.TrimSpace(string(out))
		if err != nil || gomod == "" || gomod == os.DevNull {
			return "", "", fmt.Errorf("cannot find the module root (go env GOMOD: %q, %v)", gomod, err)
		}
		root := filepath.Dir(gomod)
		for _, b := range opts.Binaries {
			name := path.Base(strings.TrimSuffix(b, "/"))
			out := filepath.Join(dir, "bin", name)
			cmd := exec.Command(gocmd, "build", "-o", out, b)
			cmd.Dir = root
			cmd.Env = goEnv()
			if o, err := cmd.CombinedOutput(); err != nil {
				return "", "", fmt.Errorf("building %s for the guest: %v\n%s", b, err, o)
			}
			t.File("bin/"+name, out, 0o755)
		}
	}

	// Leave the guest binary time to report its own timeout (with stack
	// traces) before the host kills qemu.
	guestTimeout := budget - 30*time.Second
	if guestTimeout < 30*time.Second {
		guestTimeout = 30 * time.Second
	}
	var sh strings.Builder
	sh.WriteString("cd /vmtest/pkg || exit 125\n")
	sh.WriteString("export " + GuestEnv + "=1\n")
	for _, kv := range opts.Env {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || !regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`).MatchString(k) {
			return "", "", fmt.Errorf("bad Options.Env entry %q (want KEY=VALUE)", kv)
		}
		fmt.Fprintf(&sh, "export %s=%s\n", k, shQuote(v))
	}
	args := []string{"/vmtest/pkg.test", "-test.v", "-test.run", opts.Run,
		"-test.timeout", guestTimeout.Round(time.Second).String()}
	args = append(args, opts.Args...)
	for i, a := range args {
		args[i] = shQuote(a)
	}
	sh.WriteString("exec " + strings.Join(args, " ") + "\n")
	t.Data("vmtest/run.sh", []byte(sh.String()), 0o755)

	p := filepath.Join(dir, "payload.cpio")
	f, err := os.Create(p)
	if err != nil {
		return "", "", err
	}
	bw := bufio.NewWriterSize(f, 1<<20)
	if err := t.Write(bw); err != nil {
		f.Close()
		return "", "", err
	}
	if err := bw.Flush(); err != nil {
		f.Close()
		return "", "", err
	}
	return p, nonce, f.Close()
}

func shQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func concatFiles(dst string, srcs ...string) error {
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	for _, s := range srcs {
		in, err := os.Open(s)
		if err != nil {
			out.Close()
			return err
		}
		_, err = io.Copy(out, in)
		in.Close()
		if err != nil {
			out.Close()
			return err
		}
	}
	return out.Close()
}

type bootResult struct {
	exit   int
	err    error    // no exit status: timeout, crash, missing marker
	tail   []string // last console lines
	failed []string // names from "--- FAIL:" lines
}

var (
	failRE = regexp.MustCompile(`^\s*--- FAIL: (\S+)`)
	ctrlRE = regexp.MustCompile("\x1b\\[[0-9;?]*[A-Za-z]|[\x00-\x08\x0b-\x1f\x7f]")
)

// boot runs qemu and streams the console to logLine until the guest reports
// its exit status and powers off.
func boot(t testing.TB, qemu, kernel, initrd, nonce string, opts Options, deadline time.Time, logLine func(string)) bootResult {
	t.Helper()
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	args := []string{
		"-machine", "pc", "-accel", "tcg,thread=multi", "-cpu", "max",
		"-m", strconv.Itoa(opts.MemoryMB), "-smp", strconv.Itoa(opts.CPUs),
		"-kernel", kernel, "-initrd", initrd,
		"-append", "console=ttyS0 panic=-1 quiet",
		"-nodefaults", "-no-user-config", "-display", "none",
		"-serial", "stdio", "-monitor", "none",
		"-nic", "none", "-no-reboot",
	}
	cmd := exec.CommandContext(ctx, qemu, args...)
	// qemu dies with the test process. Pdeathsig fires when the forking
	// thread exits, so keep that thread to ourselves until qemu is reaped.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = 5 * time.Second
	pr, pw, err := os.Pipe()
	if err != nil {
		return bootResult{err: err}
	}
	cmd.Stdout, cmd.Stderr = pw, pw
	started := time.Now()
	if err := cmd.Start(); err != nil {
		pw.Close()
		pr.Close()
		return bootResult{err: fmt.Errorf("starting %s: %w", qemu, err)}
	}
	pw.Close()

	markerRE := regexp.MustCompile(`VMTEST-EXIT-` + nonce + `=(\d+)`)
	res := bootResult{exit: -1}
	var exitSeen bool
	var grace *time.Timer
	sc := bufio.NewScanner(pr)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		line := ctrlRE.ReplaceAllString(sc.Text(), "")
		logLine("guest| " + line)
		if opts.Console != nil {
			opts.Console(line)
		}
		res.tail = append(res.tail, line)
		if len(res.tail) > 40 {
			res.tail = res.tail[1:]
		}
		if m := failRE.FindStringSubmatch(line); m != nil {
			res.failed = append(res.failed, m[1])
		}
		if strings.Contains(line, "VMTEST-BOOTED") {
			t.Logf("vmtest: guest booted in %v", time.Since(started).Round(time.Millisecond))
		}
		if m := markerRE.FindStringSubmatch(line); m != nil && !exitSeen {
			exitSeen = true
			res.exit, _ = strconv.Atoi(m[1])
			t.Logf("vmtest: guest finished in %v", time.Since(started).Round(time.Millisecond))
			// The guest powers off next; do not wait forever for it.
			grace = time.AfterFunc(15*time.Second, func() { cmd.Process.Kill() })
		}
	}
	pr.Close()
	werr := cmd.Wait()
	if grace != nil {
		grace.Stop()
	}
	switch {
	case exitSeen:
		return res
	case ctx.Err() != nil:
		res.err = fmt.Errorf("timed out after %v (killed qemu); the guest never reported an exit status", time.Since(started).Round(time.Second))
	default:
		res.err = fmt.Errorf("qemu ended (%v) without the guest's exit marker: kernel panic or /init failure?", werr)
	}
	return res
}
