package vmtest

import (
	"strconv"
	"strings"
)

// BenchLine parses a result line a guest benchmark prints on the console,
// "BENCH NAME key=value ...", into its numeric values; fields that are not
// key=number are ignored. ok is false when line is not NAME's line.
func BenchLine(line, name string) (values map[string]float64, ok bool) {
	_, rest, ok := strings.Cut(line, "BENCH "+name+" ")
	if !ok {
		return nil, false
	}
	values = map[string]float64{}
	for _, f := range strings.Fields(rest) {
		k, v, ok := strings.Cut(f, "=")
		if !ok {
			continue
		}
		if x, err := strconv.ParseFloat(v, 64); err == nil {
			values[k] = x
		}
	}
	return values, len(values) > 0
}
