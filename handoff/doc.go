// Package handoff holds baton's listening sockets and its one event loop.
//
// It owns the listeners (opened once, handed to every worker generation
// as fds 3, 4, ...), the NOTIFY_SOCKET that workers send READY=1 to, and
// the Supervisor: the single goroutine that starts workers (through
// package spawn), reaps every child (through package reaper), forwards
// signals, swaps generations and restarts crashed workers. Every piece of
// process state is the Supervisor's; other goroutines only send it
// messages (signals, notes, timers, reload requests, status queries).
//
// It does not serve operators (package control does, by asking the loop)
// and does not read the environment (main decodes BATON_* with the
// Decode types defined here).
package handoff
