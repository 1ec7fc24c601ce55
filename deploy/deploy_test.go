// Package deploy_test keeps the deployment files honest. There is no Docker
// engine or cluster in CI, so the files are decoded strictly and checked
// against each other and against the code: the Kubernetes manifests into the
// k8s.io/api types, the compose file into the fields compose defines, the
// Dockerfile, the image name everywhere, the embedded configs against
// config.Parse, and the Grafana dashboard and docs/metrics.md against the
// /metrics scrape of a running anqi-edge. What can run here does: the systemd
// unit goes through systemd-analyze verify, the healthcheck binary against a
// live admin port, the MariaDB flags and CDC grants against a real mariadbd,
// and deploy/demo.sh end to end.
package deploy_test

import (
	"encoding/json"
	"fmt"
	"go/build"
	"io/fs"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"anqi-edge/config"
	"anqi-edge/internal/edgetest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(removeBuilds{m}, append(edgetest.LibraryGoroutines,
		goleak.IgnoreAnyFunction("internal/poll.runtime_pollWait"))...)
}

// The paths and ports every deployment file must agree on.
const (
	configPath  = "/etc/anqi-edge/config.toml"
	publicPort  = 8080
	adminPort   = 9090
	preStopSecs = 5
)

// repoFile reads a file by its path from the repository root (tests run in
// deploy/).
func repoFile(t *testing.T, rel string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", filepath.FromSlash(rel)))
	if err != nil {
		t.Fatalf("read %s: %v", rel, err)
	}
	return b
}

// repoConfig is the repository's config.toml, parsed and validated.
func repoConfig(t *testing.T) *config.Config {
	t.Helper()
	c, err := config.Parse(repoFile(t, "config.toml"), nil)
	if err != nil {
		t.Fatalf("config.toml: %v", err)
	}
	return c
}

func port(t *testing.T, listen string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(listen)
	if err != nil {
		t.Fatalf("listen address %q: %v", listen, err)
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Fatalf("listen address %q: %v", listen, err)
	}
	return n
}

