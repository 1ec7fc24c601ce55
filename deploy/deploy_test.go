// Package deploy_test keeps the deployment files honest. There is no Docker
// engine or cluster in CI, so everything is checked by parsing: the YAML and
// JSON files, the Dockerfile, the systemd unit, the Kubernetes manifests
// against config.toml's shutdown grace, the embedded config against
// config.Parse, and the Grafana dashboard and docs/metrics.md against the
// /metrics scrape of a running anqi-edge.
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
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/BurntSushi/toml"
	"go.uber.org/goleak"

	"anqi-edge/config"
	"anqi-edge/internal/edgetest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// Process-wide background workers of the libraries, started once.
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.updateServerDate.func1"),
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.(*HostClient).connsCleaner"),
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.(*TCPDialer).tcpAddrsClean"),
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.init.func1"),
		// A stopped server's idle-worker cleaner notices the stop only after
		// its 10s sleep.
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.(*workerPool).Start.func2"),
		// otter's cleaner ends once its cache is garbage collected.
		goleak.IgnoreAnyFunction("github.com/maypok86/otter/v2.periodicCleanUp[...]"),
		// Idle keep-alive connections of edgetest.Client.
		goleak.IgnoreAnyFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreAnyFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreAnyFunction("internal/poll.runtime_pollWait"),
	)
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

func parseYAMLFile(t *testing.T, rel string) []any {
	t.Helper()
	b, err := os.ReadFile(filepath.FromSlash(rel))
	if err != nil {
		t.Fatal(err)
	}
	docs, err := parseYAMLDocs(string(b))
	if err != nil {
		t.Fatalf("deploy/%s: %v", rel, err)
	}
	if len(docs) == 0 {
		t.Fatalf("deploy/%s: no YAML document", rel)
	}
	return docs
}

func TestYAML_EveryFileParses(t *testing.T) {
	files := deployFiles(t, ".yml", ".yaml")
	if len(files) < 6 {
		t.Fatalf("found only %v under deploy/; expected docker-compose.yml and the k8s manifests", files)
	}
	for _, f := range files {
		for i, doc := range parseYAMLFile(t, f) {
			if _, ok := doc.(map[string]any); !ok {
				t.Errorf("deploy/%s document %d: top level is %T, want a mapping", f, i, doc)
			}
		}
	}
}

func TestYAMLSubset_ReadsWhatItSupportsAndRejectsTheRest(t *testing.T) {
	src := `# comment
a: 1
b: "two # not a comment" # comment
c:
  - x
  - k: v
    n: [1, "two", three]
  -
    deep: true
d:
- same-indent
e: |
  line one

    indented # kept
f: {}
g:
`
	docs, err := parseYAMLDocs(src)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"a": int64(1),
		"b": "two # not a comment",
		"c": []any{"x", map[string]any{"k": "v", "n": []any{int64(1), "two", "three"}}, map[string]any{"deep": true}},
		"d": []any{"same-indent"},
		"e": "line one\n\n  indented # kept\n",
		"f": map[string]any{},
		"g": nil,
	}
	if len(docs) != 1 || !reflect.DeepEqual(docs[0], want) {
		t.Fatalf("parsed %#v\nwant   %#v", docs, want)
	}
	for name, bad := range map[string]string{
		"tab":           "a:\n\tb: 1\n",
		"duplicate key": "a: 1\na: 2\n",
		"bad indent":    "a:\n    b: 1\n  c: 2\n",
		"anchor":        "a: &x 1\n",
		"flow mapping":  "a: {b: 1}\n",
		"folded":        "a: >\n  text\n",
		"unclosed list": "a: [1, 2\n",
	} {
		if _, err := parseYAMLDocs(bad); err == nil {
			t.Errorf("%s: %q parsed without error", name, bad)
		}
	}
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

// systemdDuration parses a systemd time span: "25", "25s", "1min 30s", "500ms".
func systemdDuration(s string) (time.Duration, error) {
	if n, err := strconv.Atoi(s); err == nil {
		return time.Duration(n) * time.Second, nil
	}
	units := map[string]time.Duration{"us": time.Microsecond, "ms": time.Millisecond, "s": time.Second,
		"sec": time.Second, "m": time.Minute, "min": time.Minute, "h": time.Hour, "hr": time.Hour}
	var total time.Duration
	re := regexp.MustCompile(`^(\d+)\s*([a-z]+)$`)
	for _, part := range strings.Fields(s) {
		m := re.FindStringSubmatch(part)
		if m == nil || units[m[2]] == 0 {
			return 0, fmt.Errorf("bad time span %q", s)
		}
		n, _ := strconv.Atoi(m[1])
		total += time.Duration(n) * units[m[2]]
	}
	return total, nil
}

