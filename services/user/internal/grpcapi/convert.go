package grpcapi

import (
	"slices"

	"google.golang.org/protobuf/types/known/timestamppb"

	userv1 "github.com/meshmart/meshmart/proto/meshmart/user/v1"
	"github.com/meshmart/meshmart/services/user/internal/user"
)

func toProto(u user.User) *userv1.User {
	p := &userv1.User{
		Id: u.ID, Email: u.Email, Username: u.Username, GivenName: u.GivenName, FamilyName: u.FamilyName,
		Status: userv1.UserStatus(u.Status), CreateTime: timestamppb.New(u.CreateTime),
		UpdateTime: timestamppb.New(u.UpdateTime), Etag: u.Etag(),
	}
	if !u.DeleteTime.IsZero() {
		p.DeleteTime = timestamppb.New(u.DeleteTime)
	}
	for _, r := range u.Roles {
		p.Roles = append(p.Roles, roleValue(r))
	}
	return p
}

func roleValue(name string) userv1.Role {
	switch name {
	case user.RoleAdmin:
		return userv1.Role_ROLE_ADMIN
	case user.RoleUser:
		return userv1.Role_ROLE_USER
	}
	return userv1.Role_ROLE_UNSPECIFIED
}

func sortResults(rs []*userv1.ImportUserResult) {
	slices.SortStableFunc(rs, func(a, b *userv1.ImportUserResult) int { return int(a.GetIndex() - b.GetIndex()) })
}
