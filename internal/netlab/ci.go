package netlab

import (
	"os"
	"strings"
)

// inCI reports whether the CI environment variable is set to a true value;
// there a privileged test that cannot run must fail rather than skip.
func inCI() bool {
	switch strings.ToLower(os.Getenv("CI")) {
	case "true", "1", "yes":
		return true
	}
	return false
}
