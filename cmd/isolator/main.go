// Command isolator is the single binary of isolator: the admission webhook, the node
// bootstrapper and the offline policy tools. All behaviour lives in package app so that
// tests can run commands without touching os.Args.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/isolator-dev/isolator/cmd/isolator/app"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(app.Run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}
