// Package grpcapi is the user service's transport: it implements user.v1.UserService by mapping
// protobuf messages to the domain and domain errors to gRPC statuses.
package grpcapi

import (
	"context"
	"errors"
	"fmt"
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
	"github.com/meshmart/meshmart/pkg/server"
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
	// importMaxItems is the most items one ImportUsers stream may carry.
	importMaxItems int
}

var _ userv1.UserServiceServer = (*Server)(nil)

// DefaultImportMaxItems is the most items one ImportUsers stream may carry unless
// WithImportMaxItems says otherwise.
const DefaultImportMaxItems = 50000

// Option configures New.
type Option func(*Server)

// WithImportMaxItems sets the most items one ImportUsers stream may carry (the stream's valid
// items are held in memory until it ends); n <= 0 keeps DefaultImportMaxItems.
func WithImportMaxItems(n int) Option {
	return func(s *Server) {
		if n > 0 {
			s.importMaxItems = n
		}
	}
}

// New returns the transport for svc.
func New(svc *user.Service, log *slog.Logger, opts ...Option) (*Server, error) {
	v, err := protovalidate.New()
	if err != nil {
		return nil, err
	}
	s := &Server{svc: svc, errs: grpcerr.NewMapper(log, "the user database"), validator: v, importMaxItems: DefaultImportMaxItems}
	for _, opt := range opts {
		opt(s)
	}
	return s, nil
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

// ImportUsers implements user.v1.UserService: every request is validated on its own as it
// arrives, the valid ones are kept until the client closes the stream and then written in batches
// of importBatch, and one summary answers the whole stream: counts and the first importErrors
// failures, so that its size does not grow with the stream (every item's result in one answer
// outgrew the message limit after the accounts were written). A stream of more than the item limit
// fails before anything is written; after the first write the call answers OK whatever happens,
// the items not written counted as failed, so the caller never reads "failed" for an import that
// was partly done.
func (s *Server) ImportUsers(stream grpc.ClientStreamingServer[userv1.ImportUsersRequest, userv1.ImportUsersResponse]) error {
	ctx := stream.Context()
	var (
		pending []user.NewUser
		at      []int64
		failed  importFailures
	)
	for index := int64(0); ; index++ {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		if index >= int64(s.importMaxItems) {
			return server.Exhausted("import_items_per_stream", s.importMaxItems, fmt.Sprintf(
				"too many items: at most %d on one ImportUsers stream; nothing was imported, split the import", s.importMaxItems), 0)
		}
		if req.GetUser() == nil {
			failed.add(invalidItem(index, nil))
			continue
		}
		if err := s.validator.Validate(req.GetUser()); err != nil {
			failed.add(invalidItem(index, err))
			continue
		}
		pending, at = append(pending, newUser(req.GetUser())), append(at, index)
	}
	resp := &userv1.ImportUsersResponse{}
	for start := 0; start < len(pending); start += importBatch {
		end := min(start+importBatch, len(pending))
		results, err := s.svc.Import(ctx, pending[start:end])
		if err != nil {
			if resp.CreatedCount == 0 {
				return s.errs.Status(ctx, err) // nothing written yet: the error is the whole answer
			}
			// One status (and one log line) for every item left unwritten.
			first := s.importResult(ctx, at[start], user.User{}, err)
			failed.add(first)
			for i := start + 1; i < len(pending); i++ {
				failed.add(&userv1.ImportUserResult{Index: at[i], Outcome: first.GetOutcome()})
			}
			break
		}
		for i, r := range results {
			if r.Err != nil {
				failed.add(s.importResult(ctx, at[start+i], r.User, r.Err))
			} else {
				resp.CreatedCount++
			}
		}
	}
	resp.FailedCount, resp.Errors = failed.count, failed.first()
	return stream.SendAndClose(resp)
}

// importErrors is how many failures an ImportUsers answer lists at most.
const importErrors = 100

// importFailures counts the failed items of an import and keeps the importErrors with the lowest
// indexes.
type importFailures struct {
	count int64
	kept  []*userv1.ImportUserResult
}

func (f *importFailures) add(r *userv1.ImportUserResult) {
	f.count++
	f.kept = append(f.kept, r)
	// Invalid items arrive in order but write failures come later with lower indexes: keep the
	// lowest, trimming only now and then so that adding stays cheap.
	if len(f.kept) >= 2*importErrors {
		f.kept = f.first()
	}
}

func (f *importFailures) first() []*userv1.ImportUserResult {
	sortResults(f.kept)
	return f.kept[:min(len(f.kept), importErrors)]
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
