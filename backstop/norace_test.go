//go:build !race

package backstop

const raceEnabled = false
