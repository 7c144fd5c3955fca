// Command validate checks baton's example Kubernetes manifests without a
// cluster and without downloading any schema.
//
// Each YAML document is decoded strictly (sigs.k8s.io/yaml UnmarshalStrict:
// an unknown or misspelt field, a duplicate key or a wrong type is an error)
// into the real API types from k8s.io/api (apps/v1 Deployment, core/v1
// ConfigMap and Service) or into kustomize's Kustomization. Then it checks
// what a schema cannot: metadata names and labels (with apimachinery's own
// validators), selectors against pod labels, probes and Service targetPorts
// against declared container ports, volumes against ConfigMaps, and baton's
// own contract: BATON_* names and values, the listen and HTTP ports, the
// watched ConfigMap directory, and that terminationGracePeriodSeconds
// exceeds BATON_SHUTDOWN_DELAY + BATON_STOP_TIMEOUT.
//
// Usage:
//
//	go run . ../*.yaml              # files
//	kubectl kustomize .. | go run . -   # "-" reads standard input
//
// Exit status: 0 if every check passed, 1 if any problem was found, 2 if an
// input could not be read.
package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: validate FILE.yaml... (or - for standard input)")
		os.Exit(2)
	}
	var inputs []input
	for _, name := range os.Args[1:] {
		in, err := readInput(name)
		if err != nil {
			fmt.Fprintf(os.Stderr, "validate: %v\n", err)
			os.Exit(2)
		}
		inputs = append(inputs, in)
	}
	res := validate(inputs)
	for _, p := range res.problems {
		fmt.Println(p)
	}
	if len(res.problems) > 0 {
		fmt.Printf("FAIL: %d problem(s) in %d object(s) from %d input(s)\n", len(res.problems), res.objects, len(inputs))
		os.Exit(1)
	}
	fmt.Printf("ok: %d object(s) from %d input(s)\n", res.objects, len(inputs))
}

// readInput reads one named file, or standard input for "-".
func readInput(name string) (input, error) {
	if name == "-" {
		data, err := io.ReadAll(os.Stdin)
		if err != nil {
			return input{}, fmt.Errorf("read standard input: %w", err)
		}
		return input{name: "<stdin>", data: data}, nil
	}
	data, err := os.ReadFile(name)
	if err != nil {
		return input{}, err
	}
	return input{name: name, dir: filepath.Dir(name), data: data}, nil
}
