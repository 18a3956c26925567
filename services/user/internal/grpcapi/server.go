// Package grpcapi is the user service's transport: it implements user.v1.UserService by mapping
// protobuf messages to the domain and domain errors to gRPC statuses.
package grpcapi

import (
	"context"
	"errors"
	"io"
	"log/slog"

	"buf.build/go/protovalidate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/meshmart/meshmart/pkg/fault"
	"github.com/meshmart/meshmart/pkg/grpcerr"
	"github.com/meshmart/meshmart/pkg/interceptors"
	"github.com/meshmart/meshmart/pkg/paging"
	userv1 "github.com/meshmart/meshmart/proto/meshmart/user/v1"
	"github.com/meshmart/meshmart/services/user/internal/user"
)

// importBatch is how many imported accounts are written per transaction.
const importBatch = 100

// Server implements user.v1.UserService.
type Server struct {
	userv1.UnimplementedUserServiceServer
	svc       *user.Service
	errs      grpcerr.Mapper
	validator protovalidate.Validator
}

var _ userv1.UserServiceServer = (*Server)(nil)

// New returns the transport for svc.
func New(svc *user.Service, log *slog.Logger) (*Server, error) {
	v, err := protovalidate.New()
	if err != nil {
		return nil, err
	}
	return &Server{svc: svc, errs: grpcerr.NewMapper(log, "the user database"), validator: v}, nil
}

// CreateUser implements user.v1.UserService.
func (s *Server) CreateUser(ctx context.Context, req *userv1.CreateUserRequest) (*userv1.CreateUserResponse, error) {
	u, err := s.svc.Create(ctx, newUser(req))
	if err != nil {
		return nil, s.errs.Status(ctx, err)
	}
	return &userv1.CreateUserResponse{User: toProto(u)}, nil
}

func newUser(req *userv1.CreateUserRequest) user.NewUser {
	return user.NewUser{Email: req.GetEmail(), Username: req.GetUsername(), Password: req.GetPassword(),
		GivenName: req.GetGivenName(), FamilyName: req.GetFamilyName()}
}

// Login implements user.v1.UserService.
func (s *Server) Login(ctx context.Context, req *userv1.LoginRequest) (*userv1.LoginResponse, error) {
	token, exp, u, err := s.svc.Login(ctx, user.Lookup{Email: req.GetEmail(), Username: req.GetUsername()}, req.GetPassword())
	if err != nil {
		return nil, s.errs.Status(ctx, err)
	}
	refresh, refreshExp, err := s.svc.StartSession(ctx, u)
	if err != nil {
		return nil, s.errs.Status(ctx, err)
	}
	return &userv1.LoginResponse{AccessToken: token, TokenType: "Bearer", ExpireTime: timestamppb.New(exp), User: toProto(u),
		RefreshToken: refresh, RefreshExpireTime: timestamppb.New(refreshExp)}, nil
}

// RefreshToken implements user.v1.UserService.
func (s *Server) RefreshToken(ctx context.Context, req *userv1.RefreshTokenRequest) (*userv1.RefreshTokenResponse, error) {
	t, err := s.svc.Refresh(ctx, req.GetRefreshToken())
	if err != nil {
		return nil, s.errs.Status(ctx, err)
	}
	return &userv1.RefreshTokenResponse{AccessToken: t.Access, TokenType: "Bearer", ExpireTime: timestamppb.New(t.AccessExpiry),
		RefreshToken: t.Refresh, RefreshExpireTime: timestamppb.New(t.RefreshExpiry)}, nil
}

// Logout implements user.v1.UserService.
func (s *Server) Logout(ctx context.Context, req *userv1.LogoutRequest) (*userv1.LogoutResponse, error) {
	who, err := interceptors.Caller(ctx)
	if err != nil {
		return nil, err
	}
	if err := s.svc.Logout(ctx, who, req.GetRefreshToken()); err != nil {
		return nil, s.errs.Status(ctx, err)
	}
	return &userv1.LogoutResponse{}, nil
}

// ChangePassword implements user.v1.UserService.
func (s *Server) ChangePassword(ctx context.Context, req *userv1.ChangePasswordRequest) (*userv1.ChangePasswordResponse, error) {
	who, err := interceptors.Caller(ctx)
	if err != nil {
		return nil, err
	}
	u, err := s.svc.ChangePassword(ctx, who, req.GetCurrentPassword(), req.GetNewPassword())
	if err != nil {
		return nil, s.errs.Status(ctx, err)
	}
	return &userv1.ChangePasswordResponse{User: toProto(u)}, nil
}

// GetUser implements user.v1.UserService.
func (s *Server) GetUser(ctx context.Context, req *userv1.GetUserRequest) (*userv1.GetUserResponse, error) {
	who, err := interceptors.Caller(ctx)
	if err != nil {
		return nil, err
	}
	u, err := s.svc.Get(ctx, who, user.Lookup{ID: req.GetId(), Email: req.GetEmail(), Username: req.GetUsername()})
	if err != nil {
		return nil, s.errs.Status(ctx, err)
	}
	return &userv1.GetUserResponse{User: toProto(u)}, nil
}

