package deploy_test

// Decoding of the YAML files in deploy/. Everything is strict: an unknown
// field, a duplicate key or a value of the wrong type fails the test, so a
// typo in a manifest ("readinesProbe", "replicas: two") is caught here and
// not by the cluster. The Kubernetes manifests go through apimachinery's own
// strict serializer into the k8s.io/api types, which is what kubectl's
// server-side field validation does; everything else through
// sigs.k8s.io/yaml.UnmarshalStrict into small structs that list every field
// the file may use. Both libraries are test-only: the product never imports
// them (TestProductBinary_DoesNotLinkTheTestOnlyYAMLAndKubernetesModules).

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/runtime"
	kjson "k8s.io/apimachinery/pkg/runtime/serializer/json"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// yamlDocs splits the file at deploy/rel into its YAML documents ("---"),
// dropping documents that hold only comments.
func yamlDocs(t *testing.T, rel string) [][]byte {
	t.Helper()
	b, err := os.ReadFile(filepath.FromSlash(rel))
	if err != nil {
		t.Fatal(err)
	}
	docs, err := splitYAML(b)
	if err != nil {
		t.Fatalf("deploy/%s: %v", rel, err)
	}
	if len(docs) == 0 {
		t.Fatalf("deploy/%s: no YAML document", rel)
	}
	return docs
}

func splitYAML(b []byte) ([][]byte, error) {
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(b)))
	var docs [][]byte
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			return nil, err
		}
		j, err := yaml.YAMLToJSONStrict(doc)
		if err != nil {
			return nil, err
		}
		if string(bytes.TrimSpace(j)) != "null" { // comments only
			docs = append(docs, doc)
		}
	}
}

// strictYAML decodes the single document in deploy/rel into v, refusing
// unknown fields, duplicate keys and wrong types.
func strictYAML(t *testing.T, rel string, v any) {
	t.Helper()
	docs := yamlDocs(t, rel)
	if len(docs) != 1 {
		t.Fatalf("deploy/%s: %d YAML documents, want 1", rel, len(docs))
	}
	if err := yaml.UnmarshalStrict(docs[0], v); err != nil {
		t.Fatalf("deploy/%s: %v", rel, err)
	}
}

// k8sDecoder decodes the kinds deploy/k8s uses into their k8s.io/api types,
// strictly: unknown and duplicate fields are errors, as are kinds it was not
// told about.
func k8sDecoder(t *testing.T) runtime.Decoder {
	t.Helper()
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{corev1.AddToScheme, appsv1.AddToScheme, policyv1.AddToScheme} {
		if err := add(scheme); err != nil {
			t.Fatal(err)
		}
	}
	return kjson.NewSerializerWithOptions(kjson.DefaultMetaFactory, scheme, scheme,
		kjson.SerializerOptions{Yaml: true, Strict: true})
}

func TestYAML_EveryFileParses(t *testing.T) {
	files := deployFiles(t, ".yml", ".yaml")
	if len(files) < 6 {
		t.Fatalf("found only %v under deploy/; expected docker-compose.yml and the k8s manifests", files)
	}
	for _, f := range files {
		for i, doc := range yamlDocs(t, f) {
			var m map[string]any
			if err := yaml.UnmarshalStrict(doc, &m); err != nil {
				t.Errorf("deploy/%s document %d: top level is not a mapping: %v", f, i, err)
			}
		}
	}
}

// The decoders the other tests rely on must refuse what a loose decoder
// would let through.
func TestStrictDecode_RefusesUnknownFieldsDuplicateKeysAndWrongTypes(t *testing.T) {
	dec := k8sDecoder(t)
	const deployment = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: x\nspec:\n"
	if _, _, err := dec.Decode([]byte(deployment+"  replicas: 2\n"), nil, nil); err != nil {
		t.Fatalf("a valid Deployment: %v", err)
	}
	for name, bad := range map[string]string{
		"unknown field":  deployment + "  replica: 2\n",
		"duplicate key":  deployment + "  replicas: 2\n  replicas: 3\n",
		"wrong type":     deployment + "  replicas: two\n",
		"unknown kind":   "apiVersion: apps/v1\nkind: Deploymnt\nmetadata:\n  name: x\n",
		"nested unknown": deployment + "  template:\n    spec:\n      containers:\n        - name: a\n          readinesProbe: {}\n",
	} {
		if _, _, err := dec.Decode([]byte(bad), nil, nil); err == nil {
			t.Errorf("k8s decoder, %s: accepted %q", name, bad)
		}
	}

	var c composeFile
	if err := yaml.UnmarshalStrict([]byte("services:\n  a:\n    image: x\n"), &c); err != nil {
		t.Fatalf("a valid compose file: %v", err)
	}
	for name, bad := range map[string]string{
		"unknown field": "services:\n  a:\n    imag: x\n",
		"duplicate key": "services:\n  a:\n    image: x\n    image: y\n",
		"wrong type":    "services:\n  a:\n    ports: 8080\n",
		"tab":           "services:\n\ta:\n",
	} {
		if err := yaml.UnmarshalStrict([]byte(bad), &c); err == nil {
			t.Errorf("compose decoder, %s: accepted %q", name, bad)
		}
	}
}

// The YAML and Kubernetes modules are in go.mod for these tests only; the
// binary that ships must not carry them.
func TestProductBinary_DoesNotLinkTheTestOnlyYAMLAndKubernetesModules(t *testing.T) {
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("go tool not on PATH: %v", err)
	}
	for _, pkg := range []string{".", "./deploy/healthcheck"} {
		cmd := exec.Command(gobin, "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", pkg)
		cmd.Dir = ".."
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("go list -deps %s: %v", pkg, err)
		}
		for _, dep := range strings.Fields(string(out)) {
			for _, banned := range []string{"k8s.io/", "sigs.k8s.io/", "go.yaml.in/", "gopkg.in/yaml"} {
				if strings.HasPrefix(dep, banned) {
					t.Errorf("%s links %s, a test-only dependency", pkg, dep)
				}
			}
		}
	}
}
