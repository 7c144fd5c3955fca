// Package demo holds everything behind `baton hello` and `baton demo`:
//
//   - [Hello], the built-in demo worker. It follows the recipe for a Go
//     worker that drains without losing a request when baton retires its
//     generation: it takes its listeners from LISTEN_FDS (the systemd
//     convention baton speaks), sends READY=1 to NOTIFY_SOCKET once it
//     serves, and on SIGTERM closes its listeners, keeps answering with
//     "Connection: close" for a grace period, and only then shuts down.
//   - [Load], a load generator that never retries, so that every refused,
//     reset or truncated request shows up in its [Result].
//   - [Run], the self-contained reload-under-load demonstration: it starts
//     baton (this same binary) with two hello workers per generation, reloads
//     it several times under load and reports what the clients saw.
//
// The package owns no process-wide state: Hello and Run subscribe to the
// signals they need and unsubscribe on return. It does not import
// go-systemd (the readiness message and the LISTEN_FDS parsing are a few
// lines each, and the binary must stay small), nor zerolog (the worker
// writes plain lines; the demo only parses baton's JSON), nor net/http:
// with crypto/tls, which it always links, net/http would add about 4 MB to
// baton. Hello serves with a minimal HTTP/1.1 server and Load is a minimal
// HTTP/1.1 client (http1.go, helloserver.go, load.go). The tests check both
// against net/http, and run the net/http drain recipe of docs/protocol.md
// and the naive http.Server.Shutdown as workers next to Hello.
package demo
