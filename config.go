package main

// Configuration: every BATON_* variable, read through envconfig, checked
// as a whole by validate and turned into the loop's options by options.

import (
	"errors"
	"fmt"
	"net"
	"os"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/kelseyhightower/envconfig"
	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/baton-init/baton/handoff"
	"github.com/baton-init/baton/internal/clip"
	"github.com/baton-init/baton/spawn"
	"github.com/baton-init/baton/supervisor"
	"github.com/baton-init/baton/watch"
)

// envPrefix is the prefix of every variable baton reads.
const envPrefix = "BATON"

// config is every BATON_* variable. Fields carry no `envconfig` tag on
// purpose: with one, envconfig falls back to the bare name when the
// prefixed variable is unset (a field tagged `user` would read $USER).
// split_words maps ReadyTimeout to BATON_READY_TIMEOUT without that. The
// unexported fields at the end are not variables (envconfig skips them):
// loadConfig records there which variables were set, for the defaults that
// depend on it.
type config struct {
	Listen        handoff.Listeners       `desc:"listeners [name=]scheme://addr, comma-separated (tcp, tcp4, tcp6, udp, udp4, udp6, unix); host:port means tcp, /path means unix; a unix socket file takes ?mode=0666&owner=USER[:GROUP]"`
	Workers       supervisor.Count        `default:"1" desc:"workers per generation"`
	Ready         supervisor.ReadyMode    `default:"auto" desc:"when a new worker is ready: notify (READY=1), listen (BATON_BIND=intercept: listen() on every TCP listener it adopted), delay:DUR, auto (READY=1 or 2s up, until a worker has sent READY=1)"`
	ReadyTimeout  supervisor.Timeout      `split_words:"true" default:"60s" desc:"a new generation (or recycling replacement) not ready by then is rolled back; must be above 0"`
	ReloadSignal  supervisor.ReloadSignal `split_words:"true" default:"HUP" desc:"signal that starts a generation swap; none disables reloads and forwards it (plain init mode defaults to none: HUP goes to the app, as under tini)"`
	StopSignal    supervisor.StopSignal   `split_words:"true" default:"TERM" desc:"signal that asks a retiring worker to finish; when set, it also replaces the shutdown signal baton received (not the reload signal, CHLD, URG or PIPE)"`
	StopTimeout   supervisor.Duration     `split_words:"true" default:"8s" desc:"grace before SIGKILL to a worker's process group (retiring and shutdown)"`
	ShutdownDelay supervisor.Duration     `split_words:"true" default:"0" desc:"on shutdown, keep serving this long while reporting not-ready"`
	SignalMap     supervisor.SignalMap    `split_words:"true" desc:"rewrite signals before baton acts on them, e.g. TERM:QUIT,WINCH: (empty target drops it; not the reload signal)"`
	Restart       supervisor.Restart      `desc:"on-failure, always or never (default: never in plain init mode, on-failure otherwise)"`
	RestartLimit  supervisor.RestartLimit `split_words:"true" default:"5/60s" desc:"crash-loop bound COUNT/WINDOW per worker slot; past it baton exits with the worker's code"`
	ExitMap       supervisor.ExitMap      `split_words:"true" desc:"remap baton's exit status, e.g. 143:0"`
	User          spawn.User              `desc:"uid[:gid] or name[:group] the workers run as"`
	Ulimits       spawn.Ulimits           `desc:"worker rlimits in docker's syntax: nofile=65536:65536,core=0"`
	MaxRSS        supervisor.Size         `split_words:"true" desc:"recycle a worker whose RSS exceeds this (512MiB, 512Mi, 1g)"`
	MaxAge        supervisor.Duration     `split_words:"true" desc:"recycle a worker older than this (with up to 10% jitter), one at a time"`
	Watch         watch.Paths             `desc:"files or directories whose content change triggers a swap, comma-separated"`
	HTTPAddr      httpAddr                `split_words:"true" desc:"serve /metrics, /healthz and /readyz on this address"`
	Subreaper     tristate                `default:"auto" desc:"become a child subreaper: auto (when not PID 1), true, false"`
	LogLevel      logLevel                `split_words:"true" default:"info" desc:"debug, info, warn or error"`
	LogFormat     logFormat               `split_words:"true" default:"auto" desc:"json, console, or auto (console on a TTY)"`
	ReloadCheck   spawn.Command           `split_words:"true" desc:"command (no shell, split on spaces) run as the workers before each reload; its exit status decides: non-zero or not done within BATON_READY_TIMEOUT refuses the reload; what it leaves in its process group gets SIGTERM, SIGKILL after BATON_STOP_TIMEOUT"`
	Surge         supervisor.Count        `desc:"rolling swaps: at most BATON_WORKERS + N workers alive during a reload (default BATON_WORKERS: the whole generation at once)"`
	Watchdog      supervisor.Duration     `desc:"WATCHDOG_USEC for workers: one that sent WATCHDOG=1 and then nothing this long is aborted and restarted"`
	Handoff       supervisor.Handoff      `default:"shared" desc:"shared (one socket per listener for every generation) or steer (a socket per generation for TCP and UDP, new connections steered in the kernel, so workers that drain badly lose nothing)"`
	Canary        supervisor.CanarySteps  `desc:"steer mode: PERCENT:DURATION steps, comma-separated (10%:30s,50%:1m); a new generation gets that share of new TCP connections first, and a worker exit aborts the reload"`
	CanaryCheck   spawn.Command           `split_words:"true" desc:"command (no shell, split on spaces) run as the workers at the end of each canary step; its exit status decides: non-zero or not done within BATON_READY_TIMEOUT aborts the canary; what it leaves in its process group is stopped as for BATON_RELOAD_CHECK"`
	Bake          supervisor.Duration     `desc:"steer mode: keep the old generation parked this long after the cutover; a new worker exit meanwhile reverts to it at once"`
	Drain         supervisor.Drain        `default:"off" desc:"steer mode: off, or idle[:MAX]: after a reload's handover, stop the old generation only once each of its TCP connections was seen idle (response sent after the last request), for at most MAX (default BATON_STOP_TIMEOUT)"`
	Bind          bindMode                `default:"off" desc:"off, or intercept: an unchanged app's bind() to a BATON_LISTEN address gets baton's socket (seccomp user notification; workers run with no_new_privs); defaults BATON_HANDOFF=steer, BATON_READY=listen and BATON_DRAIN=idle"`

	reloadSignalSet bool // BATON_RELOAD_SIGNAL was set
	stopSignalSet   bool // BATON_STOP_SIGNAL was set
}

