// Package backstop keeps isolator's sandboxing guarantee while the admission webhook is
// down. The webhook fails open (failurePolicy Ignore), so on its own an outage would let
// pods that the policy sends to a sandboxed runtime class start without it. The backstop
// is a ValidatingAdmissionPolicy, generated from the merged policy, that the apiserver
// evaluates itself with no network hop and that fails closed: it denies any pod which
// policy.Evaluate would send to a sandboxed class unless the pod already names a class
// the policy accepts for it.
//
// Generate is a pure compiler from a policy snapshot to those objects: no client, used
// offline by `isolator policy backstop` and by the webhook alike. Package
// webhook/backstopsync keeps them applied from inside the webhook process.
package backstop
