package containerd

import (
	"fmt"
	"strconv"
	"strings"
)

// Handler names served by containerd for isolator's RuntimeClasses.
const (
	HandlerKata = "kata" // RuntimeClass kata-rc
	HandlerRunc = "runc" // RuntimeClass runc-rc
)

// Plugin sections that hold the CRI runtime handlers.
const (
	pluginCRIv2      = "io.containerd.grpc.v1.cri"    // schema version 2 (containerd 1.x)
	pluginRuntimeV3  = "io.containerd.cri.v1.runtime" // schema versions 3 and 4 (containerd 2.x)
	minVersion       = 2
	maxVersion       = 4
	latestV3Minor    = 2 // containerd 2.0 to 2.2 write version 3; 2.3 and later write 4
	firstMajorWithV3 = 2
)

// Schema describes one containerd config schema version.
type Schema struct {
	Version int
	// RuntimePlugin is the plugin section whose containerd.runtimes table holds handlers.
	RuntimePlugin string
	// SectionMerge is true when containerd replaces a whole plugin section with the one
	// from a later imported file (containerd 1.x), rather than merging key by key.
	SectionMerge bool
}

// SchemaFor returns the schema of a config version. Version 1 and unknown versions are
// errors that say what to do.
func SchemaFor(version int64) (Schema, error) {
	switch {
	case version == 2:
		return Schema{Version: 2, RuntimePlugin: pluginCRIv2, SectionMerge: true}, nil
	case version == 3 || version == 4:
		return Schema{Version: int(version), RuntimePlugin: pluginRuntimeV3}, nil
	case version < minVersion:
		return Schema{}, errLegacySchema
	default:
		return Schema{}, fmt.Errorf("config schema version %d is newer than isolator knows (%d to %d); upgrade isolator", version, minVersion, maxVersion)
	}
}

// errLegacySchema explains how to move off the v1 schema.
var errLegacySchema = fmt.Errorf("the config has no \"version\" key or version 1: this is the legacy v1 schema " +
	"(plugin \"cri\"), which isolator does not edit. Fix: on containerd 2.x run " +
	"\"containerd config migrate\" and install its output; on containerd 1.x write the config in schema " +
	"version 2 (start from \"containerd config default\", which begins with \"version = 2\"), then rerun")

// VersionForContainerd returns the schema version a containerd release writes by default,
// used only when the node has no config file at all.
func VersionForContainerd(release string) (int, error) {
	release = strings.TrimPrefix(strings.TrimSpace(release), "v")
	major, rest, _ := strings.Cut(release, ".")
	minorStr, _, _ := strings.Cut(rest, ".")
	maj, err := strconv.Atoi(major)
	if err != nil {
		return 0, fmt.Errorf("containerd version %q: cannot read the major version", release)
	}
	if maj < firstMajorWithV3 {
		return 2, nil
	}
	minor, err := strconv.Atoi(strings.TrimLeftFunc(minorStr, func(r rune) bool { return r < '0' || r > '9' }))
	if err != nil {
		return 0, fmt.Errorf("containerd version %q: cannot read the minor version", release)
	}
	if maj == firstMajorWithV3 && minor <= latestV3Minor {
		return 3, nil
	}
	return 4, nil
}