// configKeys are the variables config reads, in the order of its fields.
// They are spelled out because asking envconfig for them (Usagef) would
// link text/template into baton and slow every start; TestConfigKeys
// checks that they, the defaults and the descriptions agree with
// envconfig's own listing.
var configKeys = []string{
	"BATON_LISTEN", "BATON_WORKERS", "BATON_READY", "BATON_READY_TIMEOUT",
	"BATON_RELOAD_SIGNAL", "BATON_STOP_SIGNAL", "BATON_STOP_TIMEOUT",
	"BATON_SHUTDOWN_DELAY", "BATON_SIGNAL_MAP", "BATON_RESTART",
	"BATON_RESTART_LIMIT", "BATON_EXIT_MAP", "BATON_USER", "BATON_ULIMITS",
	"BATON_MAX_RSS", "BATON_MAX_AGE", "BATON_WATCH", "BATON_HTTP_ADDR",
	"BATON_SUBREAPER", "BATON_LOG_LEVEL", "BATON_LOG_FORMAT", "BATON_RELOAD_CHECK",
	"BATON_SURGE", "BATON_WATCHDOG", "BATON_HANDOFF", "BATON_CANARY",
	"BATON_CANARY_CHECK", "BATON_BAKE", "BATON_DRAIN", "BATON_BIND",
}

