package deploy_test

import (
	"fmt"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/BurntSushi/toml"

	"anqi-edge/config"
)

// composeFile is deploy/docker-compose.yml: the fields of the compose
// specification that the file uses. The strict decode refuses any other, so
// a misspelt key fails here instead of being ignored by an old compose.
type composeFile struct {
	Name     string                    `json:"name"`
	Services map[string]composeService `json:"services"`
	Volumes  map[string]*struct{}      `json:"volumes"`
}

type composeService struct {
	Image           string                       `json:"image"`
	Build           *composeBuild                `json:"build"`
	Command         []string                     `json:"command"`
	Environment     map[string]string            `json:"environment"`
	Ports           []string                     `json:"ports"`
	Volumes         []string                     `json:"volumes"`
	Healthcheck     *composeHealthcheck          `json:"healthcheck"`
	DependsOn       map[string]composeDependency `json:"depends_on"`
	StopGracePeriod string                       `json:"stop_grace_period"`
	ReadOnly        bool                         `json:"read_only"`
	CapDrop         []string                     `json:"cap_drop"`
	SecurityOpt     []string                     `json:"security_opt"`
	Restart         string                       `json:"restart"`
}

type composeBuild struct {
	Context    string `json:"context"`
	Dockerfile string `json:"dockerfile"`
}

type composeHealthcheck struct {
	Test        []string `json:"test"`
	Interval    string   `json:"interval"`
	Timeout     string   `json:"timeout"`
	StartPeriod string   `json:"start_period"`
	Retries     int      `json:"retries"`
}

type composeDependency struct {
	Condition string `json:"condition"`
}

func composeServices(t *testing.T) map[string]composeService {
	t.Helper()
	var c composeFile
	strictYAML(t, "docker-compose.yml", &c)
	for _, name := range []string{"anqi-edge", "redis", "mariadb", "anqicms"} {
		if _, ok := c.Services[name]; !ok {
			t.Fatalf("docker-compose.yml has no service %s (has %v)", name, c.Services)
		}
	}
	return c.Services
}

// composeEnv returns a service's environment with compose's ${VAR:-default}
// interpolation resolved to the defaults (what `docker compose up` uses with
// nothing exported).
func composeEnv(svc composeService) map[string]string {
	interp := regexp.MustCompile(`\$\{[A-Z_]+:-([^}]*)\}`)
	env := map[string]string{}
	for k, v := range svc.Environment {
		env[k] = interp.ReplaceAllString(v, "$1")
	}
	return env
}

// composeMount finds the bind mount of a service whose target is target, and
// returns its source relative to deploy/ (where the compose file is).
func composeMount(svc composeService, target string) (string, bool) {
	for _, v := range svc.Volumes {
		parts := strings.Split(v, ":")
		if len(parts) >= 2 && parts[1] == target && strings.HasPrefix(parts[0], ".") {
			return path.Clean(parts[0]), true
		}
	}
	return "", false
}

// composeEdgeConfig is deploy/compose/anqi-edge.toml: the [cdc] section the
// compose file mounts (cdc.table can only be set in a file).
type composeEdgeConfig struct {
	CDC struct {
		ServerID int `toml:"server_id"`
		Table    []struct {
			Name        string `toml:"name"`
			OrderColumn string `toml:"order_column"`
		} `toml:"table"`
	} `toml:"cdc"`
}

// configKnowsCDC reports whether the config package has the [cdc] section
// yet (it lands with the CDC issue).
func configKnowsCDC() bool {
	_, err := config.Parse([]byte("[cdc]\n"), nil)
	return err == nil
}

