//go:build !crashhook && !webhookonly

package app

// crashHook is the fault-injection hook of the crash tests, which only a binary built
// with -tags crashhook has; the release binary has none.
func crashHook() func(string) { return nil }