func TestSystemdUnit_IsHardenedAndOutlastsShutdownGrace(t *testing.T) {
	unit := map[string]map[string][]string{}
	section := ""
	for i, l := range strings.Split(string(repoFile(t, "deploy/anqi-edge.service")), "\n") {
		l = strings.TrimSpace(l)
		switch {
		case l == "" || l[0] == '#' || l[0] == ';':
		case l[0] == '[' && l[len(l)-1] == ']':
			section = l[1 : len(l)-1]
			unit[section] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(l, "=")
			if !ok || section == "" {
				t.Fatalf("anqi-edge.service line %d: %q is not Key=Value in a [Section]", i+1, l)
			}
			unit[section][k] = append(unit[section][k], v)
		}
	}
	svc := unit["Service"]
	one := func(k string) string {
		v := svc[k]
		if len(v) != 1 {
			t.Errorf("[Service] %s set %d times, want once", k, len(v))
			return ""
		}
		return v[0]
	}
	for k, want := range map[string]string{
		"ExecStart":               "/usr/local/bin/anqi-edge -config " + configPath,
		"NoNewPrivileges":         "yes",
		"ProtectSystem":           "strict",
		"ProtectHome":             "yes",
		"PrivateTmp":              "yes",
		"PrivateDevices":          "yes",
		"ProtectKernelTunables":   "yes",
		"ProtectKernelModules":    "yes",
		"ProtectKernelLogs":       "yes",
		"ProtectControlGroups":    "yes",
		"RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
		"CapabilityBoundingSet":   "",
		"Restart":                 "on-failure",
		"KillSignal":              "SIGTERM",
		"LimitNOFILE":             "1048576",
	} {
		if got := one(k); got != want {
			t.Errorf("[Service] %s=%s, want %s=%s", k, got, k, want)
		}
	}
	if _, ok := svc["AmbientCapabilities"]; ok {
		t.Error("[Service] AmbientCapabilities is set; it must stay commented out (only for ports below 1024)")
	}
	if (svc["DynamicUser"] == nil && svc["User"] == nil) || slices.Contains(svc["User"], "root") {
		t.Error("[Service] needs DynamicUser=yes or a dedicated User=")
	}
	if rs, err := systemdDuration(one("RestartSec")); err != nil || rs <= 0 {
		t.Errorf("[Service] RestartSec: %v (%v)", rs, err)
	}
	grace := repoConfig(t).Server.ShutdownGrace.Duration
	stop, err := systemdDuration(one("TimeoutStopSec"))
	if err != nil || stop <= grace {
		t.Errorf("[Service] TimeoutStopSec = %v (%v); must exceed server.shutdown_grace %v or systemd kills the drain", stop, err, grace)
	}
	if unit["Install"]["WantedBy"] == nil {
		t.Error("[Install] WantedBy missing: systemctl enable would do nothing")
	}
}

// k8sManifests parses the kustomization's resources, keyed by kind.
func k8sManifests(t *testing.T) map[string]map[string]any {
	t.Helper()
	kust := parseYAMLFile(t, "k8s/kustomization.yaml")[0]
	var listed []string
	for _, r := range getList(kust, "resources") {
		s, _ := r.(string)
		listed = append(listed, s)
	}
	var present []string
	for _, f := range deployFiles(t, ".yaml", ".yml") {
		if dir, name := path.Split(f); dir == "k8s/" && name != "kustomization.yaml" {
			present = append(present, name)
		}
	}
	slices.Sort(present)
	if s := slices.Sorted(slices.Values(listed)); !slices.Equal(s, present) {
		t.Errorf("kustomization.yaml resources %v, but deploy/k8s holds %v", listed, present)
	}
	out := map[string]map[string]any{}
	for _, f := range listed {
		for _, doc := range parseYAMLFile(t, "k8s/"+f) {
			m, _ := doc.(map[string]any)
			kind := getString(m, "kind")
			if kind == "" || getString(m, "apiVersion") == "" || getString(m, "metadata", "name") == "" {
				t.Errorf("k8s/%s: a document lacks apiVersion, kind or metadata.name", f)
				continue
			}
			if out[kind] != nil {
				t.Errorf("k8s/%s: a second %s", f, kind)
			}
			out[kind] = m
		}
	}
	for _, kind := range []string{"Deployment", "Service", "ConfigMap", "PodDisruptionBudget"} {
		if out[kind] == nil {
			t.Fatalf("deploy/k8s has no %s", kind)
		}
	}
	return out
}

