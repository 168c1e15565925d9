// A wrapper module for the scanners: `go install pkg@version` refuses Prometheus
// because its go.mod has exclude directives, so promtool (and kube-score, for one
// go.sum) are built from here, with these requirements as the main module's.
module promptcache.dev/hack/scanners/tools

go 1.24.0

require (
	github.com/prometheus/prometheus v0.307.3
	github.com/zegl/kube-score v1.20.0
)
