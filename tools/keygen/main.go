// Command keygen writes a development access-token key pair: auth.key.pem, the Ed25519 private key
// the user service signs tokens with, and auth.pub.pem, its public half (the other services fetch
// the public keys from the user service instead; the file serves -auth-public-key set-ups and
// -extra-keys). It keeps an existing pair.
//
// Usage:
//
//	keygen [-dir data/keys]
package main

import (
	"flag"
	"fmt"
	"log"
	"path/filepath"

	"github.com/meshmart/meshmart/pkg/auth"
)

func main() {
	dir := flag.String("dir", "data/keys", "directory to write auth.key.pem and auth.pub.pem into")
	flag.Parse()
	created, err := auth.WriteKeyPair(*dir)
	if err != nil {
		log.SetFlags(0)
		log.Fatalf("keygen: %v", err)
	}
	state := "kept the existing"
	if created {
		state = "wrote"
	}
	fmt.Printf("%s %s and %s\n", state, filepath.Join(*dir, auth.PrivateKeyFile), filepath.Join(*dir, auth.PublicKeyFile))
}
