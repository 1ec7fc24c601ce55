package deploy_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

const unitExecPath = "/usr/local/bin/anqi-edge"

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

// TestSystemdUnit_PassesSystemdAnalyzeVerify runs systemd's own checker on
// the unit: unknown or misspelt directives, bad values and a missing
// ExecStart binary are all reported. The unit names /usr/local/bin/anqi-edge,
// so a copy points at a freshly built binary instead.
func TestSystemdUnit_PassesSystemdAnalyzeVerify(t *testing.T) {
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skipf("systemd-analyze not installed: %v", err)
	}
	unit := string(repoFile(t, "deploy/anqi-edge.service"))
	if strings.Count(unit, unitExecPath) != 2 { // the install comment and ExecStart
		t.Fatalf("deploy/anqi-edge.service: want %s in the install comment and in ExecStart", unitExecPath)
	}
	bin := edgeBinary(t)
	dir := t.TempDir()
	copyPath := filepath.Join(dir, "anqi-edge.service")
	if err := os.WriteFile(copyPath, []byte(strings.ReplaceAll(unit, unitExecPath, bin)), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(sa, "verify", copyPath).CombinedOutput()
	if err != nil {
		t.Fatalf("systemd-analyze verify deploy/anqi-edge.service: %v\n%s", err, out)
	}
	// Unknown keys are only warnings (exit 0): any line about our unit fails.
	for _, l := range strings.Split(string(out), "\n") {
		if strings.Contains(l, "anqi-edge.service") {
			t.Errorf("systemd-analyze verify: %s", l)
		}
	}
}

// TestSystemdAnalyzeVerify_CatchesAMisspeltDirective keeps the test above
// honest: the checker it relies on does see a typo in a unit.
func TestSystemdAnalyzeVerify_CatchesAMisspeltDirective(t *testing.T) {
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skipf("systemd-analyze not installed: %v", err)
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "true")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	unit := filepath.Join(dir, "typo.service")
	src := fmt.Sprintf("[Service]\nExecStart=%s\nProtectSystm=strict\n", bin)
	if err := os.WriteFile(unit, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	out, _ := exec.Command(sa, "verify", unit).CombinedOutput()
	if !strings.Contains(string(out), "ProtectSystm") {
		t.Errorf("systemd-analyze verify did not report the misspelt ProtectSystm:\n%s", out)
	}
}
