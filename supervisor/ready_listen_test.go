//go:build linux

package supervisor

import (
	"testing"

	"github.com/baton-init/baton/handoff"
	"golang.org/x/sys/unix"
)

// TestReadyListen: with BATON_READY=listen a worker is ready when the
// bind interception reports it listened, and a swap completes on that.
func TestReadyListen(t *testing.T) {
	o := baseOpts()
	o.Ready = ReadyMode{Kind: "listen"}
	r := newRig(t, o)
	w1 := r.worker()
	r.notes <- handoff.Note{PID: w1.pid, Listened: true}
	r.expect("generation ready")
	r.sigs <- unix.SIGHUP
	w2 := r.worker()
	r.notes <- handoff.Note{PID: w2.pid, Listened: true}
	r.expect("swap complete")

}
