package harness

import (
	"path/filepath"
	"testing"
)

// bench is a module of its own (anqi-edge/bench); the harness must still
// build and benchmark the product's module above it.
func TestModuleRoot_IsTheProductModuleNotBenchs(t *testing.T) {
	root, err := ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	want, _ := filepath.Abs(filepath.Join("..", "..", ".."))
	if root != want {
		t.Errorf("ModuleRoot() = %s, want %s (the directory of go.mod's module anqi-edge)", root, want)
	}
	for gomod, want := range map[string]bool{
		"module anqi-edge\n\ngo 1.26\n":       true,
		"// c\nmodule \"anqi-edge\"\n":        true,
		"module anqi-edge/bench\n\ngo 1.26\n": false,
		"module anqi-edgex\n":                 false,
	} {
		if got := IsRootModule([]byte(gomod)); got != want {
			t.Errorf("IsRootModule(%q) = %v, want %v", gomod, got, want)
		}
	}
}
