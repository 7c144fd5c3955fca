// Package supervisor is baton's one event loop: the Supervisor, the single
// goroutine that starts workers (through package spawn), reaps every child
// (through package reaper), forwards signals, swaps generations and
// restarts crashed workers. Every piece of process state is the
// Supervisor's; other goroutines only send it messages (signals, notes,
// timers, reload requests, status queries).
//
// It does not serve operators (package control does, by asking the loop)
// and does not read the environment (main decodes BATON_* with the
// Decode types defined here, config.go). The sockets the workers share are
// package handoff's.
package supervisor
