//go:build tools

// Package tools pins the scanners' modules; hack/scanners/build.sh builds their commands.
package tools
