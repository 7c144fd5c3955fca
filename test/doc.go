// Package test holds baton's integration tests: they build the baton
// binary once and run it as a real PID 1 in a new PID namespace (with a user
// namespace when not root), with real workers, signals and sockets.
package test
