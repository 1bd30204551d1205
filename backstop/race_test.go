//go:build race

package backstop

// The race detector slows CEL evaluation ten times; the cost test then measures one case.
const raceEnabled = true