func TestCompose_WiresEdgeToAnqiCMSAndRedisWithHealthchecks(t *testing.T) {
	services := composeServices(t)
	for name, image := range map[string]string{
		"redis": "redis:7-alpine", "anqicms": "anqicms/anqicms:latest", "mariadb": "mariadb:10.11",
	} {
		if got := services[name].Image; got != image {
			t.Errorf("service %s image %q, want %q", name, got, image)
		}
	}
	edge := services["anqi-edge"]
	if b := edge.Build; b == nil || b.Context != ".." || b.Dockerfile != "deploy/Dockerfile" {
		t.Errorf("anqi-edge build = %+v, want context .. and dockerfile deploy/Dockerfile", b)
	}

	// Environment: real keys, pointing at the compose services.
	env := composeEnv(edge)
	for key, want := range map[string]string{
		"ANQI_EDGE_UPSTREAM_URL": "http://anqicms:8001", "ANQI_EDGE_REDIS_ADDRS": "redis:6379",
		"ANQI_EDGE_ADMIN_LISTEN": fmt.Sprintf("0.0.0.0:%d", adminPort),
	} {
		if env[key] != want {
			t.Errorf("anqi-edge environment %s=%q, want %q", key, env[key], want)
		}
	}
	cfg := composeEdgeParse(t, edge)
	if !slices.Equal(cfg.Redis.Addrs, []string{"redis:6379"}) || cfg.Upstream.URL != "http://anqicms:8001" {
		t.Errorf("env overrides did not take: redis.addrs %v, upstream.url %s", cfg.Redis.Addrs, cfg.Upstream.URL)
	}

	for name, svc := range services {
		test := []string(nil)
		if svc.Healthcheck != nil {
			test = svc.Healthcheck.Test
		}
		if len(test) < 2 || (test[0] != "CMD" && test[0] != "CMD-SHELL") {
			t.Errorf("service %s: healthcheck.test %v, want [\"CMD\", ...]", name, test)
		}
		for dep, cond := range svc.DependsOn {
			if _, ok := services[dep]; !ok {
				t.Errorf("service %s depends on unknown service %s", name, dep)
			}
			if c := cond.Condition; c != "service_healthy" && c != "service_started" && c != "service_completed_successfully" {
				t.Errorf("service %s depends_on %s: condition %q", name, dep, c)
			}
		}
		for _, v := range svc.Volumes {
			if src, _, _ := strings.Cut(v, ":"); strings.HasPrefix(src, ".") {
				if _, err := os.Stat(filepath.FromSlash(src)); err != nil {
					t.Errorf("service %s mounts %s, which is not in deploy/: %v", name, src, err)
				}
			}
		}
	}
	if edge.DependsOn["redis"].Condition != "service_healthy" {
		t.Error("anqi-edge should wait for a healthy redis")
	}
	if services["anqicms"].DependsOn["mariadb"].Condition != "service_healthy" {
		t.Error("anqicms should wait for a healthy mariadb")
	}
	if services["mariadb"].Environment["MARIADB_DATABASE"] == "" || services["mariadb"].Environment["MARIADB_ROOT_PASSWORD"] == "" {
		t.Error("mariadb needs MARIADB_ROOT_PASSWORD and MARIADB_DATABASE")
	}
	hc := edge.Healthcheck.Test
	if len(hc) < 2 || hc[1] != "/healthcheck" {
		t.Errorf("anqi-edge healthcheck %v should run the image's /healthcheck", hc)
	}
	if len(hc) > 2 && !strings.Contains(hc[2], fmt.Sprintf(":%d/healthz", port(t, cfg.Admin.Listen))) {
		t.Errorf("anqi-edge healthcheck %v does not probe admin.listen %s", hc, cfg.Admin.Listen)
	}
	stop, err := time.ParseDuration(edge.StopGracePeriod)
	if err != nil || stop <= cfg.Server.ShutdownGrace.Duration {
		t.Errorf("anqi-edge stop_grace_period %v (%v) must exceed server.shutdown_grace %v", stop, err, cfg.Server.ShutdownGrace)
	}
}

// composeEdgeParse runs config.Parse on what anqi-edge reads in compose: the
// mounted config file with the service's environment. Until the config
// package knows [cdc], the cdc keys are left out (and checked by shape in
// TestCompose_MariaDBHasARowBinlogAndTheCDCAccountAnqiEdgeLogsInWith).
func composeEdgeParse(t *testing.T, edge composeService) *config.Config {
	t.Helper()
	src, ok := composeMount(edge, configPath)
	if !ok {
		t.Fatalf("anqi-edge does not mount a config file at %s (volumes %v)", configPath, edge.Volumes)
	}
	data, err := os.ReadFile(filepath.FromSlash(src))
	if err != nil {
		t.Fatal(err)
	}
	var environ []string
	for k, v := range composeEnv(edge) {
		environ = append(environ, k+"="+v)
	}
	if !configKnowsCDC() {
		t.Logf("config has no [cdc] section yet: parsing deploy/%s without its cdc keys and ANQI_EDGE_CDC_* variables", src)
		data = nil
		environ = slices.DeleteFunc(environ, func(e string) bool { return strings.HasPrefix(e, "ANQI_EDGE_CDC_") })
	}
	cfg, err := config.Parse(data, environ)
	if err != nil {
		t.Fatalf("deploy/%s with compose's environment: %v", src, err)
	}
	return cfg
}

