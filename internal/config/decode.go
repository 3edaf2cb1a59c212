package config

import (
	"fmt"
	"math"
	"net/netip"
	"reflect"
	"sort"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// The decoder walks yaml.v3's node tree itself instead of calling
// Node.Decode on the whole document: yaml.v3's strict mode reports unknown
// keys with a line but no column or key path, and stops at the first type
// error inside a sequence element. Walking the tree gives every error its
// line, column and path, records where every key stands (validation errors
// point at the offending key too), and collects all errors in one pass.

var (
	durationType = reflect.TypeFor[time.Duration]()
	addrType     = reflect.TypeFor[netip.Addr]()
	prefixType   = reflect.TypeFor[netip.Prefix]()
	selfDecoder  = reflect.TypeFor[nodeDecoder]()
	defaulterTyp = reflect.TypeFor[defaulter]()
)

// nodeDecoder is implemented by types with more than one YAML form (a virtual
// address is a plain string or a mapping).
type nodeDecoder interface {
	decodeNode(d *decoder, n *yaml.Node, path string)
}

// defaulter is implemented by types whose zero value is not their default.
// Defaults are applied before decoding, so a key written in the file always
// wins, and a section left out entirely still gets them.
type defaulter interface {
	setDefaults()
}

type decoder struct {
	c *collector
}

func posOf(n *yaml.Node) pos { return pos{n.Line, n.Column} }

func joinKey(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func joinIndex(path string, i int) string { return fmt.Sprintf("%s[%d]", path, i) }

// newDefaulted returns a new value of type t with defaults applied to it and
// to every struct it contains by value.
func newDefaulted(t reflect.Type) reflect.Value {
	v := reflect.New(t).Elem()
	applyDefaults(v)
	return v
}

func applyDefaults(v reflect.Value) {
	if v.Kind() != reflect.Struct {
		return
	}
	for i := 0; i < v.NumField(); i++ {
		if f := v.Field(i); f.CanSet() && f.Kind() == reflect.Struct {
			applyDefaults(f)
		}
	}
	if v.CanAddr() && v.Addr().Type().Implements(defaulterTyp) {
		v.Addr().Interface().(defaulter).setDefaults()
	}
}

func resolve(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.Tag == "!!null"
}

// decode stores node n into v, reporting problems under path.
func (d *decoder) decode(n *yaml.Node, v reflect.Value, path string) {
	n = resolve(n)
	if n == nil || isNull(n) {
		// "key:" with nothing after it keeps the default.
		return
	}
	if v.CanAddr() && v.Addr().Type().Implements(selfDecoder) {
		v.Addr().Interface().(nodeDecoder).decodeNode(d, n, path)
		return
	}
	switch v.Type() {
	case durationType:
		if dur, ok := d.duration(n, path); ok {
			v.SetInt(int64(dur))
		}
		return
	case addrType:
		if a, ok := d.addr(n, path); ok {
			v.Set(reflect.ValueOf(a))
		}
		return
	case prefixType:
		if p, ok := d.prefix(n, path); ok {
			v.Set(reflect.ValueOf(p))
		}
		return
	}
	switch v.Kind() {
	case reflect.Struct:
		d.decodeStruct(n, v, path)
	case reflect.Pointer:
		elem := newDefaulted(v.Type().Elem())
		d.decode(n, elem, path)
		p := reflect.New(v.Type().Elem())
		p.Elem().Set(elem)
		v.Set(p)
	case reflect.Slice:
		d.decodeSlice(n, v, path)
	case reflect.String:
		if s, ok := d.scalar(n, path, "a string"); ok {
			v.SetString(s)
		}
	case reflect.Bool:
		if !d.isScalar(n, path, "true or false") {
			return
		}
		var b bool
		if n.Tag != "!!bool" || n.Decode(&b) != nil {
			d.c.addf(path, "expected true or false, got %q", n.Value)
			return
		}
		v.SetBool(b)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		if i, ok := d.integer(n, path, "an integer"); ok {
			if v.OverflowInt(i) {
				d.c.addf(path, "%d is out of range", i)
				return
			}
			v.SetInt(i)
		}
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		if i, ok := d.integer(n, path, "a non-negative integer"); ok {
			if i < 0 || v.OverflowUint(uint64(i)) {
				d.c.addf(path, "%d is out of range 0..%d", i, maxUint(v.Type()))
				return
			}
			v.SetUint(uint64(i))
		}
	default:
		panic(fmt.Sprintf("config: no decoder for %s at %s", v.Type(), path))
	}
}

// integer decodes a YAML integer; "1", 1.0 and "one" are not integers.
func (d *decoder) integer(n *yaml.Node, path, want string) (int64, bool) {
	if !d.isScalar(n, path, want) {
		return 0, false
	}
	var i int64
	if n.Tag != "!!int" || n.Decode(&i) != nil {
		d.c.addf(path, "expected %s, got %q", want, n.Value)
		return 0, false
	}
	return i, true
}

func maxUint(t reflect.Type) uint64 {
	return math.MaxUint64 >> (64 - t.Bits())
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	default:
		return fmt.Sprintf("%q", n.Value)
	}
}

func (d *decoder) isScalar(n *yaml.Node, path, want string) bool {
	if n.Kind != yaml.ScalarNode {
		d.c.addf(path, "expected %s, got %s", want, kindName(n))
		return false
	}
	return true
}

func (d *decoder) scalar(n *yaml.Node, path, want string) (string, bool) {
	if !d.isScalar(n, path, want) {
		return "", false
	}
	return n.Value, true
}

func (d *decoder) duration(n *yaml.Node, path string) (time.Duration, bool) {
	s, ok := d.scalar(n, path, "a duration")
	if !ok {
		return 0, false
	}
	if n.Tag == "!!int" || n.Tag == "!!float" {
		// keepalived writes bare seconds ("advert_int 1"); say what we want.
		d.c.addf(path, "expected a duration with a unit like \"%ss\" or \"250ms\", got %s", s, s)
		return 0, false
	}
	dur, err := time.ParseDuration(s)
	if err != nil {
		d.c.addf(path, "expected a duration like \"1s\" or \"250ms\", got %q", s)
		return 0, false
	}
	return dur, true
}

func (d *decoder) addr(n *yaml.Node, path string) (netip.Addr, bool) {
	s, ok := d.scalar(n, path, "an IP address")
	if !ok || s == "" {
		// "" is the documented way to say "not set".
		return netip.Addr{}, ok
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		d.c.addf(path, "%q is not an IP address", s)
		return netip.Addr{}, false
	}
	return a.Unmap(), true
}

// prefix parses an address with an optional prefix length; without one it
// means a host address (/32 or /128). The address bits are kept as written:
// "192.0.2.50/24" is the address 192.0.2.50 bound with a /24 mask.
func (d *decoder) prefix(n *yaml.Node, path string) (netip.Prefix, bool) {
	s, ok := d.scalar(n, path, "an IP address")
	if !ok {
		return netip.Prefix{}, false
	}
	if !strings.Contains(s, "/") {
		a, err := netip.ParseAddr(s)
		if err != nil {
			d.c.addf(path, "%q is not an IP address", s)
			return netip.Prefix{}, false
		}
		a = a.Unmap()
		return netip.PrefixFrom(a, a.BitLen()), true
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		d.c.addf(path, "%q is not an IP address with an optional /prefix length", s)
		return netip.Prefix{}, false
	}
	return p, true
}

func (d *decoder) decodeSlice(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.SequenceNode {
		d.c.addf(path, "expected a list, got %s", kindName(n))
		return
	}
	out := reflect.MakeSlice(v.Type(), 0, len(n.Content))
	for i, item := range n.Content {
		ip := joinIndex(path, i)
		d.c.at[ip] = posOf(resolve(item))
		elem := newDefaulted(v.Type().Elem())
		d.decode(item, elem, ip)
		out = reflect.Append(out, elem)
	}
	v.Set(out)
}

type fieldInfo struct {
	index []int
}

// fieldsOf maps YAML key names to struct fields (the yaml tag; "-" skips).
func fieldsOf(t reflect.Type) (map[string]fieldInfo, []string) {
	m := map[string]fieldInfo{}
	var names []string
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := f.Tag.Get("yaml")
		if tag == "" || tag == "-" || !f.IsExported() {
			continue
		}
		name := strings.Split(tag, ",")[0]
		m[name] = fieldInfo{index: f.Index}
		names = append(names, name)
	}
	sort.Strings(names)
	return m, names
}

