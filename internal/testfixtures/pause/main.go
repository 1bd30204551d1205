// Command pause is the e2e suites' sandbox ("pause") image: it holds a pod's
// namespaces and does nothing until SIGTERM or SIGINT, as registry.k8s.io/pause does.
// The suites build it locally, because they may pull nothing from a registry.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
}
