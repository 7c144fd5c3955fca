package main

import (
	"fmt"
	"net"
	"path"
	"strconv"
	"strings"
	"time"

	units "github.com/docker/go-units"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// batonVars is every variable baton reads (docs: SPEC.md's table), plus
// BATON_GENERATION and BATON_WORKER, which baton sets for its workers.
var batonVars = map[string]bool{
	"BATON_LISTEN": true, "BATON_WORKERS": true, "BATON_READY": true, "BATON_READY_TIMEOUT": true,
	"BATON_RELOAD_SIGNAL": true, "BATON_STOP_SIGNAL": true, "BATON_STOP_TIMEOUT": true,
	"BATON_SHUTDOWN_DELAY": true, "BATON_SIGNAL_MAP": true, "BATON_RESTART": true,
	"BATON_RESTART_LIMIT": true, "BATON_EXIT_MAP": true, "BATON_USER": true, "BATON_ULIMITS": true,
	"BATON_MAX_RSS": true, "BATON_MAX_AGE": true, "BATON_WATCH": true, "BATON_HTTP_ADDR": true,
	"BATON_SUBREAPER": true, "BATON_LOG_LEVEL": true, "BATON_LOG_FORMAT": true,
	"BATON_GENERATION": true, "BATON_WORKER": true,
}

// baton's subcommands (docs/development.md, "CLI"); a first argument that
// is one of these is not a command to supervise.
var batonSubcommands = map[string]bool{
	"reload": true, "health": true, "hello": true, "demo": true, "version": true,
	"help": true, "--version": true, "--help": true,
}

const (
	defaultStopTimeout   = 8 * time.Second  // BATON_STOP_TIMEOUT's default
	defaultShutdownDelay = 0                // BATON_SHUTDOWN_DELAY's default
	defaultGracePeriod   = 30 * time.Second // Kubernetes' terminationGracePeriodSeconds default
	// minShutdownMargin is what terminationGracePeriodSeconds must leave
	// beyond baton's worst-case shutdown, for baton's own exit and the
	// kubelet's timing: the kubelet's SIGKILL must never cut a drain short.
	minShutdownMargin = 2 * time.Second
)

// isBaton tells whether a container runs baton: its command is baton, or
// it sets BATON_* variables (then baton is the image's ENTRYPOINT).
func isBaton(c *corev1.Container) bool {
	if len(c.Command) > 0 && path.Base(c.Command[0]) == "baton" {
		return true
	}
	for _, e := range c.Env {
		if strings.HasPrefix(e.Name, "BATON_") {
			return true
		}
	}
	return false
}

// parseDuration parses a baton duration: Go syntax ("1.5s", "2m") or bare
// integer seconds ("30").
func parseDuration(s string) (time.Duration, error) {
	if n, err := strconv.ParseUint(s, 10, 32); err == nil {
		return time.Duration(n) * time.Second, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("not a duration (Go syntax like 1.5s or 2m, or integer seconds)")
	}
	if d < 0 {
		return 0, fmt.Errorf("negative duration")
	}
	return d, nil
}

// parseBytes parses a size the way BATON_MAX_RSS documents: go-units
// ("512MiB", "1g") or Kubernetes quantities ("512Mi").
func parseBytes(s string) (int64, error) {
	if q, err := resource.ParseQuantity(s); err == nil {
		return q.Value(), nil
	}
	n, err := units.RAMInBytes(s)
	if err != nil {
		return 0, fmt.Errorf("not a size (like 512Mi, 512MiB or 1g)")
	}
	return n, nil
}

// batonEnv holds a baton container's BATON_* settings as written.
type batonEnv struct {
	literal map[string]string // value: "..."
	fromRef map[string]bool   // valueFrom: unknowable here
}

// duration returns a duration setting, its default when unset or empty,
// and false if it cannot be known or parsed (already reported).
func (ck *checker) duration(where string, env batonEnv, name string, def time.Duration) (time.Duration, bool) {
	if env.fromRef[name] {
		ck.errorf(where, "%s comes from valueFrom, so the shutdown arithmetic cannot be checked", name)
		return 0, false
	}
	v := env.literal[name]
	if v == "" {
		return def, true
	}
	d, err := parseDuration(v)
	if err != nil {
		ck.errorf(where, "%s=%q: %v", name, v, err)
		return 0, false
	}
	return d, true
}

func (ck *checker) checkBaton(where string, pod *corev1.PodSpec, c *corev1.Container) {
	// Exec form with baton first, or baton is not PID 1.
	if len(c.Command) > 0 {
		switch base := path.Base(c.Command[0]); base {
		case "baton":
			if len(c.Args) > 0 && batonSubcommands[c.Args[0]] {
				ck.errorf(where, "args[0] %q is a baton subcommand, so baton would not supervise anything; start args with \"--\"", c.Args[0])
			}
		case "sh", "bash", "ash", "dash", "busybox":
			ck.errorf(where, "command %q runs a shell: the shell, not baton, would be PID 1 and swallow SIGTERM; use command: [\"/baton\"]", c.Command)
		default:
			ck.errorf(where, "command %q: with BATON_* variables set, baton must be command[0] (exec form) to be PID 1", c.Command)
		}
	}

	env := batonEnv{literal: map[string]string{}, fromRef: map[string]bool{}}
	for _, e := range c.Env {
		if !strings.HasPrefix(e.Name, "BATON_") {
			continue
		}
		switch {
		case !batonVars[e.Name]:
			ck.errorf(where, "env %s is not a variable baton knows (misspelt?)", e.Name)
		case e.Name == "BATON_GENERATION" || e.Name == "BATON_WORKER":
			ck.errorf(where, "env %s is set by baton for its workers; do not set it", e.Name)
		}
		if e.ValueFrom != nil {
			env.fromRef[e.Name] = true
		} else {
			env.literal[e.Name] = e.Value
		}
	}

	// Durations, and the shutdown arithmetic.
	for _, name := range []string{"BATON_READY_TIMEOUT", "BATON_MAX_AGE"} {
		if v := env.literal[name]; v != "" {
			if _, err := parseDuration(v); err != nil {
				ck.errorf(where, "%s=%q: %v", name, v, err)
			}
		}
	}
	stop, ok1 := ck.duration(where, env, "BATON_STOP_TIMEOUT", defaultStopTimeout)
	delay, ok2 := ck.duration(where, env, "BATON_SHUTDOWN_DELAY", defaultShutdownDelay)
	if ok1 && ok2 {
		ck.checkGrace(where, pod, c, delay, stop)
	}

	if v := env.literal["BATON_WORKERS"]; v != "" {
		if n, err := strconv.Atoi(v); err != nil || n < 1 {
			ck.errorf(where, "BATON_WORKERS=%q is not a positive integer", v)
		}
	}

	listenPorts := ck.checkListen(where, c, env.literal["BATON_LISTEN"])
	ck.checkHTTP(where, c, env.literal["BATON_HTTP_ADDR"], listenPorts)
	ck.checkWatch(where, c, env.literal["BATON_WATCH"])

	if v := env.literal["BATON_MAX_RSS"]; v != "" {
		n, err := parseBytes(v)
		switch {
		case err != nil:
			ck.errorf(where, "BATON_MAX_RSS=%q: %v", v, err)
		case n <= 0:
			ck.errorf(where, "BATON_MAX_RSS=%q is not positive", v)
		default:
			if lim := c.Resources.Limits.Memory(); !lim.IsZero() && n >= lim.Value() {
				ck.errorf(where, "BATON_MAX_RSS=%s is not below the memory limit %s: the container would be OOM-killed before a worker is recycled", v, lim.String())
			}
		}
	}
}

// checkGrace checks that the kubelet waits longer than baton's worst-case
// shutdown: BATON_SHUTDOWN_DELAY of serving while not ready, then up to
// BATON_STOP_TIMEOUT for the workers to drain (a retiring generation drains
// within the same bound, concurrently), plus a preStop sleep, which the
// kubelet runs before it sends SIGTERM and counts against the same period.
func (ck *checker) checkGrace(where string, pod *corev1.PodSpec, c *corev1.Container, delay, stop time.Duration) {
	grace := defaultGracePeriod
	if pod.TerminationGracePeriodSeconds != nil {
		grace = time.Duration(*pod.TerminationGracePeriodSeconds) * time.Second
	}
	var preStop time.Duration
	if lc := c.Lifecycle; lc != nil && lc.PreStop != nil {
		switch {
		case lc.PreStop.Sleep != nil:
			preStop = time.Duration(lc.PreStop.Sleep.Seconds) * time.Second
		default:
			ck.errorf(where, "lifecycle.preStop exec/httpGet takes an unknown time out of the grace period; use BATON_SHUTDOWN_DELAY (or a preStop sleep)")
		}
	}
	need := preStop + delay + stop
	if grace-need < minShutdownMargin {
		ck.errorf(where, "terminationGracePeriodSeconds %v must exceed preStop %v + BATON_SHUTDOWN_DELAY %v + BATON_STOP_TIMEOUT %v = %v by at least %v, or the kubelet SIGKILLs workers mid-drain",
			grace, preStop, delay, stop, need, minShutdownMargin)
	}
}

// listenAddr is one parsed BATON_LISTEN entry.
type listenAddr struct {
	name, network, addr string
}

// parseListen parses `[name=]scheme://addr`, a bare host:port (tcp) or a
// bare /path (unix).
func parseListen(s string) (listenAddr, error) {
	var l listenAddr
	if i := strings.Index(s, "="); i >= 0 {
		if j := strings.Index(s, "://"); j < 0 || i < j {
			l.name, s = s[:i], s[i+1:]
		}
	}
	switch {
	case strings.Contains(s, "://"):
		l.network, l.addr, _ = strings.Cut(s, "://")
	case strings.HasPrefix(s, "/"):
		l.network, l.addr = "unix", s
	default:
		l.network, l.addr = "tcp", s
	}
	switch l.network {
	case "tcp", "tcp4", "tcp6", "udp", "udp4", "udp6", "unix":
	default:
		return l, fmt.Errorf("scheme %q is not one of tcp, tcp4, tcp6, udp, udp4, udp6, unix", l.network)
	}
	if l.addr == "" {
		return l, fmt.Errorf("empty address")
	}
	return l, nil
}

// checkListen checks that every TCP/UDP listener is reachable from outside
// the pod and declared as a containerPort, and returns their ports.
func (ck *checker) checkListen(where string, c *corev1.Container, value string) map[int32]bool {
	ports := map[int32]bool{}
	if value == "" {
		return ports
	}
	for _, entry := range strings.Split(value, ",") {
		entry = strings.TrimSpace(entry)
		l, err := parseListen(entry)
		if err != nil {
			ck.errorf(where, "BATON_LISTEN entry %q: %v", entry, err)
			continue
		}
		if l.network == "unix" {
			continue
		}
		host, port, err := net.SplitHostPort(l.addr)
		if err != nil {
			ck.errorf(where, "BATON_LISTEN entry %q: %v", entry, err)
			continue
		}
		if isLoopback(host) {
			ck.errorf(where, "BATON_LISTEN entry %q listens on loopback only: unreachable from a Service", entry)
		}
		n, err := strconv.ParseUint(port, 10, 16)
		if err != nil || n == 0 {
			ck.errorf(where, "BATON_LISTEN entry %q: port %q must be a fixed number for a Service to reach it", entry, port)
			continue
		}
		proto := corev1.ProtocolTCP
		if strings.HasPrefix(l.network, "udp") {
			proto = corev1.ProtocolUDP
		}
		cp := containerPort(c, intstr.FromInt32(int32(n)))
		if cp == nil || protocolOf(*cp) != proto {
			ck.errorf(where, "BATON_LISTEN port %d/%s is not a declared containerPort", n, proto)
		}
		ports[int32(n)] = true
	}
	return ports
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// checkHTTP checks BATON_HTTP_ADDR against the ports and the readiness and
// liveness probes. Readiness must come from baton, not from the app's port:
// through the shared socket, a draining old worker could answer it.
func (ck *checker) checkHTTP(where string, c *corev1.Container, value string, listenPorts map[int32]bool) {
	if value == "" {
		// Without baton's HTTP endpoints, `baton health` is the probe.
		p := c.ReadinessProbe
		if p == nil || p.Exec == nil || len(p.Exec.Command) < 2 || path.Base(p.Exec.Command[0]) != "baton" || p.Exec.Command[1] != "health" {
			ck.errorf(where, "readinessProbe must be exec [\"/baton\", \"health\"] (or set BATON_HTTP_ADDR and probe /readyz)")
		}
		return
	}
	host, port, err := net.SplitHostPort(value)
	if err != nil {
		ck.errorf(where, "BATON_HTTP_ADDR=%q: %v", value, err)
		return
	}
	if isLoopback(host) {
		ck.errorf(where, "BATON_HTTP_ADDR=%q listens on loopback only: the kubelet probes the pod's IP", value)
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil || n == 0 {
		ck.errorf(where, "BATON_HTTP_ADDR=%q: port must be a fixed number for the probes", value)
		return
	}
	httpPort := int32(n)
	if listenPorts[httpPort] {
		ck.errorf(where, "BATON_HTTP_ADDR port %d is also in BATON_LISTEN", httpPort)
	}
	if cp := containerPort(c, intstr.FromInt32(httpPort)); cp == nil || protocolOf(*cp) != corev1.ProtocolTCP {
		ck.errorf(where, "BATON_HTTP_ADDR port %d/TCP is not a declared containerPort", httpPort)
	}
	onHTTP := func(p *corev1.Probe) (string, bool) {
		if p == nil || p.HTTPGet == nil {
			return "", false
		}
		cp := containerPort(c, p.HTTPGet.Port)
		return p.HTTPGet.Path, cp != nil && cp.ContainerPort == httpPort
	}
	if p, ok := onHTTP(c.ReadinessProbe); !ok || p != "/readyz" {
		ck.errorf(where, "readinessProbe must be httpGet /readyz on BATON_HTTP_ADDR's port %d", httpPort)
	}
	if p, ok := onHTTP(c.LivenessProbe); ok && p != "/healthz" {
		ck.errorf(where, "livenessProbe on BATON_HTTP_ADDR's port should be /healthz, not %q", p)
	}
}

// checkWatch checks that every BATON_WATCH path lies in a volume mount that
// the kubelet updates: not in the image (which never changes) and not in a
// subPath mount (which the kubelet never updates).
func (ck *checker) checkWatch(where string, c *corev1.Container, value string) {
	if value == "" {
		return
	}
	for _, p := range strings.Split(value, ",") {
		p = strings.TrimSpace(p)
		if !path.IsAbs(p) {
			ck.errorf(where, "BATON_WATCH path %q is not absolute", p)
			continue
		}
		p = path.Clean(p)
		var best *corev1.VolumeMount
		for i := range c.VolumeMounts {
			m := &c.VolumeMounts[i]
			mp := path.Clean(m.MountPath)
			if (p == mp || strings.HasPrefix(p, mp+"/") || mp == "/") && (best == nil || len(mp) > len(path.Clean(best.MountPath))) {
				best = m
			}
		}
		if best == nil {
			ck.errorf(where, "BATON_WATCH path %q is in no volume mount: it can only change with a new image", p)
			continue
		}
		if best.SubPath != "" || best.SubPathExpr != "" {
			ck.errorf(where, "BATON_WATCH path %q is in the subPath mount %q: the kubelet never updates subPath mounts; mount the whole ConfigMap as a directory", p, best.MountPath)
		}
	}
}
