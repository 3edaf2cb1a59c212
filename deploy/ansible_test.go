package deploy

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/directord/directord/internal/netlab"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/golden")

func TestMain(m *testing.M) {
	flag.Parse()
	code := m.Run()
	netlab.RemoveBinaries()
	os.Exit(code)
}

// ansibleDir is the playbook directory, absolute so that commands run in a
// namespace or another directory find it.
func ansibleDir(t testing.TB) string {
	t.Helper()
	dir, err := filepath.Abs("ansible")
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// requireTool finds an Ansible command. A missing one fails the test, also
// outside CI: the deploy tests are the only thing that checks the roles.
func requireTool(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s not found: run scripts/install-deps.sh as root, which installs Debian's ansible-core and ansible-lint", name)
	}
	return p
}

// ansibleEnv is the environment of an Ansible command.
func ansibleEnv(t testing.TB) []string {
	t.Helper()
	return append(os.Environ(), ansibleVars(t)...)
}

// ansibleVars are the settings added to the environment: the project's
// ansible.cfg, temporary files in the test's directory, no colours.
func ansibleVars(t testing.TB) []string {
	t.Helper()
	tmp := t.TempDir()
	return []string{
		"ANSIBLE_CONFIG=" + filepath.Join(ansibleDir(t), "ansible.cfg"),
		"ANSIBLE_LOCAL_TEMP=" + filepath.Join(tmp, "local"),
		"ANSIBLE_REMOTE_TEMP=" + filepath.Join(tmp, "remote"),
		"ANSIBLE_NOCOLOR=1",
		"ANSIBLE_FORCE_COLOR=0",
		"NO_COLOR=1",
	}
}

// playbookArgs runs site.yml on this machine, against root instead of /
// (each host in root/HOST), with no service managed and nothing applied to
// the running system.
func playbookArgs(t testing.TB, root string, extra ...string) []string {
	t.Helper()
	bin := filepath.Dir(netlab.Binary(t, "./cmd/directord"))
	netlab.Binary(t, "./cmd/directorctl") // next to directord
	args := []string{
		filepath.Join(ansibleDir(t), "site.yml"),
		"--connection", "local",
		"-e", "ansible_become=false",
		"-e", "directord_root=" + root + "/{{ inventory_hostname }}",
		"-e", "directord_bin_src=" + bin,
		"-e", "directord_manage_services=false",
		"-e", "directord_apply_sysctls=false",
		"-e", "realserver_root=" + root + "/{{ inventory_hostname }}",
		"-e", "realserver_manage_services=false",
		"-e", "realserver_apply=false",
	}
	return append(args, extra...)
}

// runAnsible runs an Ansible command in the playbook directory and returns
// its output; a failure fails the test with that output.
func runAnsible(t testing.TB, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, requireTool(t, name), args...)
	cmd.Dir = ansibleDir(t)
	cmd.Env = ansibleEnv(t)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// recap returns the changed= count of each host in a playbook's PLAY RECAP.
func recap(t testing.TB, out string) map[string]int {
	t.Helper()
	re := regexp.MustCompile(`(?m)^(\S+)\s*:\s*ok=\d+\s+changed=(\d+)\s+unreachable=0\s+failed=0`)
	m := map[string]int{}
	for _, s := range re.FindAllStringSubmatch(out, -1) {
		n, _ := strconv.Atoi(s[2])
		m[s[1]] = n
	}
	if len(m) == 0 {
		t.Fatalf("no PLAY RECAP with every host ok in:\n%s", out)
	}
	return m
}

func TestAnsiblePlaybookSyntax(t *testing.T) {
	out := runAnsible(t, "ansible-playbook", "--syntax-check", "site.yml")
	if !strings.Contains(out, "playbook: site.yml") {
		t.Errorf("syntax check said:\n%s", out)
	}
}

