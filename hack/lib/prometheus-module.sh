# The pinned Prometheus Go module, shared by hack/promtool.sh and hack/prometheus.sh so that the
# rule checker and the server always come from one release (the tests check rules with one and
# evaluate them with the other). Source it after lib/gobuild.sh; it sets variables only.

# The Go module's v0.X.Y versions are Prometheus releases 3.X.Y.
PROMETHEUS_VERSION=v0.316.0
# Prometheus's own build tag that leaves out every service-discovery plugin (AWS, Azure, GCE,
# Kubernetes, ...): rule checks need none and the tests scrape static loopback targets; the
# cold build drops from ~10 minutes to a few (see the README for both figures).
PROMETHEUS_TAGS=remove_all_sd

TOOL_VERSION="$PROMETHEUS_VERSION"
TOOL_TAGS="$PROMETHEUS_TAGS"
_version_pkg=github.com/prometheus/common/version
TOOL_LDFLAGS="-s -w -X $_version_pkg.Version=$PROMETHEUS_VERSION -X $_version_pkg.Branch=module -X $_version_pkg.Revision=$PROMETHEUS_VERSION"
