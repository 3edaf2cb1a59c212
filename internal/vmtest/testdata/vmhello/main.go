// Command vmhello is built by vmtest's own TestVM through Options.Binaries
// and run in the guest, to check that binaries are built and installed.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Printf("vmhello %s\n", os.Getenv("DIRECTORD_VM"))
}
