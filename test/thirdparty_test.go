package test

import (
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestThirdPartyWorkers: real servers that speak the systemd protocol with
// their own code serve through baton across 5 reloads with no failed
// request, and really answer on baton's socket, in both handoff modes
// (in steer mode each generation's socket is another one on the same
// address).
func TestThirdPartyWorkers(t *testing.T) {
	w, _ := filepath.Abs("workers")
	pyDeb := "/usr/bin/python3"
	cases := []struct {
		name    string
		need    []string // files that must exist, else skip with the reason
		workers string
		argv    func(t *testing.T) []string
	}{
		{"go-systemd", nil, "2", func(t *testing.T) []string {
			bin := filepath.Join(t.TempDir(), "gosd")
			build := exec.Command("go", "build", "-o", bin, "./workers/gosd")
			build.Env = append(os.Environ(), "CGO_ENABLED=0")
			if out, err := build.CombinedOutput(); err != nil {
				t.Fatalf("build gosd: %v\n%s", err, out)
			}
			return []string{bin}
		}},
		{"gunicorn", []string{"/usr/bin/gunicorn"}, "1", func(t *testing.T) []string {
			return []string{"/usr/bin/gunicorn", "--config", filepath.Join(w, "gunicorn/gunicorn.conf.py"), "--chdir", filepath.Join(w, "gunicorn"), "app:app"}
		}},
		{"uvicorn", []string{pyDeb}, "2", func(t *testing.T) []string {
			if err := exec.Command(pyDeb, "-c", "import uvicorn").Run(); err != nil {
				t.Skip("Debian's python3-uvicorn is not installed (apt-get install python3-uvicorn)")
			}
			return []string{pyDeb, "-m", "uvicorn", "--fd", "3", "--http", "h11", "--lifespan", "on", "--no-access-log", "--app-dir", filepath.Join(w, "uvicorn"), "app:app"}
		}},
		{"node", []string{"/usr/bin/node", pyDeb}, "2", func(t *testing.T) []string {
			return []string{pyDeb, filepath.Join(w, "node/notify_exec.py"), "/usr/bin/node", filepath.Join(w, "node/server.js")}
		}},
	}
	for _, c := range cases {
		for _, handoff := range []string{"shared", "steer"} {
			t.Run(c.name+"/"+handoff, func(t *testing.T) {
				for _, f := range c.need {
					if _, err := os.Stat(f); err != nil {
						t.Skipf("%s is not installed (see .ci/run for the packages)", f)
					}
				}
				argv := c.argv(t)
				b, addr := serve(t, []string{"BATON_WORKERS=" + c.workers, "BATON_READY=notify", "GUNICORN_LOGLEVEL=warning", "BATON_HANDOFF=" + handoff}, argv...)
				local := localAddr(t, addr)
				if local != addr {
					t.Fatalf("worker answers on %s, not on baton's socket %s", local, addr)
				}
				reloadUnderLoad(t, b, addr, 16, 5)
				b.Signal(unix.SIGTERM)
				if code := b.Wait(); code != 0 {
					t.Fatalf("exit %d after TERM, want 0", code)
				}
			})
		}
	}
}

// localAddr asks the worker which local address answered.
func localAddr(t *testing.T, addr string) string {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + addr + "/")
	if err != nil {
		t.Fatalf("GET %s: %v", addr, err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.Header.Get("X-Local-Addr")
}
