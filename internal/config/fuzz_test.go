package config

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// FuzzParse feeds arbitrary bytes to the parser: it must never panic, and
// every failure must be a list of located errors.
func FuzzParse(f *testing.F) {
	seeds, _ := filepath.Glob("../../deploy/examples/*.yaml")
	seeds = append(seeds, "testdata/contract.yaml")
	for _, p := range seeds {
		data, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte("vrrp:\n  instances:\n    - {name: a, interface: e, vrid: 1, virtual_addresses: [192.0.2.1]}\n"))
	f.Add([]byte("a: &x [*x]\n"))
	f.Add([]byte("ipvs: {virtual_services: [{name: w, fwmark: 1, real_servers: [{address: '::1', check: {type: dns}}]}]}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse("fuzz.yaml", data)
		if err == nil {
			if cfg == nil {
				t.Fatal("no error and no config")
			}
			return
		}
		var errs Errors
		if !errors.As(err, &errs) || len(errs) == 0 {
			t.Fatalf("error is not a non-empty Errors: %T %v", err, err)
		}
		for _, e := range errs {
			if e.Line < 1 || e.Column < 1 || e.Msg == "" {
				t.Fatalf("unlocated or empty error: %#v", e)
			}
		}
	})
}
