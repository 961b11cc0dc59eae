package kit

import (
	"os"
	"os/exec"
	"testing"
)

// Tmpfs mounts a tmpfs of the given size (mount's syntax: "64m") on a new
// temporary directory and returns it; the test's cleanup unmounts it
// lazily, so a file a stopped process left open does not hold it. A full
// device is what the tests that use it provoke. Mounting needs root: where
// it fails the test is skipped, except on CI (CI=true), where it fails,
// so that a green CI run has run it.
func Tmpfs(t testing.TB, size string) string {
	t.Helper()
	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", mnt).CombinedOutput(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("cannot mount a tmpfs (needs root, which CI has): %v %s", err, out)
		}
		t.Skipf("cannot mount a tmpfs (needs root): %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", mnt).Run() })
	return mnt
}

// ResizeTmpfs gives the tmpfs mounted at mnt a new size: the operator's
// "free some space" or "grow the volume", without touching what it holds.
func ResizeTmpfs(t testing.TB, mnt, size string) {
	t.Helper()
	if out, err := exec.Command("mount", "-o", "remount,size="+size, mnt).CombinedOutput(); err != nil {
		t.Fatalf("resize the tmpfs at %s to %s: %v %s", mnt, size, err, out)
	}
}
