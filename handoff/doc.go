// Package handoff holds baton's listening sockets and the readiness
// protocol: the listeners (opened once, handed to every worker generation
// as fds 3, 4, ...; listen.go), steer mode's socket per generation and the
// kernel program that picks one (steer.go), the relay of what a leaving
// generation left queued (relay.go), and the NOTIFY_SOCKET that workers
// send READY=1 to (notify.go).
//
// It owns no process state: the event loop (package supervisor) decides
// when a generation's sockets are opened, steered to, relayed and
// released, through the Sockets interface.
package handoff
