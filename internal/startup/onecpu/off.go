//go:build linux && onecpu_off

package onecpu

// Hold does nothing in a build with the onecpu_off tag, which bench/init
// makes to measure what holding the threads on one CPU saves.
func Hold() (release func()) { return func() {} }
