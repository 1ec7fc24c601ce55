package deploy_test

import (
	"fmt"
	"path"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/BurntSushi/toml"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"anqi-edge/config"
)

// kustomization is deploy/k8s/kustomization.yaml: only the fields it uses,
// so anything else in the file fails the strict decode.
type kustomization struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Resources  []string `json:"resources"`
}

// k8sObjects holds the manifests the kustomization lists, decoded into the
// Kubernetes API types.
type k8sObjects struct {
	dep *appsv1.Deployment
	svc *corev1.Service
	cm  *corev1.ConfigMap
	pdb *policyv1.PodDisruptionBudget
}

// k8sManifests decodes the kustomization's resources strictly, one object
// of each kind.
func k8sManifests(t *testing.T) k8sObjects {
	t.Helper()
	var kust kustomization
	strictYAML(t, "k8s/kustomization.yaml", &kust)
	if kust.APIVersion != "kustomize.config.k8s.io/v1beta1" || kust.Kind != "Kustomization" {
		t.Errorf("kustomization.yaml is %s %s, want kustomize.config.k8s.io/v1beta1 Kustomization", kust.APIVersion, kust.Kind)
	}
	var present []string
	for _, f := range deployFiles(t, ".yaml", ".yml") {
		if dir, name := path.Split(f); dir == "k8s/" && name != "kustomization.yaml" {
			present = append(present, name)
		}
	}
	slices.Sort(present)
	if s := slices.Sorted(slices.Values(kust.Resources)); !slices.Equal(s, present) {
		t.Errorf("kustomization.yaml resources %v, but deploy/k8s holds %v", kust.Resources, present)
	}

	dec := k8sDecoder(t)
	var k k8sObjects
	seen := map[string]bool{}
	for _, f := range kust.Resources {
		for i, doc := range yamlDocs(t, "k8s/"+f) {
			obj, gvk, err := dec.Decode(doc, nil, nil)
			if err != nil {
				t.Errorf("k8s/%s document %d: %v", f, i, err)
				continue
			}
			if seen[gvk.Kind] {
				t.Errorf("k8s/%s: a second %s", f, gvk.Kind)
			}
			seen[gvk.Kind] = true
			switch o := obj.(type) {
			case *appsv1.Deployment:
				k.dep = o
			case *corev1.Service:
				k.svc = o
			case *corev1.ConfigMap:
				k.cm = o
			case *policyv1.PodDisruptionBudget:
				k.pdb = o
			default:
				t.Errorf("k8s/%s: unexpected %s", f, gvk)
				continue
			}
			if m, _ := obj.(interface{ GetName() string }); m == nil || m.GetName() == "" {
				t.Errorf("k8s/%s: %s has no metadata.name", f, gvk.Kind)
			}
		}
	}
	if k.dep == nil || k.svc == nil || k.cm == nil || k.pdb == nil {
		t.Fatalf("deploy/k8s needs a Deployment, Service, ConfigMap and PodDisruptionBudget; has %v", seen)
	}
	return k
}

