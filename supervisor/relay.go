//go:build linux

package supervisor

import (
	"runtime/debug"
	"time"

	"github.com/baton-init/baton/handoff"
)

// relayBatch is what the loop knows of a generation's relays being dialled.
type relayBatch struct {
	dialing, ok, failed int
	err                 error
}

// relay relays what is queued on gen's sockets (Sockets.Relay) and
// returns how many connections it took.
func (s *Supervisor) relay(gen int) int {
	n := s.Sockets.Relay(gen, max(s.opts.StopTimeout, time.Second), func(ev handoff.RelayEvent) { s.relayEvents <- ev })
	if n > 0 {
		s.relaysOpen += n
		s.relaysAnswering += n
		b := s.relayBatches[gen]
		if b == nil {
			b = &relayBatch{}
			s.relayBatches[gen] = b
		}
		b.dialing += n
	}
	return n
}

// onRelay counts a relay's dial, its answer's end and its end. A relay
// counts as relayed once its dial succeeded; a generation's relays are
// logged once all are dialled.
func (s *Supervisor) onRelay(ev handoff.RelayEvent) {
	if ev.Answered || ev.Err != nil {
		s.relaysAnswering--
	}
	if ev.Answered {
		return
	}
	if ev.Ended {
		if s.relaysOpen--; s.relaysOpen == 0 {
			freeRelayMemory()
			s.Log.Debug().Msg("relays done")
		}
		return
	}
	b := s.relayBatches[ev.Gen]
	if b == nil {
		return
	}
	b.dialing--
	if ev.Err != nil {
		b.failed, b.err = b.failed+1, ev.Err
	} else {
		b.ok++
	}
	if b.dialing > 0 {
		return
	}
	delete(s.relayBatches, ev.Gen)
	freeRelayMemory()
	if b.ok > 0 {
		s.Log.Warn().Int("gen", ev.Gen).Int("connections", b.ok).Msg("queued connections relayed")
	}
	if b.failed > 0 {
		s.Log.Error().Err(b.err).Int("gen", ev.Gen).Int("connections", b.failed).Msg("relay failed")
	}
	if s.stopAfterRelay && len(s.relayBatches) == 0 {
		s.stopAll()
	}
}

// freeRelayMemory returns to the kernel what relays no longer use: what
// their dials left to collect once a batch is dialled, their stacks once
// the last has ended. Go's scavenger would return it only slowly, and a
// burst of relays (up to handoff.MaxRelays) would leave PID 1 megabytes larger for
// minutes. Relays are rare (a generation that left connections queued),
// and a collection of baton's small heap takes about a millisecond.
func freeRelayMemory() { debug.FreeOSMemory() }
