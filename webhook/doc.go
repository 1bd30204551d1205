// Package webhook is isolator's admission side: the pod mutator that applies the merged
// policy to every new pod, the validator that refuses bad policy ConfigMaps, the policy
// store that turns ConfigMaps into an atomically swapped policy.Snapshot, the namespace
// and RuntimeClass lookups the mutator reads, and their Prometheus metrics. Setup wires
// all of it into a controller-runtime manager.
//
// One admission, kept straight:
//
//	AdmissionReview -> decode the fields of the Pod a decision needs -> facts (namespace
//	labels from the informer, pod labels, normalised images) -> Snapshot.Evaluate ->
//	response (one JSON-patch op on /spec/runtimeClassName plus isolator's annotations,
//	or a denial, or allow) + metrics, audit annotations, warnings.
package webhook
