// Command breakcheck runs `buf breaking` over a repository's history, so that no commit on the
// branch ever breaks the wire or JSON contract of a stable protobuf package.
//
// It checks every commit that changed the contract inputs (proto/ and buf.yaml) against its first
// parent, and the working tree against HEAD when they differ. Checking each commit rather than
// only HEAD against the previous landing is what catches a break hidden in an earlier commit of a
// multi-commit submission, and it needs no record of what landed before: every commit that ever
// landed passed the same check. A rule set that `buf breaking --against` alone cannot express,
// which is why this small program exists.
//
// buf breaking does not compare custom options, so it would pass a changed
// (meshmart.authz.v1.policy), which opens or closes a method to callers. breakcheck therefore also
// compares every method's policy on both sides of each change, and fails a change of who may call
// a method unless the commit message acknowledges it with an "Authz-Policy-Change: why" line (the
// working tree, having no message yet, cannot acknowledge one: commit it).
//
// Each side is materialised with `git archive` into a scratch directory together with the
// untracked third-party protos (third_party/, which `make third_party` fills), because buf's own
// git inputs would lack them. Every side gets the working tree's buf.yaml too: buf breaking
// compares workspaces module by module and refuses two with a different number of modules, which
// every commit before a third-party module was added (googleapis, for the REST gateway) would
// have. The modules hold the same protos on both sides, so only the list needs to agree; the
// rules applied are today's.
//
// Usage:
//
//	breakcheck [-buf buf] [-repo .]
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// inputs are the repository paths that make up the buf workspace under contract.
var inputs = []string{"buf.yaml", "proto"}

// thirdParty is the untracked directory of imported protos copied into every materialised side.
const thirdParty = "third_party"

func main() {
	bufPath := flag.String("buf", "buf", "the buf executable")
	repo := flag.String("repo", ".", "a directory inside the git repository to check")
	flag.Parse()
	if err := check(context.Background(), *repo, *bufPath, os.Stdout); err != nil {
		log.SetFlags(0)
		log.Fatalf("breakcheck: %v", err)
	}
}

// errBreaking reports that at least one change broke a stable contract.
var errBreaking = errors.New("breaking changes to stable protobuf packages (see above)")

// errPolicyChanged reports that at least one change altered who may call a method without saying
// so in its commit message.
var errPolicyChanged = errors.New("unacknowledged changes of who may call a method (see above)")

