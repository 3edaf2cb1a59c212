package vip

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// stateFile lists the addresses this node has bound, so that a run after a
// crash removes them before it elects: a restarted node must never answer
// for a VIP it does not own. It is written before an address is bound and
// after it is removed, so a crash in between leaves it listed, never bound
// and unlisted.
const stateFile = "vips.json"

type stateEntry struct {
	Address   netip.Prefix `json:"address"`
	Interface string       `json:"interface"`
}

type stateDoc struct {
	Addresses []stateEntry `json:"addresses"`
}

func readState(dir string) ([]stateEntry, error) {
	b, err := os.ReadFile(filepath.Join(dir, stateFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read VIP state: %w", err)
	}
	var doc stateDoc
	if err := json.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("read VIP state %s: %w", filepath.Join(dir, stateFile), err)
	}
	return doc.Addresses, nil
}

// sortedState returns the entries in the file's order (by address, then
// interface), as a new slice.
func sortedState(entries []stateEntry) []stateEntry {
	entries = slices.Clone(entries)
	slices.SortFunc(entries, func(a, b stateEntry) int {
		return cmp.Or(a.Address.Addr().Compare(b.Address.Addr()), strings.Compare(a.Interface, b.Interface))
	})
	return entries
}

// writeState replaces the state file atomically.
func writeState(dir string, entries []stateEntry) error {
	entries = sortedState(entries)
	b, err := json.MarshalIndent(stateDoc{Addresses: entries}, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("write VIP state: %w", err)
	}
	tmp, err := os.CreateTemp(dir, stateFile+".*")
	if err != nil {
		return fmt.Errorf("write VIP state: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("write VIP state: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("write VIP state: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write VIP state: %w", err)
	}
	if err := os.Rename(tmp.Name(), filepath.Join(dir, stateFile)); err != nil {
		return fmt.Errorf("write VIP state: %w", err)
	}
	return nil
}
