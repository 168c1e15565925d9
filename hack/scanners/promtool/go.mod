// A wrapper module for promtool: `go install pkg@version` refuses Prometheus because
// its go.mod has exclude directives, so hack/scanners/build.sh builds
// github.com/prometheus/prometheus/cmd/promtool from here, as the main module's
// requirement.
module promptcache.dev/hack/scanners/promtool

go 1.24.0

require github.com/prometheus/prometheus v0.307.3

require github.com/fatih/color v1.18.0 // indirect
