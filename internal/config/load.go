package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"regexp"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// maxFileSize bounds what Parse reads; a director's config is kilobytes.
const maxFileSize = 16 << 20

// Load reads and validates the configuration file at path.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return Parse(path, data)
}

// Parse decodes and validates a configuration. name is used in error
// messages. On failure the error is an Errors value holding every problem
// found, in file order.
func Parse(name string, data []byte) (*Config, error) {
	c := newCollector(name)
	cfg := newDefaulted(reflect.TypeFor[Config]()).Addr().Interface().(*Config)
	cfg.File = name
	cfg.c = c

	if len(data) > maxFileSize {
		c.addf("", "file is larger than %d bytes", maxFileSize)
		return nil, c.sorted()
	}
	root, err := parseDocument(data)
	if err != nil {
		c.errs = append(c.errs, syntaxError(name, err))
		return nil, c.sorted()
	}
	if root == nil {
		c.addf("", "the file is empty; at least the node section is expected")
		return nil, c.sorted()
	}
	c.at[""] = posOf(root)
	d := &decoder{c: c}
	d.decodeStruct(root, reflect.ValueOf(cfg).Elem(), "")
	mergeChecks(cfg, c)
	validate(cfg, c)
	if errs := c.sorted(); len(errs) > 0 {
		return nil, errs
	}
	return cfg, nil
}

// parseDocument returns the top node of the single YAML document in data,
// or nil when data holds no document.
func parseDocument(data []byte) (root *yaml.Node, err error) {
	// yaml.v3 has had panics on hostile input; a config parser must turn
	// them into an error, never take the daemon down on reload.
	defer func() {
		if r := recover(); r != nil {
			root, err = nil, fmt.Errorf("yaml: parser failed: %v", r)
		}
	}()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, nil
		}
		return nil, err
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		line := extra.Line
		if len(extra.Content) > 0 {
			line = extra.Content[0].Line
		}
		return nil, fmt.Errorf("yaml: line %d: a second YAML document; the file must hold exactly one", line)
	} else if !errors.Is(err, io.EOF) {
		return nil, err
	}
	if len(doc.Content) == 0 {
		return nil, nil
	}
	return doc.Content[0], nil
}

var yamlLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// syntaxError turns a yaml.v3 parse error into a located Error. yaml.v3 names
// the line only, so the column is 1.
func syntaxError(file string, err error) Error {
	msg := err.Error()
	if m := yamlLine.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		return Error{File: file, Line: line, Column: 1, Msg: "YAML syntax: " + m[2]}
	}
	return Error{File: file, Line: 1, Column: 1, Msg: "YAML syntax: " + strings.TrimPrefix(msg, "yaml: ")}
}

// mergeChecks lays each real server's check over its service's check: a key
// written under the real server wins, every other field is the service's.
func mergeChecks(cfg *Config, c *collector) {
	fields, _ := fieldsOf(reflect.TypeFor[Check]())
	for i := range cfg.IPVS.VirtualServices {
		vs := &cfg.IPVS.VirtualServices[i]
		for j := range vs.RealServers {
			rs := &vs.RealServers[j]
			prefix := fmt.Sprintf("ipvs.virtual_services[%d].real_servers[%d].check.", i, j)
			merged := vs.Check
			merged.ExpectStatus = append([]int(nil), vs.Check.ExpectStatus...)
			merged.Command = append([]string(nil), vs.Check.Command...)
			mv, rv := reflect.ValueOf(&merged).Elem(), reflect.ValueOf(rs.Check)
			for key, f := range fields {
				if c.has(prefix + key) {
					mv.FieldByIndex(f.index).Set(rv.FieldByIndex(f.index))
				}
			}
			rs.Check = merged
		}
	}
}
