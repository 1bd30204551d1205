package policy

import _ "embed" // the schema below

// Schema is the JSON Schema (draft 2020-12) of a policy file: a RuntimePolicy
// document, or a policy ConfigMap holding one under policy.yaml (checked as a
// ConfigMap: its label and key; the policy inside is a string). It is generated from
// the types in this package (TestSchemaIsCurrent regenerates it; UPDATE_SCHEMA=1 writes
// it), and printed by `isolator policy schema`.
//
//go:embed runtimepolicy.schema.json
var Schema []byte

// SchemaURL is where editors find the schema of the newest policy version.
const SchemaURL = "https://raw.githubusercontent.com/isolator-dev/isolator/main/policy/runtimepolicy.schema.json"
