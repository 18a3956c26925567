package rest

import (
	"bytes"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/protobuf/encoding/protojson"
)

// EventStreamType is the media type of Server-Sent Events: a request whose Accept header is
// exactly this gets each message of a server stream as one event.
const EventStreamType = "text/event-stream"

// eventStream is the marshaler for EventStreamType: the JSON grpc-gateway writes for each
// message ({"result":{...}}, or {"error":{...}} when the stream fails), as the data of one event
// (`data: <json>\n\n`), which grpc-gateway flushes at once. Requests are decoded as JSON.
type eventStream struct {
	*runtime.JSONPb
}

var (
	_ runtime.Marshaler = eventStream{}
	_ runtime.Delimited = eventStream{}
)

// newEventStream has grpc-gateway's default JSON options, so that an event's data is exactly
// a newline-delimited stream's line.
func newEventStream() eventStream {
	return eventStream{&runtime.JSONPb{
		MarshalOptions:   protojson.MarshalOptions{EmitUnpopulated: true},
		UnmarshalOptions: protojson.UnmarshalOptions{DiscardUnknown: true},
	}}
}

// ContentType implements runtime.Marshaler.
func (eventStream) ContentType(any) string { return EventStreamType }

var (
	dataField = []byte("data: ")
	newline   = []byte("\n")
	dataLine  = []byte("\ndata: ")
)

// Marshal writes v as one complete event. JSON holds no newline unless indented, but each line
// gets its own data field anyway, so that an event can never be cut short.
func (m eventStream) Marshal(v any) ([]byte, error) {
	b, err := m.JSONPb.Marshal(v)
	if err != nil {
		return nil, err
	}
	b = bytes.ReplaceAll(b, newline, dataLine)
	out := make([]byte, 0, len(dataField)+len(b)+2)
	out = append(out, dataField...)
	out = append(out, b...)
	return append(out, "\n\n"...), nil
}

// Delimiter implements runtime.Delimited: Marshal already ends each event, so that a unary
// answer to an event-stream request is a complete event too.
func (eventStream) Delimiter() []byte { return nil }
