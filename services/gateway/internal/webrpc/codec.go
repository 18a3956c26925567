package webrpc

import (
	"errors"
	"fmt"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/dynamicpb"
)

// frame is one message on its way through the gateway, kept in the protobuf binary encoding the
// services speak. A binary caller's message is never decoded: the bytes go upstream as they came,
// which is what makes forwarding cheaper than decoding into a dynamic message and encoding it
// again (see BenchmarkGetUserGRPCWeb). Only JSON callers pay for a conversion.
type frame struct {
	// desc is the message's type, needed only to convert from and to JSON.
	desc protoreflect.MessageDescriptor
	raw  []byte
}

// binaryCodec is connect-go's "proto" codec for frames: the bytes pass through unchanged.
type binaryCodec struct{}

func (binaryCodec) Name() string { return "proto" }

func (binaryCodec) Marshal(v any) ([]byte, error) {
	// connect-go also encodes the gRPC-Web status details (a google.rpc.Status) with this codec.
	if m, ok := v.(proto.Message); ok {
		return proto.Marshal(m)
	}
	f, err := asFrame(v)
	if err != nil {
		return nil, err
	}
	return f.raw, nil
}

func (binaryCodec) Unmarshal(data []byte, v any) error {
	if m, ok := v.(proto.Message); ok {
		return proto.Unmarshal(data, m)
	}
	f, err := asFrame(v)
	if err != nil {
		return err
	}
	// connect-go reuses its read buffers once Unmarshal returns.
	f.raw = append([]byte(nil), data...)
	return nil
}

// jsonCodec is connect-go's JSON codec for frames, converting between protojson and the binary
// encoding through a dynamic message of the frame's type. connect-go knows JSON under two names,
// "json" and "json; charset=utf-8", so there is one codec for each.
type jsonCodec struct{ name string }

func (c jsonCodec) Name() string { return c.name }

func (jsonCodec) Marshal(v any) ([]byte, error) {
	if m, ok := v.(proto.Message); ok {
		return protojson.Marshal(m)
	}
	f, err := asFrame(v)
	if err != nil {
		return nil, err
	}
	m := dynamicpb.NewMessage(f.desc)
	if err := proto.Unmarshal(f.raw, m); err != nil {
		return nil, fmt.Errorf("decode %s: %w", f.desc.FullName(), err)
	}
	return protojson.Marshal(m)
}

func (jsonCodec) Unmarshal(data []byte, v any) error {
	if m, ok := v.(proto.Message); ok {
		return protojson.Unmarshal(data, m)
	}
	f, err := asFrame(v)
	if err != nil {
		return err
	}
	if len(data) == 0 {
		return errors.New("zero-length payload is not a valid JSON object")
	}
	m := dynamicpb.NewMessage(f.desc)
	if err := protojson.Unmarshal(data, m); err != nil {
		return err
	}
	f.raw, err = proto.Marshal(m)
	return err
}

// grpcCodec is the upstream gRPC connection's codec for frames: the bytes pass through unchanged
// in both directions.
type grpcCodec struct{}

func (grpcCodec) Name() string { return "proto" }

func (grpcCodec) Marshal(v any) (mem.BufferSlice, error) {
	f, err := asFrame(v)
	if err != nil {
		return nil, err
	}
	return mem.BufferSlice{mem.SliceBuffer(f.raw)}, nil
}

func (grpcCodec) Unmarshal(data mem.BufferSlice, v any) error {
	f, err := asFrame(v)
	if err != nil {
		return err
	}
	f.raw = data.Materialize()
	return nil
}

func asFrame(v any) (*frame, error) {
	f, ok := v.(*frame)
	if !ok {
		return nil, fmt.Errorf("webrpc: codec given a %T, not a frame", v)
	}
	return f, nil
}
