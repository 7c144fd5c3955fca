package main

import (
	"os"
	"strings"
	"testing"

	"github.com/baton-init/baton/supervisor"
)

// TestBindDefaults: BATON_BIND=intercept makes steer mode and listen
// readiness the defaults (each still settable), needs BATON_LISTEN, and
// BATON_READY=listen needs it and a TCP listener.
func TestBindDefaults(t *testing.T) {
	for _, c := range []struct {
		env     map[string]string
		handoff supervisor.Handoff
		ready   string
		err     string
	}{
		{map[string]string{"BATON_LISTEN": "tcp://127.0.0.1:0"}, supervisor.HandoffShared, "auto", ""},
		{map[string]string{"BATON_LISTEN": "tcp://127.0.0.1:0", "BATON_BIND": "intercept"}, supervisor.HandoffSteer, "listen", ""},
		{map[string]string{"BATON_LISTEN": "tcp://127.0.0.1:0", "BATON_BIND": "intercept", "BATON_HANDOFF": "shared", "BATON_READY": "notify"}, supervisor.HandoffShared, "notify", ""},
		{map[string]string{"BATON_LISTEN": "udp://127.0.0.1:0", "BATON_BIND": "intercept"}, supervisor.HandoffSteer, "auto", ""},
		{map[string]string{"BATON_LISTEN": "udp://127.0.0.1:0", "BATON_BIND": "intercept", "BATON_READY": "listen"}, "", "", "BATON_READY=listen: needs"},
		{map[string]string{"BATON_LISTEN": "tcp://127.0.0.1:0", "BATON_READY": "listen"}, "", "", "BATON_READY=listen: needs"},
		{map[string]string{"BATON_BIND": "intercept"}, "", "", "BATON_BIND=intercept: needs BATON_LISTEN"},
		{map[string]string{"BATON_BIND": "yes"}, "", "", "BATON_BIND: want off or intercept"},
	} {
		for _, kv := range os.Environ() {
			if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "BATON_") {
				t.Setenv(k, "")
			}
		}
		for k, v := range c.env {
			t.Setenv(k, v)
		}
		cfg, err := loadConfig()
		if err == nil {
			err = cfg.validate()
		}
		switch {
		case c.err != "":
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%v: error %v, want %q", c.env, err, c.err)
			}
		case err != nil:
			t.Errorf("%v: %v", c.env, err)
		case cfg.Handoff != c.handoff || cfg.Ready.Kind != c.ready:
			t.Errorf("%v: handoff %s, ready %s; want %s, %s", c.env, cfg.Handoff, cfg.Ready.Kind, c.handoff, c.ready)
		case cfg.Drain.Idle != (c.env["BATON_BIND"] == "intercept" && c.handoff == supervisor.HandoffSteer && strings.HasPrefix(c.env["BATON_LISTEN"], "tcp")):
			t.Errorf("%v: drain idle %v, want it exactly with intercept, steer and a TCP listener", c.env, cfg.Drain.Idle)
		}
	}
}
