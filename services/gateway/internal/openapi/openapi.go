// Package openapi holds the OpenAPI v2 document of every REST binding of the contracts
// (meshmart.swagger.json), which `make generate` writes with protoc-gen-openapiv2 and the gateway
// serves at /openapi.json.
package openapi

import _ "embed"

// Document is the OpenAPI v2 document, JSON.
//
//go:embed meshmart.swagger.json
var Document []byte
