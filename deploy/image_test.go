package deploy_test

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// imageRepo is the image's one name; the tag is the Makefile's VERSION.
const imageRepo = "anqi-edge/anqi-edge"

// imageName is imageRepo tagged with the Makefile's VERSION, after checking
// that the Makefile's IMAGE is built from the two.
func imageName(t *testing.T) string {
	t.Helper()
	mk := string(repoFile(t, "Makefile"))
	v := regexp.MustCompile(`(?m)^VERSION \?= (\S+)$`).FindStringSubmatch(mk)
	if v == nil {
		t.Fatal("Makefile: no `VERSION ?= X` line")
	}
	if !regexp.MustCompile(`(?m)^IMAGE \?= ` + regexp.QuoteMeta(imageRepo+":$(VERSION)") + `$`).MatchString(mk) {
		t.Errorf("Makefile: want `IMAGE ?= %s:$(VERSION)`", imageRepo)
	}
	if !strings.Contains(mk, "docker build -f deploy/Dockerfile --build-arg VERSION=$(VERSION) -t $(IMAGE) .") {
		t.Error("Makefile: the image target must build deploy/Dockerfile as $(IMAGE) with --build-arg VERSION=$(VERSION)")
	}
	return imageRepo + ":" + v[1]
}

func TestImage_OneNameInDockerfileComposeKubernetesAndDocs(t *testing.T) {
	want := imageName(t)
	version := strings.TrimPrefix(want, imageRepo+":")

	// The Dockerfile labels the image with that name (ARG default = VERSION).
	var arg, ref string
	for _, in := range parseDockerfile(t, string(repoFile(t, "deploy/Dockerfile"))) {
		if in.stage != 1 {
			continue
		}
		switch in.cmd {
		case "ARG":
			if k, v, ok := strings.Cut(in.args, "="); ok && k == "VERSION" {
				arg = v
			}
		case "LABEL":
			for _, m := range regexp.MustCompile(`(\S+)="([^"]*)"`).FindAllStringSubmatch(in.args, -1) {
				if m[1] == "org.opencontainers.image.ref.name" {
					ref = m[2]
				}
			}
		}
	}
	if arg != version {
		t.Errorf("Dockerfile runtime stage ARG VERSION=%q, want the Makefile's %q", arg, version)
	}
	if got := strings.ReplaceAll(ref, "${VERSION}", arg); got != want {
		t.Errorf("Dockerfile LABEL org.opencontainers.image.ref.name=%q (= %q), want %q", ref, got, want)
	}

	if got := composeServices(t)["anqi-edge"].Image; got != want {
		t.Errorf("docker-compose.yml anqi-edge image %q, want %q", got, want)
	}
	for _, c := range k8sManifests(t).dep.Spec.Template.Spec.Containers {
		if c.Image != want {
			t.Errorf("k8s Deployment container %s image %q, want %q", c.Name, c.Image, want)
		}
	}

	// Every image reference in the docs and files: `docker build -t X`,
	// `docker run ... X`, or the name itself with another tag.
	files := []string{"Makefile", "README.md", "bench/README.md"}
	for _, f := range deployFiles(t, "", ".md", ".yml", ".yaml", ".sh", ".service", ".toml") {
		files = append(files, "deploy/"+f)
	}
	tagged := regexp.MustCompile(regexp.QuoteMeta(imageRepo) + `:[\w.${}()-]+`)
	buildTag := regexp.MustCompile(`docker build\b[^\n]*?\s-t\s+(\S+)`)
	oldNames := regexp.MustCompile(`\banqi-edge:(latest|local)\b|\s-t anqi-edge\s`)
	for _, f := range files {
		b, err := os.ReadFile(filepath.Join("..", filepath.FromSlash(f)))
		if os.IsNotExist(err) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		s := string(b)
		for _, m := range tagged.FindAllString(s, -1) {
			if m != want && m != imageRepo+":$(VERSION)" && m != imageRepo+":${VERSION}" && m != imageRepo+":VERSION" {
				t.Errorf("%s names the image %s, want %s", f, m, want)
			}
		}
		for _, m := range buildTag.FindAllStringSubmatch(s, -1) {
			if m[1] != want && m[1] != "$(IMAGE)" {
				t.Errorf("%s: docker build -t %s, want %s", f, m[1], want)
			}
		}
		if m := oldNames.FindString(s); m != "" {
			t.Errorf("%s still uses the old image name %q", f, strings.TrimSpace(m))
		}
	}
}
