package main

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestCheck proves the CI gate in a scratch repository made from this repository's contracts: it
// passes compatible changes and unstable-package breaks, and fails a stable break whether it is
// the last commit, hidden under a later commit, or not committed yet; it fails a change of a
// method's authz policy, which buf breaking alone passes, unless the commit message acknowledges
// it.
func TestCheck(t *testing.T) {
	ctx := context.Background()
	bufPath := buildBuf(t)
	repo := scratchRepo(t)
	userProto := filepath.Join(repo, "proto/meshmart/user/v1/user.proto")

	run := func(t *testing.T) (string, error) {
		t.Helper()
		var out bytes.Buffer
		err := check(ctx, repo, bufPath, &out)
		t.Logf("breakcheck output:\n%s", out.String())
		return out.String(), err
	}
	commit := func(t *testing.T, msg string) {
		t.Helper()
		mustGit(t, repo, "add", "-A")
		mustGit(t, repo, "commit", "-q", "-m", msg)
	}

	t.Run("initial contracts pass", func(t *testing.T) {
		if _, err := run(t); err != nil {
			t.Fatalf("check: %v", err)
		}
	})

	t.Run("adding a field passes", func(t *testing.T) {
		edit(t, userProto, "  string etag = 11", "  string nickname = 12;\n  string etag = 11")
		commit(t, "add nickname")
		out, err := run(t)
		if err != nil {
			t.Fatalf("check: %v", err)
		}
		if !strings.Contains(out, "ok    commit") {
			t.Errorf("the new commit was not checked")
		}
	})
	compatible := strings.TrimSpace(mustGit(t, repo, "rev-parse", "HEAD"))

	t.Run("a break hidden under a later commit fails", func(t *testing.T) {
		edit(t, userProto, "  string nickname = 12;\n", "")
		commit(t, "drop nickname")
		edit(t, userProto, "// User is an account.", "// User is an account of a person.")
		commit(t, "reword a comment")
		out, err := run(t)
		if !errors.Is(err, errBreaking) {
			t.Fatalf("check = %v, want errBreaking", err)
		}
		if !strings.Contains(out, "BREAK commit") || !strings.Contains(out, "drop nickname") {
			t.Errorf("output does not name the breaking commit")
		}
		if !strings.Contains(out, `"12" with name "nickname"`) {
			t.Errorf("output does not name the deleted field")
		}
		if strings.Contains(out, "BREAK commit "+shortRev(t, repo, "HEAD")) {
			t.Errorf("the harmless last commit was reported as breaking")
		}
	})
	mustGit(t, repo, "reset", "-q", "--hard", compatible)

	t.Run("an uncommitted break fails", func(t *testing.T) {
		edit(t, userProto, "  string nickname = 12;", "  int64 nickname = 12;")
		out, err := run(t)
		if !errors.Is(err, errBreaking) || !strings.Contains(out, "BREAK working tree") {
			t.Fatalf("check = %v, want a break in the working tree", err)
		}
		mustGit(t, repo, "checkout", "--", ".")
	})

	t.Run("unstable packages may break", func(t *testing.T) {
		lab := filepath.Join(repo, "proto/meshmart/lab/v1alpha1/lab.proto")
		if err := os.MkdirAll(filepath.Dir(lab), 0o755); err != nil {
			t.Fatal(err)
		}
		write(t, lab, "syntax = \"proto3\";\n\npackage meshmart.lab.v1alpha1;\n\n// Probe is an experiment.\nmessage Probe {\n  // Name names it.\n  string name = 1;\n}\n")
		commit(t, "add an alpha package")
		edit(t, lab, "string name = 1;", "int64 name = 1;")
		commit(t, "change the alpha package incompatibly")
		if _, err := run(t); err != nil {
			t.Fatalf("check: %v", err)
		}
	})
	passing := strings.TrimSpace(mustGit(t, repo, "rev-parse", "HEAD"))

	// buf breaking passes a changed custom option; breakcheck compares the authz policies itself.
	const listUsers = "rpc ListUsers(ListUsersRequest) returns (ListUsersResponse) {\n    option (meshmart.authz.v1.policy) = {admins: true};"
	const listUsersOpen = "rpc ListUsers(ListUsersRequest) returns (ListUsersResponse) {\n    option (meshmart.authz.v1.policy) = {users: true};"

	t.Run("a changed policy fails", func(t *testing.T) {
		edit(t, userProto, listUsers, listUsersOpen)
		commit(t, "let every user list users")
		edit(t, userProto, "// User is an account.", "// User is an account of a person.")
		commit(t, "reword a comment")
		out, err := run(t)
		if !errors.Is(err, errPolicyChanged) || errors.Is(err, errBreaking) {
			t.Fatalf("check = %v, want errPolicyChanged alone", err)
		}
		if !strings.Contains(out, "AUTHZ commit") || !strings.Contains(out, "let every user list users") ||
			!strings.Contains(out, `meshmart.user.v1.UserService.ListUsers: {admins:true} -> {users:true}`) {
			t.Errorf("output does not name the commit and the method whose policy changed")
		}
	})
	mustGit(t, repo, "reset", "-q", "--hard", passing)

	t.Run("an acknowledged policy change passes", func(t *testing.T) {
		edit(t, userProto, listUsers, listUsersOpen)
		commit(t, "let every user list users\n\nAuthz-Policy-Change: the directory is public to members now")
		out, err := run(t)
		if err != nil {
			t.Fatalf("check: %v", err)
		}
		if !strings.Contains(out, "acknowledged") {
			t.Errorf("the acknowledged change was not reported")
		}
	})
	mustGit(t, repo, "reset", "-q", "--hard", passing)

	t.Run("a merge of an acknowledged policy change passes", func(t *testing.T) {
		mustGit(t, repo, "checkout", "-q", "-b", "open-users")
		edit(t, userProto, listUsers, listUsersOpen)
		commit(t, "let every user list users\n\nAuthz-Policy-Change: the directory is public to members now")
		mustGit(t, repo, "checkout", "-q", "main")
		edit(t, userProto, "// User is an account.", "// User is an account of a person.")
		commit(t, "reword a comment")
		mustGit(t, repo, "merge", "-q", "--no-ff", "-m", "Merge branch 'open-users'", "open-users")
		if out, err := run(t); err != nil || strings.Contains(out, "AUTHZ") {
			t.Fatalf("check = %v: the merge was blamed for a change its branch acknowledged", err)
		}
		// A merge that gives a method a policy neither parent has is its own change.
		edit(t, userProto, listUsersOpen, "rpc ListUsers(ListUsersRequest) returns (ListUsersResponse) {\n    option (meshmart.authz.v1.policy) = {public: true};")
		mustGit(t, repo, "add", "-A")
		mustGit(t, repo, "commit", "-q", "--amend", "-m", "Merge branch 'open-users'")
		if out, err := run(t); !errors.Is(err, errPolicyChanged) || !strings.Contains(out, "AUTHZ commit") {
			t.Fatalf("check = %v: a policy made by the merge itself passed", err)
		}
	})
	mustGit(t, repo, "checkout", "-q", "main")
	mustGit(t, repo, "reset", "-q", "--hard", passing)

	t.Run("an uncommitted policy change fails", func(t *testing.T) {
		edit(t, userProto, "option (meshmart.authz.v1.policy) = {public: true};", "option (meshmart.authz.v1.policy) = {users: true};")
		out, err := run(t)
		if !errors.Is(err, errPolicyChanged) || !strings.Contains(out, "AUTHZ working tree") {
			t.Fatalf("check = %v, want a policy change in the working tree", err)
		}
		mustGit(t, repo, "checkout", "--", ".")
	})
}

