// Package version holds the build identity of isolator, set with -ldflags at build time.
package version

import "runtime"

// Set by the build: -ldflags "-X github.com/isolator-dev/isolator/internal/version.Version=v0.1.0 ...".
var (
	Version = "dev"
	Commit  = "unknown"
)

// String is the one-line identity printed by `isolator version` and logged at start-up.
func String() string {
	return "isolator " + Version + " (commit " + Commit + ", " + runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH + ")"
}
