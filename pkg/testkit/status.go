package testkit

import (
	"encoding/base64"
	"strings"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// InvalidFields returns the request fields named by the BadRequest details of err when it is an
// InvalidArgument status, in order; none for any other error.
func InvalidFields(err error) []string {
	st := status.Convert(err)
	if st.Code() != codes.InvalidArgument {
		return nil
	}
	var fields []string
	for _, d := range st.Details() {
		if br, ok := d.(*errdetails.BadRequest); ok {
			for _, v := range br.GetFieldViolations() {
				fields = append(fields, v.GetField())
			}
		}
	}
	return fields
}

// PreconditionViolations returns the violations in the PreconditionFailure details of err when it
// is a FailedPrecondition status, each as "TYPE SUBJECT: description", in order; none for any
// other error.
func PreconditionViolations(err error) []string {
	st := status.Convert(err)
	if st.Code() != codes.FailedPrecondition {
		return nil
	}
	var out []string
	for _, d := range st.Details() {
		if pf, ok := d.(*errdetails.PreconditionFailure); ok {
			for _, v := range pf.GetViolations() {
				out = append(out, v.GetType()+" "+v.GetSubject()+": "+v.GetDescription())
			}
		}
	}
	return out
}

// TamperedTokens returns page tokens made from a valid one (see pkg/paging) by editing it, each
// of which a List method must refuse: an edited position with the original signature, the
// original position with an edited signature, and one that is no token at all.
func TamperedTokens(token string) []string {
	payload, sig, _ := strings.Cut(token, ".")
	raw, _ := base64.RawURLEncoding.DecodeString(payload)
	edited := base64.RawURLEncoding.EncodeToString([]byte(strings.Replace(string(raw), `"i":"`, `"i":"0`, 1)))
	forged := "A"
	if strings.HasPrefix(sig, "A") {
		forged = "B"
	}
	return []string{edited + "." + sig, payload + "." + forged + sig[min(1, len(sig)):], "garbage"}
}