// deployFiles lists files under deploy/ whose names end in one of exts.
func deployFiles(t *testing.T, exts ...string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && slices.Contains(exts, filepath.Ext(p)) {
			out = append(out, filepath.ToSlash(p))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestJSON_EveryFileParses(t *testing.T) {
	files := deployFiles(t, ".json")
	if len(files) == 0 {
		t.Fatal("no JSON file under deploy/ (the Grafana dashboard is one)")
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var v any
		if err := json.Unmarshal(b, &v); err != nil {
			t.Errorf("deploy/%s: %v", f, err)
		}
	}
}

// dockerInstr is one Dockerfile instruction, continuation lines joined.
type dockerInstr struct {
	cmd, args string
	stage     int // index of the FROM it belongs to
}

func parseDockerfile(t *testing.T, src string) []dockerInstr {
	t.Helper()
	var out []dockerInstr
	stage := -1
	var cur strings.Builder
	for _, line := range strings.Split(src, "\n") {
		trim := strings.TrimSpace(line)
		if cur.Len() == 0 && (trim == "" || strings.HasPrefix(trim, "#")) {
			continue
		}
		if strings.HasSuffix(trim, "\\") {
			cur.WriteString(strings.TrimSuffix(trim, "\\") + " ")
			continue
		}
		cur.WriteString(trim)
		cmd, args, _ := strings.Cut(cur.String(), " ")
		cur.Reset()
		cmd = strings.ToUpper(cmd)
		if cmd == "FROM" {
			stage++
		}
		out = append(out, dockerInstr{cmd: cmd, args: strings.TrimSpace(args), stage: stage})
	}
	return out
}

// jsonArgs parses an exec-form argument list (["a", "b"]).
func jsonArgs(t *testing.T, what, s string) []string {
	t.Helper()
	var v []string
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Fatalf("%s must use the exec (JSON array) form, got %q: %v", what, s, err)
	}
	return v
}

func TestDockerfile_BuildsTheCIPackageStaticallyIntoANonRootImage(t *testing.T) {
	instrs := parseDockerfile(t, string(repoFile(t, "deploy/Dockerfile")))
	var froms []string
	for _, in := range instrs {
		if in.cmd == "FROM" {
			froms = append(froms, in.args)
		}
	}
	if len(froms) != 2 || !strings.HasPrefix(froms[0], "golang:1.26 ") || froms[1] != "gcr.io/distroless/static-debian12:nonroot" {
		t.Fatalf("FROM lines = %q; want a golang:1.26 builder stage and gcr.io/distroless/static-debian12:nonroot", froms)
	}
	builder := strings.Fields(froms[0])
	if len(builder) != 3 || !strings.EqualFold(builder[1], "AS") {
		t.Fatalf("builder stage %q must be named (FROM golang:1.26 AS build)", froms[0])
	}
	stageName := builder[2]

	// The main binary: exactly CI's package, static and stripped.
	const mainBuild = `CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/anqi-edge .`
	built := map[string]string{} // output path -> package
	for _, in := range instrs {
		if in.cmd != "RUN" || !strings.Contains(in.args, "go build") {
			continue
		}
		if in.stage != 0 {
			t.Errorf("go build runs in the runtime stage: %q", in.args)
		}
		f := strings.Fields(in.args)
		if f[0] != "CGO_ENABLED=0" {
			t.Errorf("%q: not a static build (want CGO_ENABLED=0 first)", in.args)
		}
		out := ""
		for i, a := range f {
			if a == "-o" && i+1 < len(f) {
				out = f[i+1]
			}
		}
		built[out] = f[len(f)-1]
	}
	found := false
	for _, in := range instrs {
		found = found || (in.cmd == "RUN" && in.args == mainBuild)
	}
	if !found {
		t.Errorf("no RUN %s in the builder stage", mainBuild)
	}
	if pkg, err := build.ImportDir("..", 0); err != nil || pkg.Name != "main" {
		t.Errorf("the module root (what `go build .` builds, in CI and in the image) is not package main: %v", err)
	}

	var user, entry, health string
	var exposed []string
	copied := map[string]string{} // destination in the runtime image -> source
	for _, in := range instrs {
		if in.stage != 1 {
			continue
		}
		switch in.cmd {
		case "USER":
			user = in.args
		case "ENTRYPOINT":
			entry = in.args
		case "HEALTHCHECK":
			health = in.args
		case "EXPOSE":
			exposed = append(exposed, strings.Fields(in.args)...)
		case "COPY":
			f := strings.Fields(in.args)
			src, dst := f[len(f)-2], f[len(f)-1]
			if len(f) == 3 && f[0] == "--from="+stageName {
				if _, ok := built[src]; !ok {
					t.Errorf("COPY %s: the builder stage does not build %s (it builds %v)", in.args, src, built)
				}
			} else if len(f) != 2 {
				t.Errorf("COPY %s: want COPY [--from=%s] SRC DST", in.args, stageName)
			}
			copied[dst] = src
		case "RUN":
			t.Errorf("RUN in the distroless runtime stage (it has no shell): %q", in.args)
		}
	}

	uid, _, _ := strings.Cut(user, ":")
	if user == "" || uid == "0" || uid == "root" {
		t.Errorf("runtime USER = %q; want a non-root user (65532:65532, distroless nonroot)", user)
	}
	if uid != "" && uid != "0" {
		if _, err := strconv.Atoi(uid); err != nil {
			t.Errorf("runtime USER %q: use a numeric uid so Kubernetes runAsNonRoot can verify it", user)
		}
	}

	wantEntry := []string{"/anqi-edge", "-config", configPath}
	if got := jsonArgs(t, "ENTRYPOINT", entry); !slices.Equal(got, wantEntry) {
		t.Errorf("ENTRYPOINT = %q, want %q", got, wantEntry)
	}
	if copied["/anqi-edge"] != "/out/anqi-edge" || built["/out/anqi-edge"] != "." {
		t.Errorf("the runtime /anqi-edge is not the `go build .` output (copies %v, builds %v)", copied, built)
	}
	if copied[configPath] != "config.toml" {
		t.Errorf("the image must copy the repository's config.toml to %s (copies %v)", configPath, copied)
	}

	cfg := repoConfig(t)
	for _, p := range []int{port(t, cfg.Server.Listen), port(t, cfg.Admin.Listen)} {
		if !slices.Contains(exposed, strconv.Itoa(p)) {
			t.Errorf("EXPOSE %v lacks %d (server.listen %s, admin.listen %s)", exposed, p, cfg.Server.Listen, cfg.Admin.Listen)
		}
	}

	// HEALTHCHECK [options] CMD ["/healthcheck"]: a binary the image has,
	// built from a main package.
	_, cmd, ok := strings.Cut(health, "CMD ")
	if !ok {
		t.Fatalf("HEALTHCHECK = %q; want HEALTHCHECK [options] CMD [...]", health)
	}
	hc := jsonArgs(t, "HEALTHCHECK CMD", cmd)
	src, ok := copied[hc[0]]
	if !ok {
		t.Fatalf("HEALTHCHECK runs %s, which the runtime stage does not copy in (copies %v)", hc[0], copied)
	}
	pkgDir := built[src]
	if pkg, err := build.ImportDir(filepath.Join("..", filepath.FromSlash(pkgDir)), 0); err != nil || pkg.Name != "main" {
		t.Errorf("HEALTHCHECK binary is built from %q, which is not a main package: %v", pkgDir, err)
	}
}

// TestDockerignore_KeepsWhatTheBuildNeeds reads deploy/Dockerfile.dockerignore
// with Docker's rules (a pattern matches a path or any parent directory; the
// last matching line wins; ! re-includes).
func TestDockerignore_KeepsWhatTheBuildNeeds(t *testing.T) {
	var pats []string
	for _, l := range strings.Split(string(repoFile(t, "deploy/Dockerfile.dockerignore")), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			pats = append(pats, l)
		}
	}
	ignored := func(p string) bool {
		out := false
		for _, pat := range pats {
			neg := strings.HasPrefix(pat, "!")
			pat = path.Clean(strings.TrimPrefix(strings.TrimPrefix(pat, "!"), "/"))
			for q := p; q != "." && q != "/"; q = path.Dir(q) {
				if ok, _ := path.Match(pat, q); ok {
					out = !neg
					break
				}
			}
		}
		return out
	}
	// Everything the two binaries are built from: go.mod, go.sum and the Go
	// and embedded files of every package of this module they import.
	needed := []string{"go.mod", "go.sum"}
	seen := map[string]bool{}
	var walk func(dir string)
	walk = func(dir string) {
		if seen[dir] {
			return
		}
		seen[dir] = true
		pkg, err := build.ImportDir(filepath.Join("..", filepath.FromSlash(dir)), 0)
		if err != nil {
			t.Fatalf("package %s: %v", dir, err)
		}
		for _, f := range append(pkg.GoFiles, pkg.EmbedPatterns...) {
			needed = append(needed, path.Join(dir, f))
		}
		for _, imp := range pkg.Imports {
			if rest, ok := strings.CutPrefix(imp, "anqi-edge/"); ok {
				walk(rest)
			}
		}
	}
	walk(".")
	walk("deploy/healthcheck")
	if len(needed) < 10 {
		t.Fatalf("found only %v to build; the import walk is broken", needed)
	}
	for _, p := range needed {
		if ignored(p) {
			t.Errorf("%s is excluded from the build context, but the image build needs it", p)
		}
	}
	for _, p := range []string{".git/HEAD", "anqi-edge", "fake-anqicms", "deploy/k8s/deployment.yaml"} {
		if !ignored(p) {
			t.Errorf("%s is sent to the Docker daemon; exclude it", p)
		}
	}
}