func (d *decoder) decodeStruct(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.MappingNode {
		d.c.addf(path, "expected a mapping, got %s", kindName(n))
		return
	}
	fields, names := fieldsOf(v.Type())
	seen := map[string]pos{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := resolve(n.Content[i]), n.Content[i+1]
		key := k.Value
		kp := joinKey(path, key)
		if k.Kind != yaml.ScalarNode {
			d.c.addAt(posOf(k), path, "mapping keys must be plain strings")
			continue
		}
		if key == "<<" {
			d.c.addAt(posOf(k), path, "YAML merge keys (<<) are not supported; write the keys out")
			continue
		}
		if first, dup := seen[key]; dup {
			d.c.addAt(posOf(k), kp, "duplicate key (first set at line %d)", first.line)
			continue
		}
		seen[key] = posOf(k)
		f, ok := fields[key]
		if !ok {
			msg := fmt.Sprintf("unknown key %q", key)
			if s := suggest(key, names); s != "" {
				msg += fmt.Sprintf(" (did you mean %q?)", s)
			} else {
				msg += " (valid: " + strings.Join(names, ", ") + ")"
			}
			d.c.addAt(posOf(k), kp, "%s", msg)
			d.c.seen[kp] = true
			continue
		}
		d.c.at[kp] = posOf(k)
		d.decode(val, v.FieldByIndex(f.index), kp)
	}
}

// suggest returns the known key closest to a misspelt one, if any is close.
func suggest(key string, names []string) string {
	best, bestDist := "", 3
	for _, n := range names {
		if dist := editDistance(key, n); dist < bestDist {
			best, bestDist = n, dist
		}
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
