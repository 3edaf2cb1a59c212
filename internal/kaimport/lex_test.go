package kaimport

import (
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// words flattens a statement tree to "key arg arg {" ... "}" lines, so a
// test can compare how a file was read.
func words(stmts []*stmt) []string {
	var out []string
	for _, s := range stmts {
		line := strings.Join(append([]string{s.key}, argTexts(s.args)...), " ")
		if s.block {
			out = append(out, line+" {")
			out = append(out, words(s.body)...)
			out = append(out, "}")
		} else {
			out = append(out, line)
		}
	}
	return out
}

func readTree(t *testing.T, files memFS) ([]*stmt, []Note) {
	t.Helper()
	ns := &notes{}
	lx := &lexer{fsys: files, notes: ns}
	if err := lx.lexFile("main.conf", []byte(files["main.conf"])); err != nil {
		t.Fatalf("lex: %v", err)
	}
	tree, err := parse(lx.toks)
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	return tree, ns.list
}

// keepalived.conf(5): comments start with # or ! and run to the end of the
// line, also in the middle of a word (checked against keepalived -t:
// "interface eth0#x" is eth0); inside double quotes they are text.
func TestCommentsBothStylesAndQuotes(t *testing.T) {
	tree, _ := readTree(t, memFS{"main.conf": `# hash comment
! bang comment
global_defs {   # after a brace
    router_id lb1!x
    notification_email_from "a#b!c@example.com" ! trailing
}
`})
	want := []string{"global_defs {", "router_id lb1", "notification_email_from a#b!c@example.com", "}"}
	if diff := cmp.Diff(want, words(tree)); diff != "" {
		t.Errorf("statements (-want +got):\n%s", diff)
	}
}

// Braces may stand anywhere: glued to words, several blocks on one line,
// or the opening brace on the line after its keyword.
func TestBracesWhereverWritten(t *testing.T) {
	tree, _ := readTree(t, memFS{"main.conf": `vrrp_instance VI_1
{
  virtual_ipaddress {192.0.2.10/24}
  track_script { chk weight -5 } }
real_server 198.51.100.1 80 { TCP_CHECK { connect_timeout 2 } }
`})
	want := []string{
		"vrrp_instance VI_1 {",
		"virtual_ipaddress {", "192.0.2.10/24", "}",
		"track_script {", "chk weight -5", "}",
		"}",
		"real_server 198.51.100.1 80 {", "TCP_CHECK {", "connect_timeout 2", "}", "}",
	}
	if diff := cmp.Diff(want, words(tree)); diff != "" {
		t.Errorf("statements (-want +got):\n%s", diff)
	}
}

// Each syntax error names the file and line: an unclosed block at the line
// of its brace, a stray } and an unterminated quote where they stand.
func TestSyntaxErrorsAreLocated(t *testing.T) {
	for _, tt := range []struct {
		name, src, want string
	}{
		{"unclosed", "global_defs {\n router_id x\n}\nvrrp_instance VI_1 {\n interface eth0\n", "main.conf:4: unclosed { (missing })"},
		{"stray close", "global_defs {\n}\n}\n", "main.conf:3: } without a matching {"},
		{"unterminated quote", "global_defs {\n router_id \"lb1\n}\n", "main.conf:2: unterminated quoted string"},
		{"brace without keyword", "{\n}\n", "main.conf:1: { without a keyword before it"},
		{"too deep", strings.Repeat("a {\n", maxBlockDepth+1) + strings.Repeat("}\n", maxBlockDepth+1), "main.conf:33: blocks nested deeper than 32"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := convertErr(t, memFS{"main.conf": tt.src}).Error(); got != tt.want {
				t.Errorf("error %q, want %q", got, tt.want)
			}
		})
	}
}

// include GLOB reads matching files in name order, relative to the
// directory of the file that includes them, also inside a block; notes
// name the included file and its own line numbers.
func TestIncludeGlobRelativeToIncludingFile(t *testing.T) {
	files := memFS{
		"etc/main.conf":       "global_defs {\n include defs/*.conf\n}\ninclude vs/web.conf\n",
		"etc/defs/20-b.conf":  "vrrp_version 3\n",
		"etc/defs/10-a.conf":  "router_id lb9\nbogus_global 1\n",
		"etc/vs/web.conf":     "# web\ninclude ../more/extra.conf\n",
		"etc/more/extra.conf": "\n\nunknown_block {\n}\n",
	}
	out, notes, err := ConvertFS(files, "etc/main.conf")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), "name: lb9") {
		t.Errorf("router_id from the included file is missing:\n%s", out)
	}
	want := []string{
		"etc/defs/10-a.conf:2: bogus_global: no directord equivalent",
		"etc/more/extra.conf:3: unknown_block: no directord equivalent",
	}
	var got []string
	for _, n := range notes {
		got = append(got, n.String())
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("notes (-want +got):\n%s", diff)
	}
}

