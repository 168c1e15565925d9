//go:build tools

// Package tools keeps this folder a Go package; hack/scanners/build.sh builds promtool.
package tools