// setByBaton are variables baton sets for its own workers; a baton running
// under another baton must not call them unknown.
var setByBaton = []string{"BATON_GENERATION", "BATON_WORKER"}

// checkSetByBaton accepts BATON_GENERATION and BATON_WORKER only as baton
// sets them: numbers, BATON_WORKER never without BATON_GENERATION (a
// reload check gets BATON_GENERATION alone). Anything else was typed by
// someone, most likely BATON_WORKER for BATON_WORKERS.
func checkSetByBaton() error {
	gen, hasGen := os.LookupEnv("BATON_GENERATION")
	w, hasW := os.LookupEnv("BATON_WORKER")
	number := func(v string) bool { n, err := strconv.Atoi(v); return err == nil && n >= 0 }
	switch {
	case hasW && !hasGen:
		return fmt.Errorf("BATON_WORKER=%q is set, but baton sets it only for its own workers (with BATON_GENERATION): did you mean BATON_WORKERS?", clip.Value(w))
	case hasGen && !number(gen):
		return fmt.Errorf("BATON_GENERATION: want the generation number baton sets for its workers, got %q", clip.Value(gen))
	case hasW && !number(w):
		return fmt.Errorf("BATON_WORKER: want the worker number baton sets for its workers, got %q (did you mean BATON_WORKERS?)", clip.Value(w))
	}
	return nil
}

type httpAddr string

func (a *httpAddr) Decode(v string) error {
	if _, port, err := net.SplitHostPort(v); err != nil || port == "" {
		return fmt.Errorf("want host:port like :9090 or 127.0.0.1:9090, got %q", clip.Value(v))
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
	return fmt.Errorf("want auto, true or false, got %q", clip.Value(v))
}

// bindMode is BATON_BIND.
type bindMode string

const bindIntercept bindMode = "intercept"

func (b *bindMode) Decode(v string) error {
	switch v {
	case "off", "intercept":
		*b = bindMode(v)
		return nil
	}
	return fmt.Errorf("want off or intercept, got %q", clip.Value(v))
}

type logLevel zerolog.Level

func (l *logLevel) Decode(v string) error {
	switch v {
	case "debug", "info", "warn", "error":
		lv, _ := zerolog.ParseLevel(v) // one of the four above: cannot fail
		*l = logLevel(lv)
		return nil
	}
	return fmt.Errorf("want debug, info, warn or error, got %q", clip.Value(v))
}

type logFormat string

func (f *logFormat) Decode(v string) error {
	switch v {
	case "json", "console", "auto":
		*f = logFormat(v)
		return nil
	}
	return fmt.Errorf("want json, console or auto, got %q", clip.Value(v))
}

// knownVars lists every BATON_* variable with its default and meaning,
// taken from config's field tags.
func knownVars() [][3]string {
	t := reflect.TypeFor[config]()
	out := make([][3]string, len(configKeys))
	for i := range out {
		f := t.Field(i)
		out[i] = [3]string{configKeys[i], f.Tag.Get("default"), f.Tag.Get("desc")}
	}
	return out
}

// loadConfig reads BATON_* from the environment. Every error is one line
// naming the variable and what it accepts.
func loadConfig() (*config, error) {
	var unknown []string
	set := false
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
		switch {
		case slices.Contains(configKeys, k):
			set = true
		case !slices.Contains(setByBaton, k):
			unknown = append(unknown, k)
		}
	}
	if err := checkSetByBaton(); err != nil {
		return nil, err
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return nil, fmt.Errorf("unknown variable %s (see baton help for the list)", strings.Join(unknown, ", "))
	}
	if !set {
		// Nothing to read: the defaults alone, without envconfig's
		// reflection and regexps on every start (TestDefaultConfig checks
		// they are what envconfig makes of an empty environment).
		return defaultConfig(), nil
	}
	var c config
	if err := envconfig.Process(envPrefix, &c); err != nil {
		var pe *envconfig.ParseError
		if errors.As(err, &pe) {
			return nil, fmt.Errorf("%s: %v", pe.KeyName, pe.Err)
		}
		return nil, err
	}
	// Empty values were unset above: set means set to something.
	_, c.reloadSignalSet = os.LookupEnv("BATON_RELOAD_SIGNAL")
	_, c.stopSignalSet = os.LookupEnv("BATON_STOP_SIGNAL")
	if c.Bind == bindIntercept {
		// One variable for an unchanged app: its own bind() and listen()
		// tell baton what it needs, and steer mode keeps what it accepted
		// safe from its drain. Each stays settable.
		if _, set := os.LookupEnv("BATON_HANDOFF"); !set {
			c.Handoff = supervisor.HandoffSteer
		}
		if _, set := os.LookupEnv("BATON_READY"); !set && c.hasTCP() {
			c.Ready = supervisor.ReadyMode{Kind: "listen"}
		}
		if _, set := os.LookupEnv("BATON_DRAIN"); !set && c.Handoff == supervisor.HandoffSteer && c.hasTCP() {
			c.Drain = supervisor.Drain{Idle: true}
		}
	}
	return &c, nil
}