func TestK8s_DeploymentProbesAdminPortAndOutlastsShutdownGrace(t *testing.T) {
	k := k8sManifests(t)
	dep := k["Deployment"]
	if getString(dep, "apiVersion") != "apps/v1" {
		t.Errorf("Deployment apiVersion %q", getString(dep, "apiVersion"))
	}
	if n, _ := getInt(dep, "spec", "replicas"); n < 2 {
		t.Errorf("replicas = %d, want at least 2", n)
	}
	pod := getMap(dep, "spec", "template", "spec")
	containers := getList(pod, "containers")
	if len(containers) != 1 {
		t.Fatalf("want one container, got %d", len(containers))
	}
	c := containers[0]
	ports := map[string]int64{}
	for _, p := range getList(c, "ports") {
		n, _ := getInt(p, "containerPort")
		ports[getString(p, "name")] = n
	}
	resolve := func(v any) int64 {
		switch p := v.(type) {
		case int64:
			return p
		case string:
			return ports[p]
		}
		return 0
	}
	for probe, want := range map[string]string{"livenessProbe": "/healthz", "readinessProbe": "/readyz"} {
		if got := getString(c, probe, "httpGet", "path"); got != want {
			t.Errorf("%s path %q, want %q", probe, got, want)
		}
		if p := resolve(get(c, probe, "httpGet", "port")); p != adminPort {
			t.Errorf("%s port resolves to %d, want the admin port %d", probe, p, adminPort)
		}
	}
	if !slices.Contains(mapsValues(ports), publicPort) {
		t.Errorf("container ports %v lack the public port %d", ports, publicPort)
	}

	// Shutdown budget: preStop sleep + shutdown_grace must fit the grace period.
	grace := repoConfig(t).Server.ShutdownGrace.Duration
	tgps, ok := getInt(pod, "terminationGracePeriodSeconds")
	preStop, _ := getInt(c, "lifecycle", "preStop", "sleep", "seconds")
	if preStop != preStopSecs {
		t.Errorf("preStop sleep = %ds, want %ds", preStop, preStopSecs)
	}
	if budget := time.Duration(tgps) * time.Second; !ok || budget <= grace+time.Duration(preStop)*time.Second {
		t.Errorf("terminationGracePeriodSeconds = %d; must exceed server.shutdown_grace %v + preStop %ds", tgps, grace, preStop)
	}

	if get(pod, "enableServiceLinks") != false {
		t.Error("enableServiceLinks must be false: the Service anqi-edge would inject ANQI_EDGE_PORT etc., unknown keys that stop anqi-edge")
	}
	if get(pod, "securityContext", "runAsNonRoot") != true {
		t.Error("pod securityContext.runAsNonRoot is not true")
	}
	if get(c, "securityContext", "readOnlyRootFilesystem") != true || get(c, "securityContext", "allowPrivilegeEscalation") != false {
		t.Error("container securityContext needs readOnlyRootFilesystem: true and allowPrivilegeEscalation: false")
	}
	for _, k := range []string{"requests", "limits"} {
		if getString(c, "resources", k, "cpu") == "" || getString(c, "resources", k, "memory") == "" {
			t.Errorf("resources.%s needs cpu and memory", k)
		}
	}

	env := containerEnv(c)
	if env["ANQI_EDGE_REDIS_ADDRS"] == "" {
		t.Error("container env lacks ANQI_EDGE_REDIS_ADDRS")
	}

	// The config volume is the ConfigMap, mounted where the image reads it.
	cmName := getString(k["ConfigMap"], "metadata", "name")
	var vol string
	for _, v := range getList(pod, "volumes") {
		if getString(v, "configMap", "name") == cmName {
			vol = getString(v, "name")
			for _, it := range getList(v, "configMap", "items") {
				if getString(it, "key") != "config.toml" || getString(it, "path") != "config.toml" {
					t.Errorf("configMap item %v: want key and path config.toml", it)
				}
			}
		}
	}
	mounted := false
	for _, m := range getList(c, "volumeMounts") {
		if getString(m, "name") == vol && path.Join(getString(m, "mountPath"), "config.toml") == configPath {
			mounted = true
		}
	}
	if vol == "" || !mounted {
		t.Errorf("ConfigMap %q is not mounted so that %s is its config.toml", cmName, configPath)
	}
}

func mapsValues(m map[string]int64) []int64 {
	var v []int64
	for _, n := range m {
		v = append(v, n)
	}
	return v
}

