// Package containerd plans isolator's changes to a node's containerd configuration.
//
// It is pure: PlanInstall and PlanRemoval take file contents and facts about the host and return
// the exact bytes to write, so every rule below is table-tested and fuzzed without a
// node. Reading files, writing them atomically and restarting containerd happen in the
// caller (package bootstrap).
//
// The rules, each learnt from another installer breaking a node:
//   - The admin's config is never re-encoded. It is parsed (github.com/pelletier/go-toml/v2)
//     to find facts, and at most one `imports` entry is spliced into it as bytes, so
//     comments, key order and floats such as `1.0` survive byte for byte. PlanRemoval
//     takes exactly those bytes out again.
//   - Everything else goes into isolator's own drop-in file, which only isolator encodes.
//   - Schema version 2 (containerd 1.x) merges imported files per plugin section: a
//     drop-in that names the CRI plugin replaces the admin's whole CRI section. So for
//     version 2 the drop-in carries the admin's effective CRI section plus the handlers.
//     Versions 3 and 4 (containerd 2.x) merge imported files key by key, so the drop-in
//     holds only the handlers.
//   - A `runc` handler is added when no admin file defines one, so that runc-rc keeps
//     working and a node without any config keeps a usable CRI plugin.
//   - A config without `version` (the legacy v1 schema) is refused with a fix.
package containerd