// defaultConfig is config with every field at its default tag, decoded by
// the field's own Decode, as envconfig would.
func defaultConfig() *config {
	var c config
	v := reflect.ValueOf(&c).Elem()
	for i := range configKeys {
		def := v.Type().Field(i).Tag.Get("default")
		if def == "" {
			continue
		}
		// The defaults are fixed and valid (TestDefaultConfig), so the
		// error cannot happen.
		_ = v.Field(i).Addr().Interface().(envconfig.Decoder).Decode(def)
	}
	return &c
}

// validate makes every check that involves more than one variable, or
// more than a value's syntax, before baton opens anything: an error here
// is one line, exit 2, and nothing bound or started.
func (c *config) validate() error {
	steer := c.Handoff == supervisor.HandoffSteer
	reload := c.reloadSignal()
	_, remapped := c.SignalMap[reload]
	switch {
	case reload != 0 && remapped:
		// baton consumes the reload signal as it arrives: a rewrite of it
		// could never apply.
		return fmt.Errorf("BATON_SIGNAL_MAP: %s is the reload signal (BATON_RELOAD_SIGNAL), which baton consumes: it cannot be rewritten", unix.SignalName(reload))
	case c.stopSignalSet && unix.Signal(c.StopSignal) == reload:
		// Set explicitly, the stop signal also starts a shutdown when
		// baton receives it: one signal cannot mean both.
		return fmt.Errorf("BATON_STOP_SIGNAL: %s is the reload signal (BATON_RELOAD_SIGNAL)", unix.SignalName(reload))
	case c.Surge > 0 && c.Surge < c.Workers && steer:
		// Steering sends every new connection to one generation; a rollout
		// needs both generations to get some (BATON_HANDOFF=shared).
		return errors.New("BATON_SURGE: a rolling swap needs BATON_HANDOFF=shared (steer mode switches whole generations)")
	case !steer && (len(c.Canary) > 0 || c.Bake > 0):
		// Only steer mode decides which generation gets a new connection;
		// with one shared socket there is no share to give, and no way back.
		name := "BATON_CANARY"
		if len(c.Canary) == 0 {
			name = "BATON_BAKE"
		}
		return fmt.Errorf("%s: needs BATON_HANDOFF=steer (only steer mode can give a generation a share of new connections, or return to the old one)", name)
	case c.Drain.Idle && !steer:
		// In shared mode every generation accepts from one queue: a
		// connection accepted after the wait began would never be waited for.
		return errors.New("BATON_DRAIN: idle needs BATON_HANDOFF=steer (only then does a leaving generation stop getting new connections)")
	case len(c.CanaryCheck) > 0 && len(c.Canary) == 0:
		return errors.New("BATON_CANARY_CHECK: runs at the end of each canary step; set BATON_CANARY too")
	case c.Bind == bindIntercept && len(c.Listen) == 0:
		return errors.New("BATON_BIND=intercept: needs BATON_LISTEN (the addresses whose bind() baton answers with its own socket)")
	case c.Ready.Kind == "listen" && (c.Bind != bindIntercept || !c.hasTCP()):
		return errors.New("BATON_READY=listen: needs BATON_BIND=intercept and a TCP listener in BATON_LISTEN (listen() on an adopted TCP socket is the event)")
	}
	if c.HTTPAddr != "" {
		// The port is checked here; whether it is free, only the bind can tell.
		if _, err := net.ResolveTCPAddr("tcp", string(c.HTTPAddr)); err != nil {
			return fmt.Errorf("BATON_HTTP_ADDR: %v", err)
		}
	}
	return nil
}

