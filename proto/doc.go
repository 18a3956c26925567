// Package proto holds meshmart's protobuf contracts and the Go code buf generates from them, one
// package per protobuf package: meshmart/user/v1 is imported as
// github.com/meshmart/meshmart/proto/meshmart/user/v1 (package userv1). Regenerate with
// `make generate`; never edit the generated files by hand.
package proto