// containerPorts maps the container's port names to numbers.
func containerPorts(c corev1.Container) map[string]int32 {
	ports := map[string]int32{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	return ports
}

// resolvePort turns a probe's or Service's port (number or name) into a number.
func resolvePort(p intstr.IntOrString, ports map[string]int32) int32 {
	if p.Type == intstr.String {
		return ports[p.StrVal]
	}
	return p.IntVal
}

func TestK8s_DeploymentProbesAdminPortAndOutlastsShutdownGrace(t *testing.T) {
	k := k8sManifests(t)
	dep := k.dep
	if dep.APIVersion != "apps/v1" {
		t.Errorf("Deployment apiVersion %q", dep.APIVersion)
	}
	if dep.Spec.Replicas == nil || *dep.Spec.Replicas < 2 {
		t.Errorf("replicas = %v, want at least 2", dep.Spec.Replicas)
	}
	pod := dep.Spec.Template.Spec
	if len(pod.Containers) != 1 {
		t.Fatalf("want one container, got %d", len(pod.Containers))
	}
	c := pod.Containers[0]
	ports := containerPorts(c)
	for name, probe := range map[string]*corev1.Probe{"/healthz": c.LivenessProbe, "/readyz": c.ReadinessProbe} {
		if probe == nil || probe.HTTPGet == nil {
			t.Errorf("no httpGet probe for %s", name)
			continue
		}
		if probe.HTTPGet.Path != name {
			t.Errorf("probe path %q, want %q", probe.HTTPGet.Path, name)
		}
		if p := resolvePort(probe.HTTPGet.Port, ports); p != adminPort {
			t.Errorf("%s probe port resolves to %d, want the admin port %d", name, p, adminPort)
		}
	}
	if !slices.Contains(slices.Collect(mapValues(ports)), publicPort) {
		t.Errorf("container ports %v lack the public port %d", ports, publicPort)
	}

	// Shutdown budget: preStop sleep + shutdown_grace must fit the grace period.
	grace := repoConfig(t).Server.ShutdownGrace.Duration
	var preStop int64
	if c.Lifecycle != nil && c.Lifecycle.PreStop != nil && c.Lifecycle.PreStop.Sleep != nil {
		preStop = c.Lifecycle.PreStop.Sleep.Seconds
	}
	if preStop != preStopSecs {
		t.Errorf("preStop sleep = %ds, want %ds", preStop, preStopSecs)
	}
	if tgps := pod.TerminationGracePeriodSeconds; tgps == nil || time.Duration(*tgps)*time.Second <= grace+time.Duration(preStop)*time.Second {
		t.Errorf("terminationGracePeriodSeconds = %v; must exceed server.shutdown_grace %v + preStop %ds", tgps, grace, preStop)
	}

	if pod.EnableServiceLinks == nil || *pod.EnableServiceLinks {
		t.Error("enableServiceLinks must be false: the Service anqi-edge would inject ANQI_EDGE_PORT etc., unknown keys that stop anqi-edge")
	}
	if sc := pod.SecurityContext; sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot {
		t.Error("pod securityContext.runAsNonRoot is not true")
	}
	if sc := c.SecurityContext; sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
		sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Error("container securityContext needs readOnlyRootFilesystem: true and allowPrivilegeEscalation: false")
	}
	for k, rl := range map[string]corev1.ResourceList{"requests": c.Resources.Requests, "limits": c.Resources.Limits} {
		if rl.Cpu().IsZero() || rl.Memory().IsZero() {
			t.Errorf("resources.%s needs cpu and memory", k)
		}
	}

	if containerEnv(c)["ANQI_EDGE_REDIS_ADDRS"] == "" {
		t.Error("container env lacks ANQI_EDGE_REDIS_ADDRS")
	}

	// The config volume is the ConfigMap, mounted where the image reads it.
	var vol string
	for _, v := range pod.Volumes {
		if v.ConfigMap != nil && v.ConfigMap.Name == k.cm.Name {
			vol = v.Name
			for _, it := range v.ConfigMap.Items {
				if it.Key != "config.toml" || it.Path != "config.toml" {
					t.Errorf("configMap item %+v: want key and path config.toml", it)
				}
			}
		}
	}
	mounted := false
	for _, m := range c.VolumeMounts {
		if m.Name == vol && path.Join(m.MountPath, "config.toml") == configPath {
			mounted = true
		}
	}
	if vol == "" || !mounted {
		t.Errorf("ConfigMap %q is not mounted so that %s is its config.toml", k.cm.Name, configPath)
	}
}

func mapValues(m map[string]int32) func(func(int32) bool) {
	return func(yield func(int32) bool) {
		for _, v := range m {
			if !yield(v) {
				return
			}
		}
	}
}

// containerEnv returns the container's env: literal values as given,
// valueFrom entries as "<from>".
func containerEnv(c corev1.Container) map[string]string {
	env := map[string]string{}
	for _, e := range c.Env {
		v := e.Value
		if e.ValueFrom != nil {
			v = "<from>"
		}
		env[e.Name] = v
	}
	return env
}

func TestK8s_ServiceExposesOnlyThePublicPort(t *testing.T) {
	k := k8sManifests(t)
	podLabels := k.dep.Spec.Template.Labels
	cports := containerPorts(k.dep.Spec.Template.Spec.Containers[0])
	if len(k.svc.Spec.Ports) != 1 {
		t.Fatalf("Service has %d ports, want only 80 -> %d", len(k.svc.Spec.Ports), publicPort)
	}
	sp := k.svc.Spec.Ports[0]
	if target := resolvePort(sp.TargetPort, cports); sp.Port != 80 || target != publicPort {
		t.Errorf("Service port %d -> %d, want 80 -> %d", sp.Port, target, publicPort)
	}
	if typ := k.svc.Spec.Type; typ != "" && typ != corev1.ServiceTypeClusterIP {
		t.Errorf("Service type %q", typ)
	}
	sels := map[string]map[string]string{"Service": k.svc.Spec.Selector}
	if s := k.pdb.Spec.Selector; s != nil {
		sels["PodDisruptionBudget"] = s.MatchLabels
	}
	if s := k.dep.Spec.Selector; s != nil {
		sels["Deployment"] = s.MatchLabels
	}
	for _, kind := range []string{"Service", "PodDisruptionBudget", "Deployment"} {
		sel := sels[kind]
		if len(sel) == 0 {
			t.Errorf("%s has no selector", kind)
		}
		for key, v := range sel {
			if podLabels[key] != v {
				t.Errorf("%s selects %s=%v, but the pods are labelled %v", kind, key, v, podLabels)
			}
		}
	}
	if m := k.pdb.Spec.MinAvailable; m == nil || *m != intstr.FromInt32(1) {
		t.Errorf("PodDisruptionBudget minAvailable = %v, want 1", m)
	}
}

func TestK8s_ConfigMapIsTheRepoConfigWithClusterAddresses(t *testing.T) {
	k := k8sManifests(t)
	embedded := k.cm.Data["config.toml"]
	if embedded == "" {
		t.Fatal("ConfigMap has no data.config.toml")
	}
	// The Deployment's env must name real keys too: an unknown
	// ANQI_EDGE_ variable stops anqi-edge at start.
	var environ []string
	for name, v := range containerEnv(k.dep.Spec.Template.Spec.Containers[0]) {
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
