//go:build !unix

package spritestest

import "io/fs"

// checkPrivate has no unix mode or owner to check here: access is
// decided by ACLs, which a new file in the user's directory inherits.
func checkPrivate(string, fs.FileInfo) error { return nil }
