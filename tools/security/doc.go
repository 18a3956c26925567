// Package security replays attacks on a running platform and proves that each fails: every test
// names the attack, runs it against real processes over real sockets (the launcher's platform,
// shared by the package's tests), and names the defence that stops it, so that removing that
// defence fails the test. The attacks are a sign-up that tries to become an admin, a user calling
// the payment service's service-only methods, plaintext clients, a client certificate from another
// CA, a rogue payment instance registered in Consul with a valid certificate of another service,
// tokens signed by a key the user service never published, a deleted account's token and sessions
// that outlive the account, lookups that tell which accounts exist (tokens_test.go), an anonymous
// Consul client, the compose stack's volumes, users and environment, and one user's orders that
// never settle stalling everyone's (the order service's reconciler). docs/development.md
// ("Security suite") lists them with the defence each proves.
package security