func TestIncludeProblems(t *testing.T) {
	t.Run("missing file is an error at the include", func(t *testing.T) {
		e := convertErr(t, memFS{"main.conf": "# x\ninclude nowhere.conf\n"})
		if e.File != "main.conf" || e.Line != 2 || !strings.Contains(e.Msg, "nowhere.conf: no such file") {
			t.Errorf("error %v", e)
		}
	})
	t.Run("loop", func(t *testing.T) {
		e := convertErr(t, memFS{"main.conf": "include a.conf\n", "a.conf": "include b.conf\n", "b.conf": "\ninclude a.conf\n"})
		if e.File != "b.conf" || e.Line != 2 || e.Msg != "include loop: a.conf includes b.conf includes a.conf" {
			t.Errorf("error %v", e)
		}
	})
	t.Run("self", func(t *testing.T) {
		e := convertErr(t, memFS{"main.conf": "include main.conf\n"})
		if e.Msg != "include loop: main.conf includes main.conf" {
			t.Errorf("error %v", e)
		}
	})
	t.Run("depth", func(t *testing.T) {
		files := memFS{"main.conf": "include f1.conf\n"}
		for i := 1; i <= maxIncludeDepth+1; i++ {
			files["f"+strconv.Itoa(i)+".conf"] = "include f" + strconv.Itoa(i+1) + ".conf\n"
		}
		e := convertErr(t, files)
		if !strings.Contains(e.Msg, "includes nested deeper than 16") {
			t.Errorf("error %v", e)
		}
	})
	t.Run("glob without match is a note", func(t *testing.T) {
		_, notes := convert(t, memFS{"main.conf": "\ninclude conf.d/*.conf\n"})
		if n := noteFor(t, notes, "include"); n.Line != 2 || n.Why != "conf.d/*.conf matches no file" {
			t.Errorf("note %v", n)
		}
	})
}

// $NAME=value definitions apply to later lines, also in included files;
// ${NAME} works inside a word, $NAME only as the rest of a word (as
// keepalived reads "$NET.1": a name NET.1, undefined).
func TestDefinitions(t *testing.T) {
	tree, _ := readTree(t, memFS{
		"main.conf": "$NET=192.0.2\n$IF=eth1\ninclude inc.conf\n",
		"inc.conf":  "a ${NET}.10/24 dev $IF\nb $NET.10 $UNDEFINED\n",
	})
	want := []string{"a 192.0.2.10/24 dev eth1", "b $NET.10 $UNDEFINED"}
	if diff := cmp.Diff(want, words(tree)); diff != "" {
		t.Errorf("statements (-want +got):\n%s", diff)
	}
}

// A line for a named keepalived instance (@lb1 priority 150) cannot be
// resolved without knowing which host the file is for.
func TestConditionalLinesAreNoted(t *testing.T) {
	tree, notes := readTree(t, memFS{"main.conf": "global_defs {\n@lb1 router_id lb1\n}\n"})
	if diff := cmp.Diff([]string{"global_defs {", "}"}, words(tree)); diff != "" {
		t.Errorf("statements (-want +got):\n%s", diff)
	}
	if n := noteFor(t, notes, "@lb1"); n.Line != 2 {
		t.Errorf("note %v", n)
	}
}

func TestSplitCommand(t *testing.T) {
	for in, want := range map[string][]string{
		"/usr/bin/pgrep -x haproxy":           {"/usr/bin/pgrep", "-x", "haproxy"},
		"/bin/sh -c 'test -f /run/x && true'": {"/bin/sh", "-c", "test -f /run/x && true"},
		`/bin/echo "a b" c\ d`:                {"/bin/echo", "a b", "c d"},
		"  spaced   out  ":                    {"spaced", "out"},
	} {
		if diff := cmp.Diff(want, splitCommand(in)); diff != "" {
			t.Errorf("splitCommand(%q) (-want +got):\n%s", in, diff)
		}
	}
}