// The production profile is ansible-lint's strictest: FQCN modules, named
// tasks, modes on every file, handlers instead of when-changed, no shell.
func TestAnsibleLintRoles(t *testing.T) {
	out := runAnsible(t, "ansible-lint", "--offline", "--nocolor", "--profile", "production",
		"roles/director", "roles/realserver", "site.yml", "inventory")
	if !strings.Contains(out, "0 failure(s), 0 warning(s)") {
		t.Errorf("ansible-lint said:\n%s", out)
	}
}

// A golden set: the example inventory, alone or with extra variables.
var goldenSets = []struct {
	name  string
	extra []string
}{
	{name: "example"},
	{name: "unicast-nat-tun", extra: []string{"-e", "@" + "testdata/unicast-nat-tun.yml"}},
}

// binaries are installed from the build, not rendered: compared with it
// rather than with golden files.
var binaries = map[string]string{
	"usr/local/sbin/directord":   "./cmd/directord",
	"usr/local/sbin/directorctl": "./cmd/directorctl",
}

// unitSource is installed as is: compared with the file in deploy/systemd.
const unitPath = "etc/systemd/system/directord.service"

// TestRolesRenderGoldenFiles runs the whole playbook, both roles on all
// four hosts of the example inventory, into a temporary root: every file it
// writes, with its mode, must equal testdata/golden/SET/HOST/..., every
// rendered directord.yaml must pass `directord check --strict`, and a second
// run must change nothing.
func TestRolesRenderGoldenFiles(t *testing.T) {
	requireTool(t, "ansible-playbook")
	directord := netlab.Binary(t, "./cmd/directord")
	for _, set := range goldenSets {
		t.Run(set.name, func(t *testing.T) {
			root := t.TempDir()
			extra := slices.Clone(set.extra)
			for i, a := range extra {
				if strings.HasPrefix(a, "@") {
					abs, err := filepath.Abs(a[1:])
					if err != nil {
						t.Fatal(err)
					}
					extra[i] = "@" + abs
				}
			}
			args := playbookArgs(t, root, extra...)
			first := recap(t, runAnsible(t, "ansible-playbook", args...))
			for _, host := range []string{"lb1", "lb2", "rs1", "rs2"} {
				if first[host] == 0 {
					t.Errorf("first run changed nothing on %s", host)
				}
			}

			compareGolden(t, root, filepath.Join("testdata", "golden", set.name))

			for _, host := range []string{"lb1", "lb2"} {
				cfg := filepath.Join(root, host, "etc/directord/directord.yaml")
				out, err := exec.Command(directord, "check", "--strict", "-c", cfg).CombinedOutput()
				if err != nil || bytes.Contains(out, []byte("warning")) {
					t.Errorf("%s: directord check --strict: %v\n%s", host, err, out)
				}
			}
			verifyUnits(t, root)

			second := recap(t, runAnsible(t, "ansible-playbook", args...))
			for host, n := range second {
				if n != 0 {
					t.Errorf("second run changed %d things on %s; the roles must be idempotent", n, host)
				}
			}
		})
	}
}

