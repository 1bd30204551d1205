// Command app is the demo's workload. The demo imports it into its node under the
// image name of every example container, so that nothing is pulled. It prints where it
// runs (host name and kernel: under a Kata VM the kernel is the guest's, under runc and
// under the demo's stand-in for Kata it is the machine's) and then waits for SIGTERM, as
// a server does; with --exit, the init containers' image, it prints and exits.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"golang.org/x/sys/unix"
)

func main() {
	host, _ := os.Hostname()
	var uts unix.Utsname
	kernel := "unknown"
	if unix.Uname(&uts) == nil {
		kernel = unix.ByteSliceToString(uts.Release[:])
	}
	fmt.Printf("hello from %s, kernel %s\n", host, kernel)
	if len(os.Args) > 1 && os.Args[1] == "--exit" {
		return
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
}
