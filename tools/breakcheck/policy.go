package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"
)

// policyExtension is the method option that declares who may call a method. buf breaking does not
// compare custom options, so a changed policy, which opens or closes a method to callers, would
// pass it silently; breakcheck compares the policies itself.
const policyExtension = "meshmart.authz.v1.policy"

// policyAck is the commit message trailer that acknowledges a change of who may call a method:
// "Authz-Policy-Change: why". Without it, a commit that changes a method's policy fails the gate.
const policyAck = "Authz-Policy-Change:"

// comparePolicies reports every method present on both sides whose policy changed (declared,
// dropped or altered). A change acknowledged by the commit message passes; any other fails. A
// method whose new policy is the one it has in one of mergedDirs (the other parents of a merge)
// came with the merge and is not the merge's own change.
func (c *checker) comparePolicies(ctx context.Context, what, newDir, oldDir string, acknowledged bool, mergedDirs ...string) error {
	newPolicies, err := c.policies(ctx, newDir)
	if err != nil {
		return err
	}
	oldPolicies, err := c.policies(ctx, oldDir)
	if err != nil {
		return err
	}
	var merged []map[string]string
	for _, dir := range mergedDirs {
		p, err := c.policies(ctx, dir)
		if err != nil {
			return err
		}
		merged = append(merged, p)
	}
	var changes []string
	for method, was := range oldPolicies {
		is, ok := newPolicies[method]
		if !ok || is == was || slices.ContainsFunc(merged, func(p map[string]string) bool { q, ok := p[method]; return ok && q == is }) {
			continue
		}
		changes = append(changes, fmt.Sprintf("%s: {%s} -> {%s}", method, was, is))
	}
	if len(changes) == 0 {
		return nil
	}
	sort.Strings(changes)
	if acknowledged {
		fmt.Fprintf(c.out, "ok    %s changes who may call %d method(s), acknowledged by %s\n", what, len(changes), policyAck)
		return nil
	}
	c.policyChanged++
	fmt.Fprintf(c.out, "AUTHZ %s changes who may call these methods; if that is meant, say why in a %q line of the commit message\n", what, policyAck)
	for _, line := range changes {
		fmt.Fprintf(c.out, "      %s\n", line)
	}
	return nil
}

// policies builds the buf workspace in dir and returns each method's declared policy in text form
// ("" when it declares none), by full method name ("meshmart.user.v1.UserService.GetUser").
func (c *checker) policies(ctx context.Context, dir string) (map[string]string, error) {
	if p, ok := c.built[dir]; ok {
		return p, nil
	}
	p, err := c.buildPolicies(ctx, dir)
	if err != nil {
		return nil, err
	}
	if c.built == nil {
		c.built = map[string]map[string]string{}
	}
	c.built[dir] = p
	return p, nil
}

// buildPolicies is policies without the memo.
func (c *checker) buildPolicies(ctx context.Context, dir string) (map[string]string, error) {
	out, err := os.CreateTemp(c.tmp, "image-*.binpb")
	if err != nil {
		return nil, err
	}
	out.Close()
	if _, err := run(ctx, dir, c.buf, "build", "-o", out.Name()); err != nil {
		return nil, fmt.Errorf("buf build %s: %w", dir, err)
	}
	data, err := os.ReadFile(out.Name())
	if err != nil {
		return nil, err
	}
	// A buf image is a FileDescriptorSet with more fields; imports are included.
	var set descriptorpb.FileDescriptorSet
	if err := (proto.UnmarshalOptions{DiscardUnknown: false}).Unmarshal(data, &set); err != nil {
		return nil, fmt.Errorf("read the image of %s: %w", filepath.Base(dir), err)
	}
	files, err := protodesc.NewFiles(&set)
	if err != nil {
		return nil, fmt.Errorf("the image of %s: %w", filepath.Base(dir), err)
	}
	var ext protoreflect.ExtensionDescriptor
	if d, err := files.FindDescriptorByName(policyExtension); err == nil {
		ext, _ = d.(protoreflect.ExtensionDescriptor)
	}
	policies := map[string]string{}
	var walkErr error
	files.RangeFiles(func(f protoreflect.FileDescriptor) bool {
		for i := range f.Services().Len() {
			methods := f.Services().Get(i).Methods()
			for j := range methods.Len() {
				m := methods.Get(j)
				p, err := policyOf(m, ext)
				if err != nil {
					walkErr = fmt.Errorf("%s: %w", m.FullName(), err)
					return false
				}
				policies[string(m.FullName())] = p
			}
		}
		return true
	})
	return policies, walkErr
}

// policyOf returns m's policy in a canonical text form, "" when it declares none (or ext is nil:
// the contracts declare no policies yet). The option is read from the raw bytes of the method's
// options, so that this program needs no generated code of the extension.
func policyOf(m protoreflect.MethodDescriptor, ext protoreflect.ExtensionDescriptor) (string, error) {
	if ext == nil {
		return "", nil
	}
	raw, err := proto.MarshalOptions{Deterministic: true}.Marshal(m.Options())
	if err != nil {
		return "", err
	}
	policy := dynamicpb.NewMessage(ext.Message())
	found := false
	for len(raw) > 0 {
		num, typ, n := protowire.ConsumeTag(raw)
		if n < 0 {
			return "", protowire.ParseError(n)
		}
		raw = raw[n:]
		size := protowire.ConsumeFieldValue(num, typ, raw)
		if size < 0 {
			return "", protowire.ParseError(size)
		}
		if num == ext.Number() && typ == protowire.BytesType {
			v, _ := protowire.ConsumeBytes(raw[:size])
			if err := (proto.UnmarshalOptions{Merge: true}).Unmarshal(v, policy); err != nil {
				return "", err
			}
			found = true
		}
		raw = raw[size:]
	}
	if !found {
		return "", nil
	}
	text, err := prototext.MarshalOptions{}.Marshal(policy)
	if err != nil {
		return "", err
	}
	// prototext adds random whitespace to discourage comparing its output: normalise it.
	return strings.Join(strings.Fields(string(text)), " "), nil
}