// containerEnv returns the container's env: literal values as given,
// valueFrom entries as "<from>".
func containerEnv(c any) map[string]string {
	env := map[string]string{}
	for _, e := range getList(c, "env") {
		v := getString(e, "value")
		if get(e, "valueFrom") != nil {
			v = "<from>"
		}
		env[getString(e, "name")] = v
	}
	return env
}

func TestK8s_ServiceExposesOnlyThePublicPort(t *testing.T) {
	k := k8sManifests(t)
	podLabels := getMap(k["Deployment"], "spec", "template", "metadata", "labels")
	containerPorts := map[string]int64{}
	for _, p := range getList(k["Deployment"], "spec", "template", "spec", "containers", 0, "ports") {
		n, _ := getInt(p, "containerPort")
		containerPorts[getString(p, "name")] = n
	}
	svcPorts := getList(k["Service"], "spec", "ports")
	if len(svcPorts) != 1 {
		t.Fatalf("Service has %d ports, want only 80 -> %d", len(svcPorts), publicPort)
	}
	target := get(svcPorts[0], "targetPort")
	if name, ok := target.(string); ok {
		target = containerPorts[name]
	}
	if p, _ := getInt(svcPorts[0], "port"); p != 80 || target != int64(publicPort) {
		t.Errorf("Service port %d -> %v, want 80 -> %d", p, target, publicPort)
	}
	if typ := getString(k["Service"], "spec", "type"); typ != "" && typ != "ClusterIP" {
		t.Errorf("Service type %q", typ)
	}
	for kind, sel := range map[string]map[string]any{
		"Service":             getMap(k["Service"], "spec", "selector"),
		"PodDisruptionBudget": getMap(k["PodDisruptionBudget"], "spec", "selector", "matchLabels"),
		"Deployment":          getMap(k["Deployment"], "spec", "selector", "matchLabels"),
	} {
		if len(sel) == 0 {
			t.Errorf("%s has no selector", kind)
		}
		for key, v := range sel {
			if podLabels[key] != v {
				t.Errorf("%s selects %s=%v, but the pods are labelled %v", kind, key, v, podLabels)
			}
		}
	}
	if n, _ := getInt(k["PodDisruptionBudget"], "spec", "minAvailable"); n != 1 {
		t.Errorf("PodDisruptionBudget minAvailable = %d, want 1", n)
	}
}

func TestK8s_ConfigMapIsTheRepoConfigWithClusterAddresses(t *testing.T) {
	k := k8sManifests(t)
	embedded := getString(k["ConfigMap"], "data", "config.toml")
	if embedded == "" {
		t.Fatal("ConfigMap has no data.config.toml")
	}
	// The Deployment's env must name real keys too: an unknown
	// ANQI_EDGE_ variable stops anqi-edge at start.
	var environ []string
	for name, v := range containerEnv(get(k["Deployment"], "spec", "template", "spec", "containers", 0)) {
		if v == "<from>" {
			v = "from-a-secret"
		}
		environ = append(environ, name+"="+v)
	}
	cfg, err := config.Parse([]byte(embedded), environ)
	if err != nil {
		t.Fatalf("ConfigMap config.toml with the Deployment's env: %v", err)
	}
	if cfg.Admin.Listen != fmt.Sprintf("0.0.0.0:%d", adminPort) {
		t.Errorf("admin.listen = %q: the kubelet's probes reach the pod IP, so it must be 0.0.0.0:%d", cfg.Admin.Listen, adminPort)
	}
	if cfg.Upstream.URL != "http://anqicms:8001" {
		t.Errorf("upstream.url = %q, want http://anqicms:8001", cfg.Upstream.URL)
	}
	if port(t, cfg.Server.Listen) != publicPort {
		t.Errorf("server.listen = %q, the Service targets %d", cfg.Server.Listen, publicPort)
	}

	// Every other key is the repository's: the ConfigMap is config.toml
	// with cluster addresses, not a fork that drifts.
	var repo, cm map[string]any
	if _, err := toml.Decode(string(repoFile(t, "config.toml")), &repo); err != nil {
		t.Fatal(err)
	}
	if _, err := toml.Decode(embedded, &cm); err != nil {
		t.Fatal(err)
	}
	for _, k := range [][2]string{{"admin", "listen"}, {"upstream", "url"}, {"redis", "addrs"}} {
		delete(repo[k[0]].(map[string]any), k[1])
		delete(cm[k[0]].(map[string]any), k[1])
	}
	if !reflect.DeepEqual(repo, cm) {
		t.Errorf("the ConfigMap's config.toml differs from config.toml in more than admin.listen, upstream.url and redis.addrs:\nrepo:      %v\nconfigmap: %v", repo, cm)
	}
}

