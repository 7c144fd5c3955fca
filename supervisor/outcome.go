//go:build linux

package supervisor

import "context"

// Outcome is how a reload ended, for whoever asked for it (baton reload).
type Outcome struct {
	OK     bool   // its swap completed
	Gen    int    // the generation serving after it
	Reason string // why not, when !OK: refused by the check, rolled back, halted, stopping
}

type reloadReq struct {
	why   string
	reply chan<- Outcome
}

// answer sends o to reply, if anyone asked. reply is buffered (Reload).
func answer(reply chan<- Outcome, o Outcome) {
	if reply != nil {
		reply <- o
	}
}

// answerAll sends o to every reply in *replies, which it then empties.
func answerAll(replies *[]chan<- Outcome, o Outcome) {
	for _, r := range *replies {
		answer(r, o)
	}
	*replies = nil
}

// Reload asks the loop for a reload and waits for the outcome of the swap
// that covers it: the one it begins, or, with a swap already in progress
// (begun before this request), the next one. It fails if ctx ends first.
func (s *Supervisor) Reload(ctx context.Context, why string) (Outcome, error) {
	reply := make(chan Outcome, 1)
	return roundTrip(ctx, s.reloadReqs, reloadReq{why: why, reply: reply}, reply)
}

// failWaiters answers every reload still waiting with reason.
func (s *Supervisor) failWaiters(reason string) {
	o := Outcome{Reason: reason}
	if s.current != nil {
		o.Gen = s.current.num
	}
	if s.next != nil {
		answerAll(&s.next.waiters, o)
	}
	if s.parked != nil && s.current != nil {
		// A bake in progress: the swap's outcome was still to come.
		answerAll(&s.current.waiters, o)
	}
	answerAll(&s.queued, o)
	if c := s.checking; c != nil {
		answerAll(&c.replies, o)
	}
}

// conclude ends the swap to g: whoever waits for its outcome gets o, the
// generation that no longer serves leaves (handOver), and a reload
// coalesced meanwhile begins.
func (s *Supervisor) conclude(g *generation, o Outcome, leaving *generation) {
	answerAll(&g.waiters, o)
	s.handOver(leaving)
	s.afterSwap()
}
