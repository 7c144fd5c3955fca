package demo

import (
	"errors"
	"fmt"
	"net"
)

// errNotifySocket reports a NOTIFY_SOCKET that is neither an absolute path
// nor an abstract name; systemd's sd_notify refuses those too.
var errNotifySocket = errors.New("NOTIFY_SOCKET must be an absolute path or @abstract")

// sdNotify sends state (e.g. "READY=1") as one datagram to socket, the value
// of NOTIFY_SOCKET. An empty socket means no service manager listens, and
// sdNotify returns nil having sent nothing, as sd_notify(3) does.
//
// A leading '@' names a socket in Linux's abstract namespace. The syscall
// package itself turns that '@' into the leading NUL byte of sun_path (and
// leaves the trailing NUL out of the address length), so the name is passed
// through unchanged.
func sdNotify(socket, state string) error {
	if socket == "" {
		return nil
	}
	if socket[0] != '/' && socket[0] != '@' {
		return fmt.Errorf("notify %q: %w", socket, errNotifySocket)
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: socket, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("notify %s: %w", socket, err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(state)); err != nil {
		return fmt.Errorf("notify %s: %w", socket, err)
	}
	return nil
}
