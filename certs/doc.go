// Package certs provides the webhook's serving certificate. In cert-manager mode the key
// pair is a mounted Secret that cert-manager renews; FileSource serves it and reloads it
// when the files change, with no restart and no failed handshake.
package certs