func TestHealthcheck_ExitsZeroOnlyWhenHealthzAnswers200(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a binary")
	}
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("go tool not on PATH: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "healthcheck")
	b := exec.Command(gobin, "build", "-buildvcs=false", "-o", bin, "./healthcheck")
	b.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := b.CombinedOutput(); err != nil {
		t.Fatalf("go build ./deploy/healthcheck: %v\n%s", err, out)
	}
	env := edgetest.Start(t, edgetest.Options{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	closed := closedAddr(t)

	for _, c := range []struct {
		url    string
		wantOK bool
	}{
		{env.Admin + "/healthz", true},
		{srv.URL + "/healthz", false},
		{"http://" + closed + "/healthz", false},
	} {
		err := exec.Command(bin, c.url).Run()
		if (err == nil) != c.wantOK {
			t.Errorf("healthcheck %s: err = %v, want success %v", c.url, err, c.wantOK)
		}
	}
	src := string(repoFile(t, "deploy/healthcheck/main.go"))
	if want := fmt.Sprintf(`"http://127.0.0.1:%d/healthz"`, adminPort); !strings.Contains(src, want) {
		t.Errorf("deploy/healthcheck/main.go: default URL is not %s", want)
	}
}

// closedAddr returns a 127.0.0.1 address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}
