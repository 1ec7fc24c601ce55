package deploy_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

// builtBinaries builds the repository's commands once per test run, into a
// directory TestMain removes.
var builtBinaries struct {
	sync.Mutex
	dir  string
	bins map[string]string // package -> binary path
}

// buildBinary builds the main package pkg (a path from the repository root,
// e.g. "." or "./cmd/fake-anqicms") and returns the binary's path.
func buildBinary(t *testing.T, pkg, name string) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds a binary")
	}
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("go tool not on PATH: %v", err)
	}
	b := &builtBinaries
	b.Lock()
	defer b.Unlock()
	if p, ok := b.bins[pkg]; ok {
		return p
	}
	if b.dir == "" {
		if b.dir, err = os.MkdirTemp("", "anqi-edge-deploy-test-"); err != nil {
			t.Fatal(err)
		}
		b.bins = map[string]string{}
	}
	out := filepath.Join(b.dir, name)
	cmd := exec.Command(gobin, "build", "-o", out, pkg)
	cmd.Dir = ".."
	if msg, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build -o %s %s: %v\n%s", name, pkg, err, msg)
	}
	b.bins[pkg] = out
	return out
}

// edgeBinary is anqi-edge built from this tree (`go build .`).
func edgeBinary(t *testing.T) string { return buildBinary(t, ".", "anqi-edge") }

// removeBuilds runs the tests, then deletes what buildBinary built.
type removeBuilds struct{ m interface{ Run() int } }

func (r removeBuilds) Run() int {
	code := r.m.Run()
	if builtBinaries.dir != "" {
		os.RemoveAll(builtBinaries.dir)
	}
	return code
}
