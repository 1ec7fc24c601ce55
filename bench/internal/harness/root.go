package harness

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
)

// ModuleRoot finds the directory of anqi-edge's go.mod above the working
// directory: the product's module, not bench's own (anqi-edge/bench).
func ModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for range 64 {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && IsRootModule(b) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			break
		}
		dir = parent
	}
	return "", errors.New("run the bench programs inside the anqi-edge repository (no go.mod with module anqi-edge above the working directory)")
}

// IsRootModule reports whether a go.mod declares the module anqi-edge itself.
func IsRootModule(gomod []byte) bool {
	for _, line := range strings.Split(string(gomod), "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[0] == "module" {
			return strings.Trim(f[1], `"`) == "anqi-edge"
		}
	}
	return false
}
