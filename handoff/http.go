//go:build linux

package handoff

import (
	"net"
	"net/http"
)

// ServeHTTP serves /metrics, /healthz and /readyz on addr. (Stub: the
// endpoints land with the operations work.)
func ServeHTTP(s *Supervisor, addr string) (*http.Server, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	srv := &http.Server{Addr: l.Addr().String()}
	go func() { _ = srv.Serve(l) }()
	return srv, nil
}
