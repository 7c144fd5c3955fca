// Package control holds baton's endpoints for operators: the control
// socket that `baton health` asks, and the HTTP endpoint (/metrics,
// /healthz, /readyz) of BATON_HTTP_ADDR.
//
// It owns no process state: every answer is a Query to the event loop
// (supervisor.Supervisor). What it owns are the rules for clients that may be
// hostile: bounded reads, deadlines, a cap on connections held at once,
// back-off when accepting fails, and peer credentials.
package control
