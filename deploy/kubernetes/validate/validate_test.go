package main

import (
	"path/filepath"
	"strings"
	"testing"
)

// repoInputs reads the example manifests, ../*.yaml.
func repoInputs(t *testing.T) []input {
	t.Helper()
	names, err := filepath.Glob("../*.yaml")
	if err != nil || len(names) == 0 {
		t.Fatalf("no manifests in ..: %v", err)
	}
	var ins []input
	for _, n := range names {
		in, err := readInput(n)
		if err != nil {
			t.Fatal(err)
		}
		ins = append(ins, in)
	}
	return ins
}

func TestRepoManifests(t *testing.T) {
	res := validate(repoInputs(t))
	for _, p := range res.problems {
		t.Error(p)
	}
	// ConfigMap, Deployment, Service, Kustomization.
	if res.objects != 4 {
		t.Errorf("decoded %d objects, want 4", res.objects)
	}
}

// TestRejects breaks the example manifests one way at a time and checks
// that the checker names the problem.
func TestRejects(t *testing.T) {
	tests := []struct {
		name, file, old, new, want string
	}{
		{"unknown field", "deployment.yaml", "readinessProbe:", "readinesProbe:", `unknown field "spec.template.spec.containers[0].readinesProbe"`},
		{"wrong case", "deployment.yaml", "replicas: 2", "Replicas: 2", `unknown field "spec.Replicas"`},
		{"unquoted env value", "deployment.yaml", `value: "2"`, `value: 2`, "cannot unmarshal number into Go struct field EnvVar.spec.template.spec.containers.env.value of type string"},
		{"wrong type", "deployment.yaml", "replicas: 2", "replicas: two", "cannot unmarshal"},
		{"duplicate key", "service.yaml", "  type: ClusterIP\n", "  type: ClusterIP\n  type: NodePort\n", `"type" already set`},
		{"grace too short", "deployment.yaml", "terminationGracePeriodSeconds: 30", "terminationGracePeriodSeconds: 26", "must exceed preStop 0s + BATON_SHUTDOWN_DELAY 5s + BATON_STOP_TIMEOUT 20s = 25s by at least 2s"},
		{"grace default", "deployment.yaml", "terminationGracePeriodSeconds: 30\n", "\n", ""}, // 30s default: still fine
		{"stop timeout raised", "deployment.yaml", "value: 20s", "value: \"30\"", "BATON_STOP_TIMEOUT 30s = 35s"},
		{"bad duration", "deployment.yaml", "value: 5s", "value: 5 seconds", `BATON_SHUTDOWN_DELAY="5 seconds": not a duration`},
		{"misspelt variable", "deployment.yaml", "name: BATON_STOP_TIMEOUT", "name: BATON_STOP_TIMOUT", "env BATON_STOP_TIMOUT is not a variable baton knows"},
		{"probe port undeclared", "deployment.yaml", "port: metrics\n            periodSeconds: 5", "port: metric\n            periodSeconds: 5", "readinessProbe.httpGet.port metric is not a declared container port"},
		{"readiness on app port", "deployment.yaml", "path: /readyz\n              port: metrics", "path: /\n              port: http", "readinessProbe must be httpGet /readyz on BATON_HTTP_ADDR's port 9090"},
		{"http addr loopback", "deployment.yaml", `value: ":9090"`, `value: "127.0.0.1:9090"`, "listens on loopback only"},
		{"listen port undeclared", "deployment.yaml", "tcp://0.0.0.0:8080", "tcp://0.0.0.0:8081", "BATON_LISTEN port 8081/TCP is not a declared containerPort"},
		{"listen bad scheme", "deployment.yaml", "tcp://0.0.0.0:8080", "http://0.0.0.0:8080", `scheme "http" is not one of`},
		{"shell form", "deployment.yaml", `command: ["/baton"]`, `command: ["/bin/sh", "-c"]`, "the shell, not baton, would be PID 1"},
		{"subcommand as args", "deployment.yaml", `args: ["--", "/baton", "hello"]`, `args: ["hello"]`, `args[0] "hello" is a baton subcommand`},
		{"watch outside mounts", "deployment.yaml", "value: /etc/baton-hello\n", "value: /etc/app\n", `BATON_WATCH path "/etc/app" is in no volume mount`},
		{"watch subPath", "deployment.yaml", "readOnly: true\n      volumes:", "readOnly: true\n              subPath: app.conf\n      volumes:", "the kubelet never updates subPath mounts"},
		{"configmap name", "configmap.yaml", "name: baton-hello-config", "name: baton-hello-conf", `references ConfigMap "baton-hello-config", which is not defined`},
		{"max rss over limit", "deployment.yaml", "value: 200Mi", "value: 1GiB", "is not below the memory limit 256Mi"},
		{"selector mismatch", "deployment.yaml", "    matchLabels:\n      app.kubernetes.io/name: baton-hello", "    matchLabels:\n      app.kubernetes.io/name: other", "does not match the pod template's labels"},
		{"service target", "service.yaml", "targetPort: http", "targetPort: web", `targetPort web/TCP is not a declared container port`},
		{"service selector", "service.yaml", "  selector:\n    app.kubernetes.io/name: baton-hello", "  selector:\n    app: nothing", "matches the pods of no Deployment"},
		{"bad name", "service.yaml", "name: baton-hello\n  labels", "name: Baton_Hello\n  labels", "metadata.name: Invalid value"},
		{"kustomize missing resource", "kustomization.yaml", "- service.yaml", "- services.yaml", `resource "services.yaml"`},
		{"kustomize unknown field", "kustomization.yaml", "resources:", "resource:", `unknown field "resource"`},
		{"unknown kind", "service.yaml", "kind: Service", "kind: Ingress", `unsupported apiVersion/kind "v1 Ingress"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ins := repoInputs(t)
			changed := false
			for i := range ins {
				if filepath.Base(ins[i].name) != tt.file {
					continue
				}
				s := string(ins[i].data)
				if !strings.Contains(s, tt.old) {
					t.Fatalf("%s does not contain %q: update the test", tt.file, tt.old)
				}
				ins[i].data = []byte(strings.Replace(s, tt.old, tt.new, 1))
				changed = true
			}
			if !changed {
				t.Fatalf("no input named %s", tt.file)
			}
			res := validate(ins)
			if tt.want == "" {
				for _, p := range res.problems {
					t.Error(p)
				}
				return
			}
			for _, p := range res.problems {
				if strings.Contains(p, tt.want) {
					return
				}
			}
			t.Errorf("want a problem containing %q, got %d:\n%s", tt.want, len(res.problems), strings.Join(res.problems, "\n"))
		})
	}
}

func TestParseDuration(t *testing.T) {
	for in, want := range map[string]string{"30": "30s", "1.5s": "1.5s", "2m": "2m0s", "0": "0s"} {
		d, err := parseDuration(in)
		if err != nil || d.String() != want {
			t.Errorf("parseDuration(%q) = %v, %v; want %s", in, d, err, want)
		}
	}
	for _, in := range []string{"", "-1s", "5 s", "1e3"} {
		if _, err := parseDuration(in); err == nil {
			t.Errorf("parseDuration(%q): want an error", in)
		}
	}
}

func TestParseListen(t *testing.T) {
	for in, want := range map[string]listenAddr{
		"0.0.0.0:8080":               {"", "tcp", "0.0.0.0:8080"},
		"http=tcp://0.0.0.0:8080":    {"http", "tcp", "0.0.0.0:8080"},
		"udp6://[::]:53":             {"", "udp6", "[::]:53"},
		"/run/app.sock":              {"", "unix", "/run/app.sock"},
		"api=unix:///run/a=b.sock":   {"api", "unix", "/run/a=b.sock"},
		"unix:///run/a=b.sock":       {"", "unix", "/run/a=b.sock"},
		"admin=127.0.0.1:9000":       {"admin", "tcp", "127.0.0.1:9000"},
		"web=tcp6://[::1]:8080":      {"web", "tcp6", "[::1]:8080"},
		"metrics=tcp4://0.0.0.0:909": {"metrics", "tcp4", "0.0.0.0:909"},
	} {
		got, err := parseListen(in)
		if err != nil || got != want {
			t.Errorf("parseListen(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
}

// TestEmptyInput checks that input with no object (say, an empty
// `kubectl kustomize` output piped to `go run . -`) is a problem, not a pass.
func TestEmptyInput(t *testing.T) {
	in := input{name: "<stdin>", data: []byte("# only a comment\n---\n")}
	res := validate([]input{in})
	if len(res.problems) != 1 || !strings.Contains(res.problems[0], "no Kubernetes object") {
		t.Errorf("empty input: got %v", res.problems)
	}
}