// UpdateUser implements user.v1.UserService.
func (s *Server) UpdateUser(ctx context.Context, req *userv1.UpdateUserRequest) (*userv1.UpdateUserResponse, error) {
	who, err := interceptors.Caller(ctx)
	if err != nil {
		return nil, err
	}
	in := req.GetUser()
	patch := user.Patch{
		Paths: req.GetUpdateMask().GetPaths(), Email: in.GetEmail(), Username: in.GetUsername(),
		GivenName: in.GetGivenName(), FamilyName: in.GetFamilyName(), Status: user.Status(in.GetStatus()),
	}
	u, err := s.svc.Update(ctx, who, in.GetId(), in.GetEtag(), patch)
	if err != nil {
		return nil, s.errs.Status(ctx, err)
	}
	return &userv1.UpdateUserResponse{User: toProto(u)}, nil
}

// DeleteUser implements user.v1.UserService.
func (s *Server) DeleteUser(ctx context.Context, req *userv1.DeleteUserRequest) (*userv1.DeleteUserResponse, error) {
	who, err := interceptors.Caller(ctx)
	if err != nil {
		return nil, err
	}
	u, err := s.svc.Delete(ctx, who, req.GetId(), req.GetEtag())
	if err != nil {
		return nil, s.errs.Status(ctx, err)
	}
	return &userv1.DeleteUserResponse{User: toProto(u)}, nil
}

// ListUsers implements user.v1.UserService.
func (s *Server) ListUsers(ctx context.Context, req *userv1.ListUsersRequest) (*userv1.ListUsersResponse, error) {
	users, next, err := s.svc.List(ctx, user.Filter{Status: user.Status(req.GetStatus())}, int(req.GetPageSize()), req.GetPageToken())
	if err != nil {
		return nil, s.errs.Status(ctx, err)
	}
	return &userv1.ListUsersResponse{Users: paging.Map(users, toProto), NextPageToken: next}, nil
}

// ExportUsers implements user.v1.UserService. Send blocks while the client is not reading
// (HTTP/2 flow control), so a slow client slows the export instead of filling memory; a
// cancelled client ends it at the next send.
func (s *Server) ExportUsers(req *userv1.ExportUsersRequest, stream grpc.ServerStreamingServer[userv1.ExportUsersResponse]) error {
	ctx := stream.Context()
	err := s.svc.Export(ctx, user.Filter{Status: user.Status(req.GetStatus())}, func(u user.User) error {
		return stream.Send(&userv1.ExportUsersResponse{User: toProto(u)})
	})
	// nil, or a status from Send, which Status passes as it is (a status wrapped with context it
	// would not).
	return s.errs.Status(ctx, err)
}

// ImportUsers implements user.v1.UserService: every request is validated on its own, valid ones
// are written in batches of 100, and one summary answers the whole stream.
func (s *Server) ImportUsers(stream grpc.ClientStreamingServer[userv1.ImportUsersRequest, userv1.ImportUsersResponse]) error {
	ctx := stream.Context()
	resp := &userv1.ImportUsersResponse{}
	var (
		pending []user.NewUser
		at      []int64
	)
	flush := func() error {
		results, err := s.svc.Import(ctx, pending)
		if err != nil {
			return s.errs.Status(ctx, err)
		}
		for i, r := range results {
			resp.Results = append(resp.Results, s.importResult(ctx, at[i], r.User, r.Err))
		}
		pending, at = pending[:0], at[:0]
		return nil
	}
	for index := int64(0); ; index++ {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		if req.GetUser() == nil {
			resp.Results = append(resp.Results, invalidItem(index, nil))
			continue
		}
		if err := s.validator.Validate(req.GetUser()); err != nil {
			resp.Results = append(resp.Results, invalidItem(index, err))
			continue
		}
		pending, at = append(pending, newUser(req.GetUser())), append(at, index)
		if len(pending) == importBatch {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	if err := flush(); err != nil {
		return err
	}
	// Results arrive in order within a batch but invalid items skip ahead; sort by index.
	sortResults(resp.Results)
	for _, r := range resp.GetResults() {
		if r.GetUser() != nil {
			resp.CreatedCount++
		} else {
			resp.FailedCount++
		}
	}
	return stream.SendAndClose(resp)
}

func (s *Server) importResult(ctx context.Context, index int64, u user.User, err error) *userv1.ImportUserResult {
	if err == nil {
		return &userv1.ImportUserResult{Index: index, Outcome: &userv1.ImportUserResult_User{User: toProto(u)}}
	}
	st := status.Convert(s.errs.Status(ctx, err))
	ie := &userv1.ImportUserError{Code: int32(st.Code()), Message: st.Message()}
	switch {
	case errors.Is(err, user.ErrEmailTaken):
		ie.Field = "email"
	case errors.Is(err, user.ErrUsernameTaken):
		ie.Field = "username"
	case errors.Is(err, user.ErrIDTaken):
		ie.Field = "id"
	default:
		if f, ok := fault.As(err); ok {
			ie.Field = f.Field
		}
	}
	return &userv1.ImportUserResult{Index: index, Outcome: &userv1.ImportUserResult_Error{Error: ie}}
}

func invalidItem(index int64, err error) *userv1.ImportUserResult {
	ie := &userv1.ImportUserError{Code: int32(codes.InvalidArgument), Message: "the request holds no user", Field: "user"}
	var verr *protovalidate.ValidationError
	if errors.As(err, &verr) && len(verr.Violations) > 0 {
		v := verr.Violations[0].Proto
		ie.Field = protovalidate.FieldPathString(v.GetField())
		ie.Message = err.Error()
	}
	return &userv1.ImportUserResult{Index: index, Outcome: &userv1.ImportUserResult_Error{Error: ie}}
}
