package main

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/kelseyhightower/envconfig"
	"github.com/rs/zerolog"

	"github.com/baton-init/baton/handoff"
	"github.com/baton-init/baton/spawn"
	"github.com/baton-init/baton/watch"
)

// envPrefix is the prefix of every variable baton reads.
const envPrefix = "BATON"

// config is every BATON_* variable. Fields carry no `envconfig` tag on
// purpose: with one, envconfig falls back to the bare name when the
// prefixed variable is unset (a field tagged `user` would read $USER).
// split_words maps ReadyTimeout to BATON_READY_TIMEOUT without that.
type config struct {
	Listen        handoff.Listeners    `desc:"listeners [name=]scheme://addr, comma-separated (tcp, tcp4, tcp6, udp, udp4, udp6, unix); host:port means tcp, /path means unix"`
	Workers       handoff.Count        `default:"1" desc:"workers per generation"`
	Ready         handoff.ReadyMode    `default:"auto" desc:"when a new worker is ready: notify (READY=1), delay:DUR, auto (READY=1 or 2s up, until a worker has sent READY=1)"`
	ReadyTimeout  handoff.Duration     `split_words:"true" default:"60s" desc:"a new generation not ready by then is rolled back"`
	ReloadSignal  handoff.ReloadSignal `split_words:"true" default:"HUP" desc:"signal that starts a generation swap; none disables reloads and forwards it (plain init mode defaults to none: HUP goes to the app, as under tini)"`
	StopSignal    handoff.Signal       `split_words:"true" default:"TERM" desc:"signal that asks a retiring worker to finish; when set, it also replaces the shutdown signal baton received"`
	StopTimeout   handoff.Duration     `split_words:"true" default:"8s" desc:"grace before SIGKILL to a worker's process group (retiring and shutdown)"`
	ShutdownDelay handoff.Duration     `split_words:"true" default:"0" desc:"on shutdown, keep serving this long while reporting not-ready"`
	SignalMap     handoff.SignalMap    `split_words:"true" desc:"rewrite forwarded signals, e.g. TERM:QUIT,WINCH: (empty target drops it)"`
	Restart       handoff.Restart      `desc:"on-failure, always or never (default: never in plain init mode, on-failure otherwise)"`
	RestartLimit  handoff.RestartLimit `split_words:"true" default:"5/60s" desc:"crash-loop bound COUNT/WINDOW; past it baton exits with the worker's code"`
	ExitMap       handoff.ExitMap      `split_words:"true" desc:"remap baton's exit status, e.g. 143:0"`
	User          spawn.User           `desc:"uid[:gid] or name[:group] the workers run as"`
	Ulimits       spawn.Ulimits        `desc:"worker rlimits in docker's syntax: nofile=65536:65536,core=0"`
	MaxRSS        handoff.Size         `split_words:"true" desc:"recycle a worker whose RSS exceeds this (512MiB, 512Mi, 1g)"`
	MaxAge        handoff.Duration     `split_words:"true" desc:"recycle a worker older than this (with up to 10% jitter), one at a time"`
	Watch         watch.Paths          `desc:"files or directories whose content change triggers a swap, comma-separated"`
	HTTPAddr      httpAddr             `split_words:"true" desc:"serve /metrics, /healthz and /readyz on this address"`
	Subreaper     tristate             `default:"auto" desc:"become a child subreaper: auto (when not PID 1), true, false"`
	LogLevel      logLevel             `split_words:"true" default:"info" desc:"debug, info, warn or error"`
	LogFormat     logFormat            `split_words:"true" default:"auto" desc:"json, console, or auto (console on a TTY)"`
}

// knownKeys are the variables config reads. They are spelled out because
// asking envconfig (Usagef, a text/template) costs a few hundred
// microseconds at every start; TestKnownKeys checks the two agree.
var knownKeys = map[string]bool{
	"BATON_LISTEN": true, "BATON_WORKERS": true, "BATON_READY": true, "BATON_READY_TIMEOUT": true,
	"BATON_RELOAD_SIGNAL": true, "BATON_STOP_SIGNAL": true, "BATON_STOP_TIMEOUT": true,
	"BATON_SHUTDOWN_DELAY": true, "BATON_SIGNAL_MAP": true, "BATON_RESTART": true,
	"BATON_RESTART_LIMIT": true, "BATON_EXIT_MAP": true, "BATON_USER": true, "BATON_ULIMITS": true,
	"BATON_MAX_RSS": true, "BATON_MAX_AGE": true, "BATON_WATCH": true, "BATON_HTTP_ADDR": true,
	"BATON_SUBREAPER": true, "BATON_LOG_LEVEL": true, "BATON_LOG_FORMAT": true,
}