// check runs the breaking-change checks for the repository containing dir, writing one line per
// checked change to out. It returns errBreaking when any change breaks a stable package.
func check(ctx context.Context, dir, bufPath string, out io.Writer) error {
	root, err := git(ctx, dir, "rev-parse", "--show-toplevel")
	if err != nil {
		return err
	}
	if shallow, _ := git(ctx, root, "rev-parse", "--is-shallow-repository"); shallow == "true" {
		return errors.New("the clone is shallow, so earlier commits cannot be checked: run `git fetch --unshallow`")
	}
	tmp, err := os.MkdirTemp("", "breakcheck-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)

	c := checker{root: root, buf: bufPath, tmp: tmp, out: out}
	if _, err := git(ctx, root, "rev-parse", "--verify", "--quiet", "HEAD"); err != nil {
		fmt.Fprintln(out, "no commits yet: nothing to check against")
		return nil
	}
	revs, err := git(ctx, root, "rev-list", "--reverse", "HEAD")
	if err != nil {
		return err
	}
	for _, rev := range strings.Fields(revs) {
		if err := c.checkCommit(ctx, rev); err != nil {
			return err
		}
	}
	if err := c.checkWorkTree(ctx); err != nil {
		return err
	}
	fmt.Fprintf(out, "%d change(s) checked, %d breaking, %d changing who may call a method unacknowledged\n", c.checked, c.broken, c.policyChanged)
	var failed error
	if c.broken > 0 {
		failed = errBreaking
	}
	if c.policyChanged > 0 {
		failed = errors.Join(failed, errPolicyChanged)
	}
	return failed
}

type checker struct {
	root, buf, tmp                 string
	out                            io.Writer
	checked, broken, policyChanged int
	// built holds the policies of each directory already built: in a linear history every
	// commit's tree is the new side of one comparison and the old side of the next.
	built map[string]map[string]string
}

// checkCommit compares rev with its first parent when rev changed the contract inputs.
func (c *checker) checkCommit(ctx context.Context, rev string) error {
	parent, err := git(ctx, c.root, "rev-parse", "--verify", "--quiet", rev+"^1")
	if err != nil {
		return nil // a root commit has nothing to break
	}
	if !c.hasContract(ctx, parent) {
		return nil // the contracts start at rev
	}
	args := append([]string{"diff", "--quiet", parent, rev, "--"}, inputs...)
	if _, err := git(ctx, c.root, args...); err == nil {
		return nil // rev did not touch the contracts
	}
	subject, _ := git(ctx, c.root, "log", "-1", "--format=%h %s", rev)
	newDir, err := c.materialise(ctx, rev)
	if err != nil {
		return err
	}
	oldDir, err := c.materialise(ctx, parent)
	if err != nil {
		return err
	}
	if err := c.compare(ctx, "commit "+subject, newDir, oldDir); err != nil {
		return err
	}
	message, err := git(ctx, c.root, "log", "-1", "--format=%B", rev)
	if err != nil {
		return err
	}
	// A merge brings in policy changes that the merged branch's own commits made, and that were
	// checked (and acknowledged) there: only a policy the merge itself gives a method, one that
	// neither parent has, is the merge's own change.
	var merged []string
	if second, err := git(ctx, c.root, "rev-parse", "--verify", "--quiet", rev+"^2"); err == nil && c.hasContract(ctx, second) {
		dir, err := c.materialise(ctx, second)
		if err != nil {
			return err
		}
		merged = append(merged, dir)
	}
	return c.comparePolicies(ctx, "commit "+subject, newDir, oldDir, acknowledges(message), merged...)
}

// acknowledges reports whether a commit message has a policyAck line.
func acknowledges(message string) bool {
	for line := range strings.Lines(message) {
		if strings.HasPrefix(strings.TrimSpace(line), policyAck) {
			return true
		}
	}
	return false
}

// checkWorkTree compares the working tree, uncommitted and untracked files included, with HEAD.
func (c *checker) checkWorkTree(ctx context.Context) error {
	if !c.hasContract(ctx, "HEAD") {
		return nil
	}
	args := append([]string{"status", "--porcelain", "--"}, inputs...)
	changes, err := git(ctx, c.root, args...)
	if err != nil || changes == "" {
		return err
	}
	oldDir, err := c.materialise(ctx, "HEAD")
	if err != nil {
		return err
	}
	if err := c.compare(ctx, "working tree", c.root, oldDir); err != nil {
		return err
	}
	return c.comparePolicies(ctx, "working tree", c.root, oldDir, false)
}

func (c *checker) hasContract(ctx context.Context, rev string) bool {
	_, err := git(ctx, c.root, "cat-file", "-e", rev+":buf.yaml")
	return err == nil
}

// materialise writes the contract inputs of rev, plus the third-party protos, to a new directory.
func (c *checker) materialise(ctx context.Context, rev string) (string, error) {
	dir := filepath.Join(c.tmp, rev)
	if _, err := os.Stat(dir); err == nil {
		return dir, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	archive := exec.CommandContext(ctx, "git", append([]string{"archive", "--format=tar", rev, "--"}, inputs...)...)
	archive.Dir = c.root
	tar := exec.CommandContext(ctx, "tar", "-x", "-C", dir)
	var err error
	if tar.Stdin, err = archive.StdoutPipe(); err != nil {
		return "", err
	}
	var archiveErr, tarErr bytes.Buffer
	archive.Stderr, tar.Stderr = &archiveErr, &tarErr
	if err := tar.Start(); err != nil {
		return "", err
	}
	archived, extracted := archive.Run(), tar.Wait()
	if archived != nil {
		return "", fmt.Errorf("git archive %s: %w: %s", rev, archived, archiveErr.String())
	}
	if extracted != nil {
		return "", fmt.Errorf("extract %s: %w: %s", rev, extracted, tarErr.String())
	}
	src := filepath.Join(c.root, thirdParty)
	if _, err := os.Stat(src); err != nil {
		return "", fmt.Errorf("%s is missing: run `make third_party`", src)
	}
	if err := os.CopyFS(filepath.Join(dir, thirdParty), os.DirFS(src)); err != nil {
		return "", err
	}
	config, err := os.ReadFile(filepath.Join(c.root, "buf.yaml"))
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(dir, "buf.yaml"), config, 0o644); err != nil {
		return "", err
	}
	return dir, nil
}

// compare runs buf breaking for one change and reports the result.
func (c *checker) compare(ctx context.Context, what, newDir, oldDir string) error {
	c.checked++
	cmd := exec.CommandContext(ctx, c.buf, "breaking", newDir, "--against", oldDir)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
		fmt.Fprintf(c.out, "ok    %s\n", what)
		return nil
	case errors.As(err, &exit) && exit.ExitCode() == 100: // buf's exit code for findings
		c.broken++
		fmt.Fprintf(c.out, "BREAK %s\n", what)
		for line := range strings.Lines(stdout.String()) {
			// Show paths relative to the repository, not to the scratch directory.
			line = strings.TrimPrefix(strings.TrimPrefix(line, newDir+string(filepath.Separator)), c.tmp)
			fmt.Fprintf(c.out, "      %s", line)
		}
		return nil
	default:
		return fmt.Errorf("buf breaking (%s): %w: %s%s", what, err, stdout.String(), stderr.String())
	}
}

// git runs a git command in dir and returns its trimmed standard output.
func git(ctx context.Context, dir string, args ...string) (string, error) {
	return run(ctx, dir, "git", args...)
}

// run runs a command in dir and returns its trimmed standard output.
func run(ctx context.Context, dir, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("%s %s: %w: %s", filepath.Base(name), strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(string(out)), nil
}
