module github.com/baton-init/baton/bench

go 1.26.8

require (
	github.com/baton-init/baton v0.0.0-00010101000000-000000000000
	golang.org/x/sys v0.50.0
)

replace github.com/baton-init/baton => ../
