package certs

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"regexp"
	"strings"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/isolator-dev/isolator/internal/owner"
)

// Replicas report the serving certificate they serve in one Lease each, so that the
// leader knows when an old CA can leave the bundle. A Lease expires on its own: a replica
// that died stops renewing it, and after its duration it no longer holds a rotation back.
const (
	// ReportLabel marks the report Leases (value "true").
	ReportLabel = "isolator.dev/serving-cert-report"
	// ReportSerialAnnotation and ReportIssuerAnnotation hold the served certificate's
	// serial number and its AuthorityKeyId, both hex.
	ReportSerialAnnotation = "isolator.dev/serving-serial"
	ReportIssuerAnnotation = "isolator.dev/serving-issuer-key-id"
	// ReportExpiresAnnotation is when the served certificate expires, and
	// ReportSinceAnnotation since when the replica serves it (RFC 3339).
	ReportExpiresAnnotation = "isolator.dev/serving-expires"
	ReportSinceAnnotation   = "isolator.dev/serving-since"
	// reportPrefix starts every report Lease's name.
	reportPrefix = SecretName + "-"
)

// NewIdentity names this replica in its report: the host name (a pod's name) and a random
// suffix, because two processes on one host (a local run, a test) are two replicas.
func NewIdentity(hostname string) string {
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	h := strings.Trim(nonName.ReplaceAllString(strings.ToLower(hostname), "-"), "-.")
	if len(h) > 200 {
		h = h[:200]
	}
	if h == "" {
		h = "replica"
	}
	return h + "-" + hex.EncodeToString(b)
}

var nonName = regexp.MustCompile(`[^a-z0-9.-]+`)

// ReportLeaseName is the name of identity's report Lease.
func ReportLeaseName(identity string) string { return reportPrefix + identity }

// writeReport creates or renews identity's report Lease with what it serves now.
func writeReport(ctx context.Context, reader client.Reader, c client.Client, namespace, identity, ownerName string, ttl time.Duration, s *served) error {
	lease := &coordinationv1.Lease{}
	key := types.NamespacedName{Namespace: namespace, Name: ReportLeaseName(identity)}
	err := reader.Get(ctx, key, lease)
	create := apierrors.IsNotFound(err)
	if err != nil && !create {
		return fmt.Errorf("reading report Lease %s: %w", key, err)
	}
	lease.Name, lease.Namespace = key.Name, key.Namespace
	if ownerName != "" {
		ref, err := owner.Reference(ctx, reader, ownerName)
		if err != nil {
			return fmt.Errorf("report Lease %s: %w", key, err)
		}
		owner.Set(lease, ref)
	}
	if lease.Labels == nil {
		lease.Labels = map[string]string{}
	}
	lease.Labels[ReportLabel] = "true"
	if lease.Annotations == nil {
		lease.Annotations = map[string]string{}
	}
	if s != nil {
		lease.Annotations[ReportSerialAnnotation] = Serial(s.leaf)
		lease.Annotations[ReportIssuerAnnotation] = KeyID(s.leaf.AuthorityKeyId)
		lease.Annotations[ReportExpiresAnnotation] = s.leaf.NotAfter.UTC().Format(time.RFC3339)
		lease.Annotations[ReportSinceAnnotation] = s.since.UTC().Format(time.RFC3339Nano)
	}
	now := metav1.NewMicroTime(time.Now())
	lease.Spec.HolderIdentity = ptr.To(identity)
	lease.Spec.LeaseDurationSeconds = ptr.To(int32(max(ttl/time.Second, 1)))
	lease.Spec.RenewTime = &now
	if create {
		lease.Spec.AcquireTime = &now
		err = c.Create(ctx, lease)
	} else {
		err = c.Update(ctx, lease)
	}
	if err != nil {
		return fmt.Errorf("writing report Lease %s: %w", key, err)
	}
	return nil
}

// ReadReports lists the replicas' reports in namespace.
func ReadReports(ctx context.Context, reader client.Reader, namespace string) ([]Replica, []coordinationv1.Lease, error) {
	var list coordinationv1.LeaseList
	if err := reader.List(ctx, &list, client.InNamespace(namespace), client.MatchingLabels{ReportLabel: "true"}); err != nil {
		return nil, nil, fmt.Errorf("listing serving certificate reports (Leases labelled %s): %w", ReportLabel, err)
	}
	out := make([]Replica, 0, len(list.Items))
	for _, l := range list.Items {
		out = append(out, replicaOf(&l))
	}
	return out, list.Items, nil
}

func replicaOf(l *coordinationv1.Lease) Replica {
	r := Replica{
		Identity:    strings.TrimPrefix(l.Name, reportPrefix),
		Serial:      l.Annotations[ReportSerialAnnotation],
		IssuerKeyID: l.Annotations[ReportIssuerAnnotation],
	}
	if l.Spec.HolderIdentity != nil {
		r.Identity = *l.Spec.HolderIdentity
	}
	if l.Spec.RenewTime != nil && l.Spec.LeaseDurationSeconds != nil {
		r.Expires = l.Spec.RenewTime.Add(time.Duration(*l.Spec.LeaseDurationSeconds) * time.Second)
	}
	return r
}