// hasTCP: BATON_LISTEN has a TCP listener.
func (c *config) hasTCP() bool {
	for _, l := range c.Listen {
		if strings.HasPrefix(l.Network, "tcp") {
			return true
		}
	}
	return false
}

// plain is plain init mode: one worker and no listeners, a drop-in for
// tini.
func (c *config) plain() bool { return len(c.Listen) == 0 && c.Workers <= 1 }

// reloadSignal is the signal that starts a swap, 0 for none. A plain init
// forwards HUP to the app (nginx -s reload, a config re-read) unless a
// reload signal is asked for explicitly.
func (c *config) reloadSignal() unix.Signal {
	if c.plain() && !c.reloadSignalSet {
		return 0
	}
	return unix.Signal(c.ReloadSignal)
}

// steerSettle is how long, in steer mode, a generation that handed over
// keeps accepting before baton first looks whether its queue is empty: a
// connection whose handshake began before the switch completes into the
// old socket's queue about one round trip later. 100 ms covers clients
// on the same network or behind a load balancer many times over; a client
// further away whose handshake straddles the switch can still be reset.
const steerSettle = 100 * time.Millisecond

// options are the loop's options for this configuration; pid1 and
// subreaper say how baton reaps (see becomeReaper).
func (c *config) options(pid1, subreaper bool) supervisor.Options {
	restart := c.Restart
	if restart == "" {
		restart = supervisor.RestartOnFailure
		if c.plain() {
			restart = supervisor.RestartNever // a drop-in for tini
		}
	}
	opts := supervisor.Options{
		Workers:       int(c.Workers),
		Ready:         c.Ready,
		ReadyTimeout:  time.Duration(c.ReadyTimeout),
		ReloadSignal:  c.reloadSignal(),
		StopSignal:    unix.Signal(c.StopSignal),
		StopSignalSet: c.stopSignalSet,
		StopTimeout:   time.Duration(c.StopTimeout),
		ShutdownDelay: time.Duration(c.ShutdownDelay),
		SignalMap:     c.SignalMap,
		ExitMap:       c.ExitMap,
		Restart:       restart,
		RestartLimit:  c.RestartLimit,
		MaxRSS:        int64(c.MaxRSS),
		MaxAge:        time.Duration(c.MaxAge),
		PID1:          pid1,
		Subreaper:     subreaper,
		Surge:         int(c.Surge),
		Watchdog:      time.Duration(c.Watchdog),
		Canary:        c.Canary,
		Bake:          time.Duration(c.Bake),
	}
	if c.Handoff == supervisor.HandoffSteer {
		opts.SteerSettle = steerSettle
	}
	if c.Drain.Idle {
		opts.DrainIdle = c.Drain.Max
		if opts.DrainIdle == 0 {
			opts.DrainIdle = time.Duration(c.StopTimeout)
		}
		// The wait must end: with BATON_STOP_TIMEOUT=0 it is the
		// shortest look there is.
		opts.DrainIdle = max(opts.DrainIdle, time.Nanosecond)
	}
	return opts
}

// needsNotify says whether baton opens a NOTIFY_SOCKET: always in pool
// mode, in plain mode only for BATON_READY=notify.
func (c *config) needsNotify() bool { return !c.plain() || c.Ready.Kind == "notify" }