// compareGolden checks the tree under root against the golden directory:
// the MANIFEST file lists every file with its mode, the other files hold
// the expected contents with the temporary root written as @ROOT@.
func compareGolden(t *testing.T, root, golden string) {
	t.Helper()
	var manifest strings.Builder
	got := map[string][]byte{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		fmt.Fprintf(&manifest, "%04o %s\n", info.Mode().Perm(), rel)
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		host, inHost, _ := strings.Cut(rel, string(filepath.Separator))
		if pkg, ok := binaries[inHost]; ok {
			want, err := os.ReadFile(netlab.Binary(t, pkg))
			if err != nil {
				return err
			}
			if !bytes.Equal(b, want) {
				t.Errorf("%s: %s is not the binary built from %s", host, inHost, pkg)
			}
			return nil
		}
		if inHost == unitPath {
			want, err := os.ReadFile(filepath.Join("systemd", "directord.service"))
			if err != nil {
				return err
			}
			if !bytes.Equal(b, want) {
				t.Errorf("%s: %s differs from deploy/systemd/directord.service", host, inHost)
			}
			return nil
		}
		got[rel] = bytes.ReplaceAll(b, []byte(root), []byte("@ROOT@"))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	got["MANIFEST"] = []byte(manifest.String())

	if *update {
		if err := os.RemoveAll(golden); err != nil {
			t.Fatal(err)
		}
		for rel, b := range got {
			p := filepath.Join(golden, rel)
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		t.Logf("rewrote %s", golden)
		return
	}

	want := map[string][]byte{}
	err = filepath.WalkDir(golden, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, err := filepath.Rel(golden, p)
		if err != nil {
			return err
		}
		want[rel], err = os.ReadFile(p)
		return err
	})
	if err != nil {
		t.Fatalf("%v (go test ./deploy -run TestRolesRenderGoldenFiles -update writes the golden files)", err)
	}
	for rel, w := range want {
		g, ok := got[rel]
		switch {
		case !ok:
			t.Errorf("%s: not written", rel)
		case !bytes.Equal(g, w):
			t.Errorf("%s differs from %s:\n%s", rel, filepath.Join(golden, rel), lineDiff(string(w), string(g)))
		}
	}
	for rel := range got {
		if _, ok := want[rel]; !ok {
			t.Errorf("%s: written but not in %s", rel, golden)
		}
	}
}

// lineDiff lists the lines only in want (-) or only in got (+), in order;
// enough to see what a template change did.
func lineDiff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	var b strings.Builder
	i, j := 0, 0
	for i < len(w) || j < len(g) {
		switch {
		case i < len(w) && j < len(g) && w[i] == g[j]:
			i++
			j++
		case j < len(g) && !slices.Contains(w[i:], g[j]):
			fmt.Fprintf(&b, "+ %s\n", g[j])
			j++
		case i < len(w):
			fmt.Fprintf(&b, "- %s\n", w[i])
			i++
		default:
			fmt.Fprintf(&b, "+ %s\n", g[j])
			j++
		}
	}
	return b.String()
}

// verifyUnits runs `systemd-analyze verify` on the units the roles wrote,
// each host's tree standing as the root file system next to a copy of the
// system's own units, so that ExecStart binaries and dependencies resolve
// without looking at this machine's /etc or /usr/local.
func verifyUnits(t *testing.T, root string) {
	t.Helper()
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Fatal("systemd-analyze not found: run scripts/install-deps.sh as root, which installs Debian's systemd")
	}
	for _, unit := range []struct{ host, name string }{
		{"lb1", "directord.service"},
		{"rs1", "directord-realserver.service"},
	} {
		vroot := t.TempDir()
		if err := os.CopyFS(vroot, os.DirFS(filepath.Join(root, unit.host))); err != nil {
			t.Fatal(err)
		}
		if err := copyUnits("/lib/systemd/system", filepath.Join(vroot, "lib/systemd/system")); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(analyze, "verify", "--root="+vroot, unit.name).CombinedOutput()
		// verify exits 0 on warnings such as an unknown key: none may be printed.
		if err != nil || len(bytes.TrimSpace(out)) > 0 {
			t.Errorf("%s: systemd-analyze verify %s: %v\n%s", unit.host, unit.name, err, out)
		}
	}
}

// copyUnits copies a unit directory, keeping symlinks (aliases, masks) as
// they are.
func copyUnits(src, dst string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		switch {
		case d.IsDir():
			return os.MkdirAll(target, 0o755)
		case d.Type()&fs.ModeSymlink != 0:
			l, err := os.Readlink(p)
			if err != nil {
				return err
			}
			return os.Symlink(l, target)
		case d.Type().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			return os.WriteFile(target, b, 0o644)
		}
		return nil
	})
}
