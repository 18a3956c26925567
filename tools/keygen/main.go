// Command keygen writes a development access-token key pair: auth.key.pem, the Ed25519 private key
// the user service signs tokens with, and auth.pub.pem, the public key every service verifies
// them with. It refuses to overwrite an existing pair.
//
// Usage:
//
//	keygen [-dir data/keys]
package main

import (
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"log"
	"os"
	"path/filepath"

	"github.com/meshmart/meshmart/pkg/auth"
)

func main() {
	dir := flag.String("dir", "data/keys", "directory to write auth.key.pem and auth.pub.pem into")
	flag.Parse()
	if err := run(*dir); err != nil {
		log.SetFlags(0)
		log.Fatalf("keygen: %v", err)
	}
}

func run(dir string) error {
	priv, pub := filepath.Join(dir, "auth.key.pem"), filepath.Join(dir, "auth.pub.pem")
	if _, err := os.Stat(priv); err == nil {
		fmt.Printf("%s exists; keeping it\n", priv)
		return nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	privPEM, pubPEM, err := auth.GenerateKey()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if err := os.WriteFile(priv, privPEM, 0o600); err != nil {
		return err
	}
	if err := os.WriteFile(pub, pubPEM, 0o644); err != nil {
		return err
	}
	fmt.Printf("wrote %s and %s\n", priv, pub)
	return nil
}
