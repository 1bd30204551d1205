// Package policy is isolator's pure policy model: the RuntimePolicy v1alpha1 types, a
// strict parser, validation with field paths, compilation into an immutable Snapshot
// that merges the policies of several teams, and Evaluate, which turns the facts of one
// pod into a Decision.
//
// The package does no I/O. It never imports client-go, controller-runtime or net/http
// (a depguard rule enforces this), so the webhook, the offline CLI, the backstop
// generator and the fuzzers all evaluate exactly the same code.
//
// Everything a request needs is prepared when a policy is compiled: selectors, globs and
// image patterns are compiled once, rules are sorted into resolution order and indexed by
// namespace name, label and image prefix, and the reasons for common decisions are
// rendered ahead of time. Evaluate then reads the Snapshot without locks or allocations.
package policy
