package main

// What baton opens before its first worker starts: the watcher, the
// listeners, the notify socket, the steering sockets and the HTTP
// endpoint. All of it is opened before anything is logged, so that a
// failure is one line and exit 2, like a malformed value.

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"

	"github.com/rs/zerolog"

	"github.com/baton-init/baton/control"
	"github.com/baton-init/baton/handoff"
	"github.com/baton-init/baton/handoff/idle"
	"github.com/baton-init/baton/supervisor"
	"github.com/baton-init/baton/watch"
)

// opened is what openAll opened; close releases it.
type opened struct {
	listeners  []*handoff.Listener
	sockets    handoff.Sockets
	notes      chan handoff.Note
	notifyAddr string
	watcher    *watch.Watcher
	http       net.Listener
	closers    []func()
}

// openAll opens the watcher, the listeners, the notify socket and, in
// steer mode, the steering sockets. An error names the variable at fault;
// what was opened until then is in o, for close.
func openAll(cfg *config) (o *opened, err error) {
	o = &opened{}
	if len(cfg.Watch) > 0 {
		// Before sup.Run starts the first worker: a change made after New
		// returns is reported even if the first hash, which New does not
		// wait for, saw it.
		if o.watcher, err = watch.New(cfg.Watch, watch.Options{}); err != nil {
			return o, prefixed("BATON_WATCH", err)
		}
		o.closers = append(o.closers, func() { _ = o.watcher.Close() })
	}
	if o.listeners, err = handoff.Open(cfg.Listen); err != nil {
		return o, prefixed("BATON_LISTEN", err)
	}
	o.closers = append(o.closers, func() { handoff.CloseAll(o.listeners) })
	if cfg.needsNotify() {
		uid, gid := -1, -1
		if cfg.User.Cred != nil {
			uid, gid = int(cfg.User.Cred.UID), int(cfg.User.Cred.GID)
		}
		n, err := handoff.NewNotifier([]string{"/run", os.TempDir()}, uid, gid)
		if err != nil {
			return o, err
		}
		o.closers = append(o.closers, func() { _ = n.Close() })
		o.notes, o.notifyAddr = make(chan handoff.Note, 256), n.Addr
		go n.Run(o.notes)
	}
	fds := make(handoff.Shared, len(o.listeners))
	for i, l := range o.listeners {
		fds[i] = l.FD
	}
	o.sockets = fds
	if cfg.Handoff == supervisor.HandoffSteer {
		if o.sockets, err = handoff.NewSteering(o.listeners); err != nil {
			return o, prefixed("BATON_HANDOFF=steer", err)
		}
	}
	return o, nil
}

// serveHTTP binds BATON_HTTP_ADDR, if set, and serves sup's endpoints on it.
func (o *opened) serveHTTP(cfg *config, sup *supervisor.Supervisor) error {
	if cfg.HTTPAddr == "" {
		return nil
	}
	hl, err := control.ServeHTTP(sup, string(cfg.HTTPAddr))
	if err != nil {
		return prefixed("BATON_HTTP_ADDR", err)
	}
	o.http = hl
	o.closers = append(o.closers, func() { _ = hl.Close() })
	return nil
}

// logOpened logs the listeners (their real addresses: port 0 is allowed)
// once everything is open.
func (o *opened) logOpened(log zerolog.Logger) {
	for i, l := range o.listeners {
		log.Info().Str("name", l.Name).Str("addr", l.Bound).Int("fd", 3+i).Msg("listener opened")
	}
}

// close releases what was opened, the last first.
func (o *opened) close() {
	for i := len(o.closers) - 1; i >= 0; i-- {
		o.closers[i]()
	}
}

// listenControl binds the control socket (baton health, baton reload) and
// has sup serve it once started. Whatever another process of the network
// namespace does to its name, baton starts: a taken name gets a random
// suffix, and without any control socket only baton health and baton
// reload fail. Its result is for close.
func listenControl(sup *supervisor.Supervisor, log zerolog.Logger) func() {
	ctl, err := control.Listen()
	switch {
	case err != nil:
		log.Warn().Err(err).Msg("control socket unavailable: baton health will fail")
	case ctl.Taken != "":
		log.Warn().Str("taken", ctl.Taken).Str("holder", ctl.Holder).Str("addr", ctl.Addr).Msg("control socket name taken")
	}
	if ctl == nil {
		return func() {}
	}
	// It is served (which sets up the runtime's network poller, a few
	// hundred microseconds) while the first worker execs.
	sup.Started = func() {
		if err := ctl.Serve(sup); err != nil {
			log.Warn().Err(err).Msg("control socket unavailable: baton health will fail")
		}
	}
	return func() { _ = ctl.Close() }
}

// forwardWatch turns the watcher's changes into reload requests, and logs
// its errors.
func forwardWatch(w *watch.Watcher, reloads chan<- string, log zerolog.Logger) {
	go func() {
		for range w.Changes() {
			reloads <- "watch"
		}
	}()
	go func() {
		for err := range w.Errors() {
			log.Warn().Err(err).Msg("watch")
		}
	}()
}

// prefixed is err as one line that names the variable at fault.
func prefixed(name string, err error) error { return fmt.Errorf("%s: %w", name, err) }

// idleConns lists, for BATON_DRAIN=idle, the TCP connections that the
// processes of the given process groups accepted on baton's TCP
// listeners: those whose local port is one of theirs. Connections they
// opened themselves (to a database, say) end in a response received, not
// sent, and are not waited for.
func idleConns(ls []*handoff.Listener) func(pgids []int) ([]idle.Conn, error) {
	ports := map[uint16]bool{}
	for _, l := range ls {
		if !strings.HasPrefix(l.Network, "tcp") {
			continue
		}
		if _, p, err := net.SplitHostPort(l.Bound); err == nil {
			if n, err := strconv.ParseUint(p, 10, 16); err == nil {
				ports[uint16(n)] = true
			}
		}
	}
	return func(pgids []int) ([]idle.Conn, error) { return idle.Of(pgids, ports) }
}