// setByBaton are variables baton sets for its own workers; a baton running
// under another baton must not call them unknown.
var setByBaton = map[string]bool{"BATON_GENERATION": true, "BATON_WORKER": true}

type httpAddr string

func (a *httpAddr) Decode(v string) error {
	if _, _, err := net.SplitHostPort(v); err != nil {
		return fmt.Errorf("want host:port like :9090 or 127.0.0.1:9090, got %q", clipValue(v))
	}
	*a = httpAddr(v)
	return nil
}

type tristate string

func (t *tristate) Decode(v string) error {
	switch v {
	case "auto", "true", "false":
		*t = tristate(v)
		return nil
	}
	return fmt.Errorf("want auto, true or false, got %q", clipValue(v))
}

type logLevel zerolog.Level

func (l *logLevel) Decode(v string) error {
	switch v {
	case "debug", "info", "warn", "error":
		lv, _ := zerolog.ParseLevel(v) // one of the four above: cannot fail
		*l = logLevel(lv)
		return nil
	}
	return fmt.Errorf("want debug, info, warn or error, got %q", clipValue(v))
}

type logFormat string

func (f *logFormat) Decode(v string) error {
	switch v {
	case "json", "console", "auto":
		*f = logFormat(v)
		return nil
	}
	return fmt.Errorf("want json, console or auto, got %q", clipValue(v))
}

// knownVars lists every BATON_* variable, with default and description.
func knownVars() [][3]string {
	var buf bytes.Buffer
	// Usagef only fails on a bad template; ours is fixed.
	_ = envconfig.Usagef(envPrefix, &config{}, &buf, "{{range .}}{{usage_key .}}\x1f{{usage_default .}}\x1f{{usage_description .}}\n{{end}}")
	var out [][3]string
	for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		f := strings.SplitN(line, "\x1f", 3)
		if len(f) == 3 {
			out = append(out, [3]string{f[0], f[1], f[2]})
		}
	}
	return out
}

// loadConfig reads BATON_* from the environment. Every error is one line
// naming the variable and what it accepts.
func loadConfig() (*config, error) {
	var unknown []string
	for _, kv := range os.Environ() {
		k, v, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(k, envPrefix+"_") {
			continue
		}
		if v == "" {
			// An empty value means unset: envconfig would otherwise decode
			// "" instead of applying the default.
			os.Unsetenv(k)
			continue
		}
		if !knownKeys[k] && !setByBaton[k] {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return nil, fmt.Errorf("unknown variable %s (see baton help for the list)", strings.Join(unknown, ", "))
	}
	var c config
	if err := envconfig.Process(envPrefix, &c); err != nil {
		var pe *envconfig.ParseError
		if errors.As(err, &pe) {
			return nil, fmt.Errorf("%s: %v", pe.KeyName, pe.Err)
		}
		return nil, err
	}
	return &c, nil
}

func clipValue(v string) string {
	const max = 16
	if len(v) > max {
		return v[:max] + "…"
	}
	return v
}

// writeHelp prints usage and every variable with its default.
func writeHelp(w *os.File) {
	fmt.Fprint(w, `baton: a PID 1 for containers that reaps, forwards signals, supervises
workers and hands them its listening sockets for zero-downtime reloads.

usage:
  baton [--] COMMAND [ARG...]   run COMMAND as the worker(s)
  baton reload [--pid PID]      send the reload signal to baton (PID 1 by default)
  baton health [--pid PID]      exit 0 if baton reports ready, 1 if not
  baton hello                   the built-in demo worker (speaks LISTEN_FDS and READY=1)
  baton demo                    a reload under load, right here
  baton version | --version
  baton help | --help

A first argument that is not one of these subcommands is the command;
after -- it always is.

environment (empty means unset):
`)
	tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "  VARIABLE\tDEFAULT\tMEANING")
	for _, v := range knownVars() {
		def := v[1]
		if def == "" {
			def = "-"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\n", v[0], def, v[2])
	}
	_ = tw.Flush() // help output: nothing to do if stdout is gone
}
