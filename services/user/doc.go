// Package user is the root of the user service module, which implements
// meshmart.user.v1.UserService: accounts, sign-up, login and access tokens. Its entry point is
// cmd/user; the domain, transport and storage layers live under internal/.
package user