func TestCompose_WiresEdgeToAnqiCMSAndRedisWithHealthchecks(t *testing.T) {
	doc := parseYAMLFile(t, "docker-compose.yml")[0]
	services := getMap(doc, "services")
	for name, image := range map[string]string{
		"redis": "redis:7-alpine", "anqicms": "anqicms/anqicms:latest", "mariadb": "mariadb:10.11",
	} {
		if got := getString(services, name, "image"); got != image {
			t.Errorf("service %s image %q, want %q", name, got, image)
		}
	}
	edge := services["anqi-edge"]
	ctx := getString(edge, "build", "context")
	if ctx != ".." || getString(edge, "build", "dockerfile") != "deploy/Dockerfile" {
		t.Errorf("anqi-edge build = %v, want context .. and dockerfile deploy/Dockerfile", get(edge, "build"))
	}

	// Environment: real keys, pointing at the compose services.
	env := map[string]string{}
	var environ []string
	interp := regexp.MustCompile(`\$\{[A-Z_]+:-([^}]*)\}`)
	for k, v := range getMap(edge, "environment") {
		s := interp.ReplaceAllString(fmt.Sprint(v), "$1")
		env[k] = s
		environ = append(environ, k+"="+s)
	}
	cfg, err := config.Parse(repoFile(t, "config.toml"), environ)
	if err != nil {
		t.Fatalf("the image's config.toml with compose's environment: %v", err)
	}
	for key, want := range map[string]string{
		"ANQI_EDGE_UPSTREAM_URL": "http://anqicms:8001", "ANQI_EDGE_REDIS_ADDRS": "redis:6379",
		"ANQI_EDGE_ADMIN_LISTEN": fmt.Sprintf("0.0.0.0:%d", adminPort),
	} {
		if env[key] != want {
			t.Errorf("anqi-edge environment %s=%q, want %q", key, env[key], want)
		}
	}
	if !slices.Equal(cfg.Redis.Addrs, []string{"redis:6379"}) || cfg.Upstream.URL != "http://anqicms:8001" {
		t.Errorf("env overrides did not take: redis.addrs %v, upstream.url %s", cfg.Redis.Addrs, cfg.Upstream.URL)
	}

	for name, svc := range services {
		test := getList(svc, "healthcheck", "test")
		if len(test) < 2 || (test[0] != "CMD" && test[0] != "CMD-SHELL") {
			t.Errorf("service %s: healthcheck.test %v, want [\"CMD\", ...]", name, test)
		}
		for dep, cond := range getMap(svc, "depends_on") {
			c := getString(cond, "condition")
			if services[dep] == nil {
				t.Errorf("service %s depends on unknown service %s", name, dep)
			}
			if c != "service_healthy" && c != "service_started" && c != "service_completed_successfully" {
				t.Errorf("service %s depends_on %s: condition %q", name, dep, c)
			}
		}
	}
	if getString(edge, "depends_on", "redis", "condition") != "service_healthy" {
		t.Error("anqi-edge should wait for a healthy redis")
	}
	if getString(services, "anqicms", "depends_on", "mariadb", "condition") != "service_healthy" {
		t.Error("anqicms should wait for a healthy mariadb")
	}
	if getString(services, "mariadb", "environment", "MARIADB_DATABASE") == "" ||
		getString(services, "mariadb", "environment", "MARIADB_ROOT_PASSWORD") == "" {
		t.Error("mariadb needs MARIADB_ROOT_PASSWORD and MARIADB_DATABASE")
	}
	hc := getList(edge, "healthcheck", "test")
	if len(hc) < 2 || hc[1] != "/healthcheck" {
		t.Errorf("anqi-edge healthcheck %v should run the image's /healthcheck", hc)
	}
	if len(hc) > 2 && !strings.Contains(fmt.Sprint(hc[2]), fmt.Sprintf(":%d/healthz", port(t, cfg.Admin.Listen))) {
		t.Errorf("anqi-edge healthcheck %v does not probe admin.listen %s", hc, cfg.Admin.Listen)
	}
	stop, err := time.ParseDuration(getString(edge, "stop_grace_period"))
	if err != nil || stop <= cfg.Server.ShutdownGrace.Duration {
		t.Errorf("anqi-edge stop_grace_period %v (%v) must exceed server.shutdown_grace %v", stop, err, cfg.Server.ShutdownGrace)
	}
}