// buildBuf returns the buf pinned in tools/go.mod, built into Go's cache, so the test needs nothing
// on PATH.
func buildBuf(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "tool", "-n", "buf").Output()
	if err != nil {
		t.Fatalf("build buf: %v", err)
	}
	return strings.TrimSpace(string(out))
}

// scratchRepo makes a git repository holding a copy of this repository's buf workspace.
func scratchRepo(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, thirdParty)); err != nil {
		t.Fatalf("%s is missing: run `make third_party` first", filepath.Join(root, thirdParty))
	}
	repo := t.TempDir()
	copyTree(t, filepath.Join(root, "proto"), filepath.Join(repo, "proto"), ".proto")
	copyTree(t, filepath.Join(root, thirdParty), filepath.Join(repo, thirdParty), ".proto")
	data, err := os.ReadFile(filepath.Join(root, "buf.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(repo, "buf.yaml"), string(data))
	write(t, filepath.Join(repo, ".gitignore"), "/"+thirdParty+"/\n")
	mustGit(t, repo, "init", "-q", "-b", "main")
	mustGit(t, repo, "add", "-A")
	mustGit(t, repo, "commit", "-q", "-m", "contracts")
	return repo
}

func copyTree(t *testing.T, src, dst, suffix string) {
	t.Helper()
	err := filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, suffix) {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, strings.TrimPrefix(path, src))
		if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
			return err
		}
		return os.WriteFile(target, data, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
}

func edit(t *testing.T, path, old, new string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(data, []byte(old)) {
		t.Fatalf("%s does not contain %q", path, old)
	}
	write(t, path, strings.Replace(string(data), old, new, 1))
}

func write(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

func shortRev(t *testing.T, repo, rev string) string {
	t.Helper()
	return strings.TrimSpace(mustGit(t, repo, "rev-parse", "--short", rev))
}

func mustGit(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(),
		"GIT_AUTHOR_NAME=test", "GIT_AUTHOR_EMAIL=test@example.com",
		"GIT_COMMITTER_NAME=test", "GIT_COMMITTER_EMAIL=test@example.com",
		"GIT_CONFIG_GLOBAL=/dev/null", "GIT_CONFIG_NOSYSTEM=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}
