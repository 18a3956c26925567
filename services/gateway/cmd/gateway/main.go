// Command gateway is meshmart's edge for browsers and HTTP clients: REST (grpc-gateway), gRPC-Web
// and Connect in front of the user, order and payment services.
package main

import _ "github.com/meshmart/meshmart/services/gateway/internal/openapi"

func main() {}