// mariadbFlags turns the mariadb service's command into flag -> value
// ("" for a flag without one), with - and _ treated alike as mariadbd does.
func mariadbFlags(t *testing.T, svc composeService) map[string]string {
	t.Helper()
	flags := map[string]string{}
	for _, a := range svc.Command {
		k, v, _ := strings.Cut(a, "=")
		if !strings.HasPrefix(k, "--") {
			t.Errorf("mariadb command %q: want only --flag[=value] arguments (passed to mariadbd)", a)
			continue
		}
		flags[strings.ReplaceAll(strings.TrimPrefix(k, "--"), "_", "-")] = v
	}
	return flags
}

func TestCompose_MariaDBHasARowBinlogAndTheCDCAccountAnqiEdgeLogsInWith(t *testing.T) {
	services := composeServices(t)
	edge, db := services["anqi-edge"], services["mariadb"]

	flags := mariadbFlags(t, db)
	if _, ok := flags["log-bin"]; !ok {
		t.Errorf("mariadb command %v lacks --log-bin: no binlog, no CDC", db.Command)
	}
	for k, want := range map[string]string{"binlog-format": "ROW", "binlog-row-metadata": "FULL"} {
		if !strings.EqualFold(flags[k], want) {
			t.Errorf("mariadb --%s=%q, want %s", k, flags[k], want)
		}
	}
	serverID, err := strconv.Atoi(flags["server-id"])
	if err != nil || serverID <= 0 {
		t.Errorf("mariadb --server-id=%q: want a positive number", flags["server-id"])
	}

	// anqi-edge logs in with the account the init script creates.
	env, dbEnv := composeEnv(edge), composeEnv(db)
	if env["ANQI_EDGE_CDC_ADDR"] != "mariadb:3306" {
		t.Errorf("anqi-edge ANQI_EDGE_CDC_ADDR=%q, want mariadb:3306", env["ANQI_EDGE_CDC_ADDR"])
	}
	for _, k := range []string{"ANQI_EDGE_CDC_USER", "ANQI_EDGE_CDC_PASSWORD"} {
		if env[k] == "" || env[k] != dbEnv[k] || edge.Environment[k] != db.Environment[k] {
			t.Errorf("%s: anqi-edge has %q, mariadb's init script gets %q; they must be the same", k, edge.Environment[k], db.Environment[k])
		}
	}
	script, ok := "", false
	for _, v := range db.Volumes {
		parts := strings.Split(v, ":")
		if len(parts) >= 2 && path.Dir(parts[1]) == "/docker-entrypoint-initdb.d" && strings.HasSuffix(parts[1], ".sh") {
			script, ok = path.Clean(parts[0]), true
		}
	}
	if !ok || script != "compose/mariadb-cdc-user.sh" {
		t.Errorf("mariadb mounts %q into /docker-entrypoint-initdb.d, want compose/mariadb-cdc-user.sh", script)
	} else if fi, err := os.Stat(filepath.FromSlash(script)); err != nil || fi.Mode()&0o111 == 0 {
		t.Errorf("deploy/%s must exist and be executable (the image sources non-executable scripts into its own shell): %v", script, err)
	}
	if edge.DependsOn["mariadb"].Condition != "service_healthy" {
		t.Error("anqi-edge should wait for a healthy mariadb (its CDC account exists only then)")
	}

	// The mounted file's [cdc]: a replica id of its own, tables in the
	// database AnqiCMS uses, each with its order column.
	src, _ := composeMount(edge, configPath)
	var cc composeEdgeConfig
	md, err := toml.DecodeFile(filepath.FromSlash(src), &cc)
	if err != nil {
		t.Fatalf("deploy/%s: %v", src, err)
	}
	if u := md.Undecoded(); len(u) > 0 {
		t.Errorf("deploy/%s: keys %v are not part of what compose sets there ([cdc] server_id and tables)", src, u)
	}
	if cc.CDC.ServerID <= 0 || cc.CDC.ServerID == serverID {
		t.Errorf("cdc.server_id = %d: want a positive replica id other than mariadb's --server-id=%d", cc.CDC.ServerID, serverID)
	}
	if len(cc.CDC.Table) == 0 {
		t.Errorf("deploy/%s has no [[cdc.table]]", src)
	}
	for _, tb := range cc.CDC.Table {
		dbName, _, qualified := strings.Cut(tb.Name, ".")
		if !qualified || dbName != db.Environment["MARIADB_DATABASE"] || tb.OrderColumn == "" {
			t.Errorf("[[cdc.table]] %+v: want name \"%s.TABLE\" and an order_column", tb, db.Environment["MARIADB_DATABASE"])
		}
	}

	t.Run("ConfigAcceptsTheCDCKeys", func(t *testing.T) {
		if !configKnowsCDC() {
			t.Skip("config has no [cdc] section yet (it lands with the CDC issue)")
		}
		composeEdgeParse(t, edge)
	})
}
