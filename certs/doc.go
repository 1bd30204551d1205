// Package certs provides the webhook's serving certificate, in two modes, and the checks
// that `isolator certs check` runs on it.
//
// In cert-manager mode the key pair is a mounted Secret that cert-manager renews and
// cainjector puts into the webhook configurations; FileSource serves it and reloads it
// when the files change (including the kubelet's ..data symlink swap), with no restart
// and no failed handshake.
//
// In self-managed mode isolator is its own CA. Everything lives in one kubernetes.io/tls
// Secret (SecretName): the serving key pair, ca.crt (the bundle every webhook
// configuration must trust), the signing CA and, during a CA rotation, the next CA.
//
//   - One writer. The Rotator runs on the elected leader only. Renewal.Plan decides each
//     step from the Secret, the time and the replicas' reports; the Rotator writes the
//     Secret and then patches caBundle (and nothing else) of isolator's Mutating and
//     Validating webhook configurations to equal ca.crt, and records in the Secret when
//     that bundle was in place (AnnotationBundleInjectedAt).
//   - Every replica serves from memory. SecretSource watches that one Secret and switches
//     to a new key pair the moment it changes. Then it reports what it serves in its own
//     Lease (ReportLabel, serial and issuer key ID in annotations, renewed every third of
//     its TTL, withdrawn on shutdown). A replica that dies stops renewing its Lease, and
//     it stops counting once the Lease expires.
//   - Leaf renewal at 2/3 of its lifetime swaps the key pair under the same CA: nothing
//     to coordinate.
//   - CA rotation overlaps. (1) A new CA joins ca.crt as Next and is injected. (2) Once
//     the configurations have held it for the propagation delay, it becomes the signer
//     and signs a new leaf, which the replicas load. (3) The old CA leaves ca.crt only
//     once every live replica reports a leaf from the new signer, and no sooner than a
//     grace period after (2).
//
// So the apiserver trusts every certificate a replica can serve, at every moment.
package certs
